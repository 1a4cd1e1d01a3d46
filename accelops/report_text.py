"""Plain-text rendering of ds_report facts; colour only on a terminal and never with NO_COLOR."""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, TextIO

GREEN, RED, YELLOW, RESET = "\033[92m", "\033[91m", "\033[93m", "\033[0m"


def use_colour(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal and ``NO_COLOR`` is not set (https://no-color.org)."""
    if "NO_COLOR" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Painter:
    """Wraps words in ANSI colours, or leaves them plain."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.colour else text

    def ok(self, text: str) -> str:
        return self._paint(GREEN, text)

    def bad(self, text: str) -> str:
        return self._paint(RED, text)

    def warn(self, text: str) -> str:
        return self._paint(YELLOW, text)


def _section(title: str) -> List[str]:
    return ["-" * 72, title, "-" * 72]


def _tool_line(label: str, tool: Optional[Dict[str, Any]]) -> str:
    if not tool:
        return f"{label:<22} n/a"
    if tool.get("found"):
        return f"{label:<22} {tool['version']} ({tool['path']})"
    return f"{label:<22} not available: {tool.get('reason')}"


def environment_lines(env: Dict[str, Any], paint: Painter) -> List[str]:
    """The environment and accelerator sections."""
    torch_info = env["torch"]
    accel = env["accelerator"]
    cpu = env["cpu"]
    lines = _section("accelops environment") + [
        f"{'accelops':<22} {env['accelops']['version']} ({env['accelops']['path']})",
        f"{'python':<22} {env['python']['version']} ({env['python']['executable']})",
        f"{'platform':<22} {env['platform']}",
    ]
    if torch_info.get("version"):
        built = f"CUDA {torch_info['cuda']}" if torch_info.get("cuda") else None
        built = f"HIP {torch_info['hip']}" if torch_info.get("hip") else built
        lines.append(f"{'torch':<22} {torch_info['version']} built with {built or 'no GPU support'} ({torch_info['path']})")
    else:
        lines.append(f"{'torch':<22} {paint.bad('not available')}: {torch_info.get('reason')}")
    cuda_tool = env.get("cuda_compiler") or {}
    lines.append(_tool_line(cuda_tool.get("name", "nvcc"), cuda_tool))
    lines.append(_tool_line(f"c++ compiler ({env['cxx_compiler']['command']})", env["cxx_compiler"]))
    lines.append(_tool_line("ninja", env["ninja"]))
    tier = cpu.get("tier") or paint.bad(f"unknown ({cpu.get('tier_error')})")
    lines.append(f"{'cpu':<22} {cpu['model']}, {cpu['cores']} cores")
    lines.append(f"{'cpu op tier':<22} {tier} (this CPU runs: {', '.join(cpu.get('tiers') or []) or '-'})")
    lines += _section("accelerator")
    if accel.get("name") is None:
        lines.append(f"{'accelerator':<22} {paint.bad('selection failed')}: {accel.get('reason')}")
        return lines
    lines.append(f"{'accelerator':<22} {paint.ok(accel['name'])} ({accel['how']}: {accel['reason']})")
    backend = accel.get("communication_backend") or paint.bad(f"unknown ({accel.get('communication_backend_error')})")
    lines.append(f"{'communication backend':<22} {backend}")
    if accel.get("device_count") is None:
        lines.append(f"{'devices':<22} {paint.bad('unknown')} ({accel.get('device_count_error')})")
    else:
        lines.append(f"{'devices':<22} {accel['device_count']}: {', '.join(accel.get('devices') or []) or '-'}")
    for probe in accel.get("probes", []):
        state = paint.ok("present") if probe["present"] else "absent "
        lines.append(f"  {probe['name']:<10} priority {probe['priority']:>4}  {state}  {probe['reason']}")
    return lines


def _prebuilt_cell(prebuilt: Optional[Dict[str, Any]]) -> str:
    if not prebuilt or not prebuilt.get("installed"):
        return "no"
    usable = "yes" if prebuilt.get("usable") else "skipped"
    return f"{usable} ({'/'.join(prebuilt['variants'])})"


def op_lines(rows: List[Dict[str, Any]], paint: Painter, show_reasons: bool = True) -> List[str]:
    """The op table: one row per op, reasons and warnings indented below it unless hidden."""
    lines = _section("ops (JIT: built on first use into the cache; prebuilt: installed with the wheel)") + [
        f"{'op':<18} {'kind':<5} {'variant':<8} {'prebuilt':<18} {'compatible':<11} cached"]
    for row in rows:
        compatible = paint.ok("[OKAY]".ljust(11)) if row["compatible"] else paint.bad("[NO]".ljust(11))
        cached = "yes" if row.get("cached") else ("no" if row["compatible"] else "-")
        lines.append(f"{row['name']:<18} {row.get('kind') or '-':<5} {row.get('variant') or '-':<8} "
                     f"{_prebuilt_cell(row.get('prebuilt')):<18} {compatible} {cached}")
        if not show_reasons:
            continue
        for reason in row.get("reasons") or []:
            lines.append(f"    not compatible: {reason}")
        for warning in row.get("warnings") or []:
            lines.append(f"    {paint.warn('warning')}: {warning}")
        skipped = (row.get("prebuilt") or {}).get("reason")
        if skipped:
            lines.append(f"    prebuilt module not used: {skipped}")
        detail = row.get("cache_detail")
        if detail and not row.get("cached") and detail != "not built":
            lines.append(f"    cache entry unusable (rebuilt on next load): {detail}")
    return lines


def build_info_lines(info: Optional[Dict[str, Any]]) -> List[str]:
    """One line on the prebuilt ops of this install (``build_info.json``)."""
    if not info:
        return [f"{'prebuilt ops':<22} none (ops build on first use)"]
    if "error" in info:
        return [f"{'prebuilt ops':<22} {info['error']}"]
    ops = ", ".join(sorted(info.get("ops", {}))) or "none"
    return [f"{'prebuilt ops':<22} {ops} (built with torch {info.get('torch')}, CUDA {info.get('cuda')}, "
            f"HIP {info.get('hip')}, accelerator {info.get('accelerator')})"]


def verify_lines(results: List[Dict[str, Any]], paint: Painter) -> List[str]:
    """One line per op verified: PASS/FAIL/SKIP, load and check seconds, and what was compared or why."""
    lines = _section("verify (build or load each op, compare with its torch reference)")
    colour = {"PASS": paint.ok, "FAIL": paint.bad, "SKIP": paint.warn}
    for result in results:
        times = [f"{key[:-2]} {result[key]:.2f} s" for key in ("load_s", "check_s") if result.get(key) is not None]
        status = colour[result["status"]](result["status"])
        lines.append(f"{result['name']:<18} {status}  {', '.join(times) or '-'}")
        lines.append(f"    {result['detail']}")
    failed = [r["name"] for r in results if r["status"] == "FAIL"]
    summary = f"{len(failed)} failed: {', '.join(failed)}" if failed else "all compatible ops passed"
    lines.append(f"verify: {paint.bad(summary) if failed else paint.ok(summary)}")
    return lines


def warning_lines(messages: List[str], paint: Painter) -> List[str]:
    """Warnings raised while the report gathered its facts."""
    if not messages:
        return []
    return _section(paint.warn("warnings while probing")) + [f"  {m}" for m in messages]


def write_lines(lines: List[str], stream: TextIO = sys.stdout) -> None:
    """Print ``lines`` to ``stream``, one per line."""
    stream.write("\n".join(lines) + "\n")
