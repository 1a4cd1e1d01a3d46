"""Fused residual-add + layer norm on CPU: accelops vs ``x + r`` then ``F.layer_norm``, side by side.

Run: ``python benchmarks/bench_cpu_layer_norm.py [--quick]``. Forward only, 8192 x 1024, fp32 and bf16;
ratio = torch_time / our_time (> 1: ours is faster). The run repeats itself in a child process with
``THP_MEM_ALLOC_ENABLE=1``, torch's switch that gives every large CPU allocation (torch's and ours)
transparent huge pages: our op advises huge pages for its own outputs, so this row compares both sides
with the same page-fault cost.
"""
import argparse
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

from accelops.ops.layer_norm.ops import fused_add_layer_norm, layer_norm_path
from timing import timeit




def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args()
    rows, n, repeats = 8192, 1024, 5 if args.quick else 30
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    if not thp:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, accelops path: {layer_norm_path()}")
        print(f"{'case':40s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>6s}")
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            x, r = torch.randn(rows, n, dtype=dtype), torch.randn(rows, n, dtype=dtype)
            w, b = torch.randn(n, dtype=dtype), torch.randn(n, dtype=dtype)
            t_ours = timeit(lambda: fused_add_layer_norm(x, r, w, b, 1e-5, return_sum=True), repeats)
            t_ref = timeit(lambda: F.layer_norm(x + r, (n,), w, b, 1e-5), repeats)
            name = f"add+LN fwd {rows}x{n} {str(dtype).replace('torch.', '')}" + (" (THP for all)" if thp else "")
            print(f"{name:40s} {t_ours * 1e3:9.2f} {t_ref * 1e3:9.2f} {t_ref / t_ours:5.2f}x", flush=True)
    if not thp:
        subprocess.run([sys.executable, *sys.argv], env=dict(os.environ, THP_MEM_ALLOC_ENABLE="1"), check=True)


if __name__ == "__main__":
    main()
