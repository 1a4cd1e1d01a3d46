"""Cost of the plain ds_report over ``import torch``: medians of fresh processes, side by side.

Target: the plain report (and ``--json``) at most 0.5 s more than ``python -c "import torch"``.
Usage: python benchmarks/bench_report.py [--runs 5]
"""
import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "python -m accelops": [sys.executable, "-m", "accelops"],
    "python -m accelops --json": [sys.executable, "-m", "accelops", "--json"],
}


def wall_time(command) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the page cache once
        wall_time(command)
    samples = {name: [] for name in COMMANDS}
    for _ in range(args.runs):  # interleaved, so drifting machine load hits every command alike
        for name, command in COMMANDS.items():
            samples[name].append(wall_time(command))
    base = statistics.median(samples["import torch"])
    print(f"{'command':<28} {'median s':>9} {'over import torch':>18}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<28} {median:>9.3f} {median - base:>+17.3f}s")
    print("target: each report at most +0.500 s over import torch")


if __name__ == "__main__":
    main()
