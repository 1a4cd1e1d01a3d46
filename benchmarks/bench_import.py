"""Import and selection cost of accelops next to plain torch, measured in fresh processes.

Prints the median of N runs of each, the difference (target: <= 50 ms), and the per-call cost of
``get_accelerator().current_device_name()``. Usage: ``python benchmarks/bench_import.py [runs]``.
"""
import statistics
import subprocess
import sys
import timeit

TORCH_ONLY = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
WITH_ACCELOPS = (
    "import time; t = time.perf_counter(); import torch; u = time.perf_counter(); import accelops; "
    "from accelops.accelerator import get_accelerator; get_accelerator(); v = time.perf_counter(); "
    "print(v - u); print(v - t)"
)


def time_in_fresh_process(code: str) -> list:
    """Run ``code`` in a new interpreter and return the seconds it printed, one per line."""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return [float(line) for line in out.split()]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    time_in_fresh_process(TORCH_ONLY)  # warm the file cache once
    torch_times, accelops_times, accelops_parts = [], [], []
    for _ in range(runs):  # interleaved so drift hits both alike
        torch_times.append(time_in_fresh_process(TORCH_ONLY)[0])
        part, total = time_in_fresh_process(WITH_ACCELOPS)
        accelops_parts.append(part)
        accelops_times.append(total)
    torch_ms = statistics.median(torch_times) * 1000
    accelops_ms = statistics.median(accelops_times) * 1000
    part_ms = statistics.median(accelops_parts) * 1000

    from accelops.accelerator import get_accelerator

    accelerator = get_accelerator()
    calls = 100_000
    per_call_ns = timeit.timeit(lambda: get_accelerator().current_device_name(), number=calls) / calls * 1e9

    print(f"accelerator: {accelerator.name}  runs: {runs} (medians)")
    print(f"{'import torch':<48} {torch_ms:8.1f} ms")
    print(f"{'import torch + accelops + get_accelerator()':<48} {accelops_ms:8.1f} ms")
    print(f"{'difference of the two medians':<48} {accelops_ms - torch_ms:8.1f} ms")
    print(f"{'accelops part, timed after torch (target <= 50)':<48} {part_ms:8.1f} ms")
    print(f"{'get_accelerator().current_device_name()':<48} {per_call_ns:8.0f} ns/call")


if __name__ == "__main__":
    main()
