"""Cold build and warm load of each op this machine can build, in fresh processes.

For each compatible op: the cold JIT build (empty cache, one process; target <= 3 s per CPU op on 2 cores,
which the stable-ABI bindings make possible: no torch/extension.h, pybind or Python headers to parse)
and the warm load (median of N fresh processes; ``load()`` timed after ``import torch``, the accelerator
choice and a first tensor on the device, as on an op's first call; target <= 50 ms). When ``deepspeed``
is importable, its builder for the same op is timed the same way in the same run, and the ratio is
printed; otherwise that column says "not installed". Usage:
``python benchmarks/bench_op_build.py [runs [op ...]]``.
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile

DEEPSPEED_BUILDERS = {"cpu_adam": "CPUAdamBuilder", "cpu_adagrad": "CPUAdagradBuilder", "cpu_lion": "CPULionBuilder",
                      "fused_adam": "FusedAdamBuilder"}

OURS = (
    "import time, torch\n"
    "from accelops.accelerator import get_accelerator\n"
    "acc = get_accelerator()\n"
    "torch.ones(1, device=acc.current_device_name())\n"  # device initialised, as on an op's first call
    "t = time.perf_counter(); acc.create_op_builder({cls!r}).load(verbose=False); print(time.perf_counter() - t)\n"
)
DEEPSPEED = (
    "import time, torch\n"
    "from deepspeed.accelerator import get_accelerator\n"
    "acc = get_accelerator()\n"
    "torch.ones(1, device=acc.current_device_name())\n"
    "t = time.perf_counter(); acc.create_op_builder({cls!r}).load(verbose=False); print(time.perf_counter() - t)\n"
)


def timed(code: str, env: dict) -> float:
    """Seconds printed by ``code`` run in a fresh interpreter with ``env``."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
    return float(result.stdout.split()[-1])


def measure(template: str, cls: str, runs: int, env_key: str) -> tuple:
    """(cold seconds, warm median ms) with a private cache folder."""
    with tempfile.TemporaryDirectory(prefix="bench-op-build-") as cache:
        env = {**os.environ, env_key: cache}
        code = template.format(cls=cls)
        cold = timed(code, env)
        warm = [timed(code, env) * 1000 for _ in range(runs)]
    return cold, statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=5, help="warm loads per op (default 5)")
    parser.add_argument("ops", nargs="*", help="op names (default: every op)")
    options = parser.parse_args()
    runs, wanted = options.runs, options.ops
    from accelops.op_builder import ALL_OPS

    unknown = [n for n in wanted if n not in ALL_OPS]
    if unknown:
        parser.error(f"unknown ops {unknown}; known: {', '.join(ALL_OPS)}")
    compat = {n: cls().is_compatible() for n, cls in ALL_OPS.items() if not wanted or n in wanted}
    names = [n for n, c in compat.items() if c]
    skipped = [n for n, c in compat.items() if not c]
    has_ds = importlib.util.find_spec("deepspeed") is not None
    print(f"{os.cpu_count()} cores; {runs} warm runs per op; deepspeed "
          f"{'installed' if has_ds else 'not installed (its column is skipped)'}")
    print(f"{'op':<16} {'cold build s':>12} {'warm load ms':>12} {'DS cold s':>10} {'DS warm ms':>10} "
          f"{'warm ratio DS/ours':>18}")
    for name in names:
        cls = ALL_OPS[name].__name__
        cold, warm = measure(OURS, cls, runs, "ACCELOPS_CACHE_DIR")
        ds_cells = ["not installed", "", ""]
        if has_ds and name in DEEPSPEED_BUILDERS:
            ds_cold, ds_warm = measure(DEEPSPEED, DEEPSPEED_BUILDERS[name], runs, "TORCH_EXTENSIONS_DIR")
            ds_cells = [f"{ds_cold:.1f}", f"{ds_warm:.1f}", f"{ds_warm / warm:.1f}x"]
        elif has_ds:
            ds_cells = ["no such op", "", ""]
        print(f"{name:<16} {cold:>12.1f} {warm:>12.1f} {ds_cells[0]:>10} {ds_cells[1]:>10} {ds_cells[2]:>18}")
    for name in skipped:
        print(f"{name:<16} not compatible here: {'; '.join(compat[name].reasons)}")


if __name__ == "__main__":
    main()
