"""The text of a flops profile, and DeepSpeed's number formatters (no torch).

Formatters (DeepSpeed's names and units): ``number_to_string(1152) == "1.15 K"``, ``macs_to_string`` adds
``MACs``, ``flops_to_string`` adds ``FLOPS`` (a rate), ``params_to_string`` writes billions as ``B``,
``duration_to_string`` seconds with ``m``/``u`` below one. Unlike DeepSpeed, a number below 1000 has no
trailing space (``"384"``, not ``"384 "``).

:func:`render` writes a profile: a summary (with an engine: its world and batch sizes, the backward
estimate and the step's latency), the aggregated profile (top module classes per depth) and, when
``detailed``, the module tree with each module's share. The summary's counts are written rounded and
exact (``1.15 K (1152)``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

DEFAULT_PRECISION = 2
_SCALES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1.0, ""), (1e-3, "m"), (1e-6, "u"))
_BY_UNIT = {unit: scale for scale, unit in _SCALES}


def _scaled(num: float, units: Optional[str], precision: int) -> Tuple[str, str]:
    if units is None:
        scale, units = next(((s, u) for s, u in _SCALES if abs(num) >= s), (1e-6, "u"))
        if num == 0:
            scale, units = 1.0, ""
    else:
        scale = _BY_UNIT.get(units, 1.0)
    return f"{round(num / scale, precision):g}", units


def number_to_string(num: float, units: Optional[str] = None, precision: int = DEFAULT_PRECISION) -> str:
    """``1152 -> "1.15 K"``, ``384 -> "384"``; ``units`` forces one of T, G, M, K, m, u."""
    value, unit = _scaled(num, units, precision)
    return f"{value} {unit}" if unit else value


def macs_to_string(macs: float, units: Optional[str] = None, precision: int = DEFAULT_PRECISION) -> str:
    value, unit = _scaled(macs, units, precision)
    return f"{value} {unit}MACs"


def flops_to_string(flops: float, units: Optional[str] = None, precision: int = DEFAULT_PRECISION) -> str:
    """A rate: ``2e9 -> "2 GFLOPS"``."""
    value, unit = _scaled(flops, units, precision)
    return f"{value} {unit}FLOPS"


def params_to_string(params_num: float, units: Optional[str] = None, precision: int = DEFAULT_PRECISION) -> str:
    """Billions as ``B`` (``units`` may be given as B or G)."""
    value, unit = _scaled(params_num, units.replace("B", "G") if units else units, precision)
    unit = unit.replace("G", "B")
    return f"{value} {unit}" if unit else value


def duration_to_string(duration: float, units: Optional[str] = None, precision: int = DEFAULT_PRECISION) -> str:
    value, unit = _scaled(duration, units, precision)
    return f"{value} {unit}s"


def _exact(text: str, num: int) -> str:
    """``text`` (a rounded count), followed by the exact count when the rounding changed it."""
    return text if number_to_string(num) == str(num) else f"{text} ({num})"


def _share(part: float, whole: float) -> str:
    return f"{round(100 * part / whole, DEFAULT_PRECISION) if whole else 0:g}%"


def _rate(flops: float, seconds: float) -> str:
    return flops_to_string(flops / seconds) if seconds > 0 else "n/a (no latency measured)"


def _summary(profiler: Any) -> List[Tuple[str, Any]]:
    """(label, value) rows of the summary."""
    flops, macs = profiler.get_total_flops(), profiler.get_total_macs()
    params, fwd = profiler.get_total_params(), profiler.get_total_duration()
    engine = profiler.ds_engine
    mp = getattr(engine, "mp_world_size", 1) if engine is not None else 1
    rows: List[Tuple[str, Any]] = []
    if engine is not None:
        rows += [("world size", engine.world_size), ("data parallel size", engine.dp_world_size),
                 ("model parallel size", mp), ("batch size per GPU", engine.train_micro_batch_size_per_gpu()),
                 ("train batch size", engine.train_batch_size()),
                 ("gradient accumulation steps", engine.gradient_accumulation_steps())]
    rows += [("params per GPU", _exact(params_to_string(params), params)),
             ("params of model = params per GPU * mp_size", _exact(params_to_string(params * mp), params * mp)),
             ("fwd MACs per GPU", _exact(macs_to_string(macs), macs)),
             ("fwd flops per GPU", _exact(number_to_string(flops), flops)),
             ("fwd flops of model = fwd flops per GPU * mp_size", _exact(number_to_string(flops * mp), flops * mp)),
             ("fwd latency", duration_to_string(fwd)),
             ("fwd FLOPS per GPU = fwd flops per GPU / fwd latency", _rate(flops, fwd))]
    if engine is not None:
        factor = 2 + profiler.recompute_fwd_factor
        bwd = round(factor * flops)
        rows += [(f"bwd flops per GPU = {factor:g} * fwd flops per GPU (estimate)",
                  _exact(number_to_string(bwd), bwd)),
                 (f"fwd+bwd flops per GPU = {factor + 1:g} * fwd flops per GPU", _exact(number_to_string(bwd + flops),
                                                                                        bwd + flops))]
        timing = getattr(profiler, "step_timing", None)
        if timing is not None:
            engine_fwd, after_fwd = timing
            step = engine_fwd + after_fwd
            samples = engine.train_micro_batch_size_per_gpu() * engine.world_size
            rows += [("fwd latency (engine forward)", duration_to_string(engine_fwd)),
                     ("bwd + step latency (forward end to step() end)", duration_to_string(after_fwd)),
                     ("iter latency (forward start to step() end)", duration_to_string(step)),
                     (f"FLOPS per GPU = {factor + 1:g} * fwd flops per GPU / iter latency",
                      _rate((factor + 1) * flops, step)),
                     ("samples/second = batch size per GPU * world size / iter latency",
                      round(samples / step, DEFAULT_PRECISION) if step > 0 else "n/a")]
    return rows


def _aggregated(profiler: Any, module_depth: int, top_modules: int) -> List[str]:
    """Top ``top_modules`` module classes by params, MACs and fwd latency at each depth up to
    ``module_depth`` (-1: every depth; depth 0 is the model)."""
    info: List[Dict[str, List[float]]] = []

    def walk(module: Any, depth: int) -> None:
        if len(info) <= depth:
            info.append({})
        row = info[depth].setdefault(type(module).__name__, [0, 0, 0.0])
        row[0] += profiler.module_macs(module)
        row[1] += profiler.module_params(module)
        row[2] += profiler.module_duration(module)
        for child in module.children():
            walk(child, depth + 1)

    walk(profiler.model, 0)
    last = len(info) - 1 if module_depth < 0 else min(module_depth, len(info) - 1)
    lines = [f"Top {top_modules} modules in terms of params, MACs or fwd latency at each depth:"]
    for depth in range(last + 1):
        def top(index: int, fmt: Callable[[float], str]) -> Dict[str, str]:
            ranked = sorted(info[depth].items(), key=lambda item: item[1][index], reverse=True)[:top_modules]
            return {name: fmt(values[index]) for name, values in ranked}

        lines += [f"depth {depth}:", f"    params      - {top(1, params_to_string)}",
                  f"    MACs        - {top(0, macs_to_string)}", f"    fwd latency - {top(2, duration_to_string)}"]
    return lines


def _tree(profiler: Any) -> List[str]:
    """One line per module, indented by depth: params, MACs, latency (each with its share) and FLOPS."""
    total_params, total_macs = profiler.get_total_params(), profiler.get_total_macs()
    total_time = profiler.get_total_duration()
    lines: List[str] = []

    def walk(name: str, module: Any, indent: int) -> None:
        params, macs = profiler.module_params(module), profiler.module_macs(module)
        seconds = profiler.module_duration(module)
        extra = module.extra_repr()
        head = f"{'  ' * indent}{name}{type(module).__name__}{f'({extra})' if extra else ''}"
        lines.append(f"{head}: {params_to_string(params)} = {_share(params, total_params)} Params, "
                     f"{macs_to_string(macs)} = {_share(macs, total_macs)} MACs, "
                     f"{duration_to_string(seconds)} = {_share(seconds, total_time)} latency, "
                     f"{_rate(profiler.module_flops(module), seconds)}")
        for child_name, child in module.named_children():
            walk(f"({child_name}): ", child, indent + 1)

    walk("", profiler.model, 0)
    return lines


def render(profiler: Any, profile_step: int, module_depth: int, top_modules: int, detailed: bool) -> str:
    """The whole profile of ``profiler`` (a started :class:`FlopsProfiler`) as text."""
    rows = _summary(profiler)
    width = max(len(label) for label, _ in rows) + 2
    lines = ["", "-------------------------- Flops Profiler (accelops) --------------------------",
             f"Profile Summary at step {profile_step}:",
             "FLOPs and MACs are counted by torch.utils.flop_counter.FlopCounterMode: matrix products, convolutions",
             "and attention only (MACs = FLOPs / 2); element-wise, normalisation and softmax ops count 0.", ""]
    lines += [f"{label + ':':<{width}}{value}" for label, value in rows]
    lines += ["", "----------------------------- Aggregated Profile per GPU -----------------------------"]
    lines += _aggregated(profiler, module_depth, top_modules)
    if detailed:
        lines += ["", "------------------------------ Detailed Profile per GPU ------------------------------",
                  "Each module: params, share of params, MACs, share of MACs, fwd latency, share of latency,",
                  "fwd FLOPS.",
                  "A module's numbers include its submodules' and the functions it calls; the latency is taken with",
                  "the counter on, so it is higher than the same forward without the profiler.", ""]
        lines += _tree(profiler)
    lines.append("------------------------------------------------------------------------------")
    return "\n".join(lines) + "\n"
