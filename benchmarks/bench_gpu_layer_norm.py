"""Fused residual-add + layer norm (accelops CUDA op) against x + r then torch's layer norm (GPU).

Times forward, backward and both for several (rows, row size) shapes with CUDA events (medians).
Both sides call the kernels directly, without autograd: ours accelops::add_layer_norm_fwd/bwd, torch's
torch.add + aten.native_layer_norm / native_layer_norm_backward (what F.layer_norm runs). GB/s counts
the bytes the fused version must move. With ``--baseline DIR`` (a folder holding another version's ``csrc/``,
e.g. from ``git archive <rev> csrc``) that version's kernels are built too and timed in the same run,
in two more columns. Without CUDA it checks the op registration and a CPU forward against
F.layer_norm, then exits 0.
Usage: ``python benchmarks/bench_gpu_layer_norm.py [--dtype bf16|fp16|fp32] [--iters 50] [--baseline DIR]``.
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

EPS = 1e-5
SHAPES = [(32768, 1024), (16384, 2048), (8192, 4096), (4096, 8192), (2048, 16384), (512, 65536)]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def load_ops():
    """Import the op definitions and the CUDA registration; None when the ops are not part of this tree."""
    try:
        import accelops.ops.layer_norm  # noqa: F401  (defines the ops and registers the CUDA kernels)
    except ImportError as exc:
        print(f"bench_gpu_layer_norm: accelops layer-norm ops unavailable ({exc})")
        return None
    return torch.ops.accelops


def cpu_checks(ops):
    """Registration and one CPU forward against F.layer_norm: what can be checked without a GPU."""
    if not torch._C._dispatch_has_kernel_for_dispatch_key("accelops::add_layer_norm_fwd", "CUDA"):
        raise SystemExit("the CUDA kernel of accelops::add_layer_norm_fwd is not registered")
    x, r = torch.randn(3, 8), torch.randn(3, 8)
    w, b = torch.randn(8), torch.randn(8)
    y = ops.add_layer_norm_fwd(x, r, w, b, EPS)[0]
    torch.testing.assert_close(y, F.layer_norm(x + r, (8,), w, b, EPS), rtol=1e-4, atol=1e-5)


def load_baseline(folder):
    """The layer norm extension built from ``folder``/csrc (same flags as the op builder), whose
    add_layer_norm_fwd/bwd take the same arguments as the op's."""
    from torch.utils.cpp_extension import load

    csrc = Path(folder) / "csrc"
    kernels = csrc / "cuda" / "layer_norm"
    if not kernels.is_dir():
        raise SystemExit(f"--baseline {folder}: no csrc/cuda/layer_norm there")
    sources = sorted(str(p) for p in kernels.iterdir() if p.suffix in (".cpp", ".cu"))
    return load(name="accelops_layer_norm_baseline", sources=sources, extra_include_paths=[str(csrc / "includes")],
                extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "-lineinfo"], verbose=False)


def median_ms(fn, iters, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_shape(ops, rows, n, dtype, iters, baseline=None):
    """(fused fwd, fwd+bwd, torch fwd, fwd+bwd[, baseline fwd, fwd+bwd]) in ms and the fused bytes
    moved fwd+bwd."""
    x, r, dy = (torch.randn(rows, n, device="cuda", dtype=dtype) for _ in range(3))
    w, b = torch.randn(n, device="cuda", dtype=dtype), torch.randn(n, device="cuda", dtype=dtype)

    def fused_fwd():
        return ops.add_layer_norm_fwd(x, r, w, b, EPS)

    def fused_both():
        _, s, mean, rstd = fused_fwd()
        return ops.add_layer_norm_bwd(dy, s, mean, rstd, w)

    def torch_fwd():
        s = x + r
        return s, torch.ops.aten.native_layer_norm(s, [n], w, b, EPS)

    def torch_both():
        s, (_, mean, rstd) = torch_fwd()
        return torch.ops.aten.native_layer_norm_backward(dy, s, [n], mean, rstd, w, b, [True, True, True])

    def baseline_fwd():
        return baseline.add_layer_norm_fwd(x, r, w, b, EPS)

    def baseline_both():
        _, s, mean, rstd = baseline_fwd()
        return baseline.add_layer_norm_bwd(dy, s, mean, rstd, w)

    fns = [fused_fwd, fused_both, torch_fwd, torch_both] + ([baseline_fwd, baseline_both] if baseline else [])
    times = [median_ms(f, iters) for f in fns]
    e = x.element_size()
    nbytes = rows * n * e * 7  # fwd: read x, r; write s, y. bwd: read dy, s; write dx
    return times, nbytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--baseline", metavar="DIR", help="folder with another version's csrc/ to time alongside")
    args = parser.parse_args()
    ops = load_ops()
    if ops is None:
        return 0
    cpu_checks(ops)
    if not torch.cuda.is_available():
        print("bench_gpu_layer_norm: no CUDA device; CPU-side checks passed, GPU timings skipped")
        return 0
    from accelops.ops.layer_norm import cuda as layer_norm_cuda

    if layer_norm_cuda._load() is None:
        raise SystemExit("the fused_layer_norm CUDA op did not build")
    baseline = load_baseline(args.baseline) if args.baseline else None
    print(f"device: {torch.cuda.get_device_name()}; dtype {args.dtype}; times in ms (median of {args.iters})"
          + (f"; baseline: {args.baseline}" if baseline else ""))
    print(f"{'rows x n':<14}{'fused fwd':>10}{'torch fwd':>10}{'x':>6}{'fused f+b':>11}{'torch f+b':>11}{'x':>6}"
          f"{'fused GB/s':>12}" + (f"{'base fwd':>10}{'base f+b':>10}{'new/base f+b':>14}" if baseline else ""))
    for rows, n in SHAPES:
        times, nbytes = bench_shape(ops, rows, n, DTYPES[args.dtype], args.iters, baseline)
        ff, fb, tf, tb = times[:4]
        line = (f"{f'{rows}x{n}':<14}{ff:>10.3f}{tf:>10.3f}{tf / ff:>5.2f}x{fb:>11.3f}{tb:>11.3f}{tb / fb:>5.2f}x"
                f"{nbytes / fb / 1e6:>12.0f}")
        if baseline:
            bf, bb = times[4:]
            line += f"{bf:>10.3f}{bb:>10.3f}{bb / fb:>13.2f}x"
        print(line, flush=True)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
