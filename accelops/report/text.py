"""Plain-text rendering of ds_report facts; colour only on a terminal and never with NO_COLOR."""
from __future__ import annotations

import os
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
    numpy_info = env.get("numpy") or {}
    if numpy_info.get("version"):
        lines.append(f"{'numpy':<22} {numpy_info['version']}")
    else:
        lines.append(f"{'numpy':<22} {paint.bad('not available')}: {numpy_info.get('reason')}")
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


def _table(header: List[str], cells: List[List[str]]) -> List[List[str]]:
    """Pad every column to its widest cell (header included); the last column is not padded."""
    widths = [max(len(r[i]) for r in [header] + cells) for i in range(len(header) - 1)]
    return [[cell.ljust(width) for cell, width in zip(r, widths)] + [r[-1]] for r in [header] + cells]


def op_lines(rows: List[Dict[str, Any]], paint: Painter, show_reasons: bool = True,
             after_verify: bool = False) -> List[str]:
    """The op table: one row per op (``variant`` and ``loads from``: the module that would load here), reasons
    and warnings indented below it unless hidden. Columns are as wide as their widest cell. ``after_verify``:
    the rows were read after ``--verify``'s checks, and the section title says so."""
    header = ["op", "kind", "variant", "prebuilt", "compatible", "cached", "ABI floor", "loads from"]
    cells = [[row["name"], row.get("kind") or "-", row.get("variant") or "-", _prebuilt_cell(row.get("prebuilt")),
              "[OKAY]" if row["compatible"] else "[NO]",
              "yes" if row.get("cached") else ("no" if row["compatible"] else "-"),
              f"torch>={row['abi_floor']}" if row.get("abi_floor") else "-",
              row.get("source") or ("torch path" if row.get("torch_path") else "- (cannot load)")] for row in rows]
    table = _table(header, cells)
    when = "after --verify; " if after_verify else ""
    lines = _section(f"ops ({when}JIT: built on first use into the cache; prebuilt: installed with the wheel)")
    lines.append(" ".join(table[0]).rstrip())
    for row, cells_out in zip(rows, table[1:]):
        cells_out[4] = paint.ok(cells_out[4]) if row["compatible"] else paint.bad(cells_out[4])
        lines.append(" ".join(cells_out).rstrip())
        if not show_reasons:
            continue
        for reason in row.get("reasons") or []:
            lines.append(f"    not compatible: {reason}")
        if not row.get("source") and row.get("torch_path"):
            lines.append(f"    runs without it: {row['torch_path']}")
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
    built = [f"torch {info.get('torch')}"] + [f"{label} {info[key]}" for key, label in (("cuda", "CUDA"), ("hip", "HIP"))
                                             if info.get(key)]
    return [f"{'prebuilt ops':<22} {ops} (built with {', '.join(built)}, load under torch>={info.get('abi_floor')}, "
            f"accelerator {info.get('accelerator')})"]


def verify_lines(results: List[Dict[str, Any]], paint: Painter) -> List[str]:
    """One line per op verified: PASS/FAIL/SKIP, load and check seconds, and what was compared or why."""
    lines = _section("verify (build or load each op, compare with its torch reference)")
    colour = {"PASS": paint.ok, "FAIL": paint.bad, "SKIP": paint.warn}
    for result in results:
        times = [f"{key[:-2]} {result[key]:.2f} s" for key in ("load_s", "check_s") if result.get(key) is not None]
        status = colour[result["status"]](result["status"])
        origin = f"{result['origin']} module ({result['variant']})" if result.get("origin") else "-"
        lines.append(f"{result['name']:<18} {status}  {origin}  {', '.join(times) or '-'}")
        lines.append(f"    {result['detail']}")
    counts = {s: [r["name"] for r in results if r["status"] == s] for s in ("PASS", "FAIL", "SKIP")}
    tally = f"{len(counts['PASS'])} passed, {len(counts['SKIP'])} skipped"
    if counts["FAIL"]:
        summary = paint.bad(f"{len(counts['FAIL'])} failed: {', '.join(counts['FAIL'])} ({tally})")
    elif not counts["PASS"]:
        summary = paint.bad(f"nothing was checked ({tally}): no op could be loaded and run here")
    else:
        summary = paint.ok(f"every op that could be checked passed ({tally})")
    lines.append(f"verify: {summary}")
    return lines


def warning_lines(messages: List[str], paint: Painter) -> List[str]:
    """Warnings raised while the report gathered its facts."""
    if not messages:
        return []
    return _section(paint.warn("warnings while probing")) + [f"  {m}" for m in messages]
