"""FusedAdam against torch.optim.Adam/AdamW(fused=True) on a GPT-shaped parameter list (GPU).

For each configuration prints the median optimizer.step() time of both, the memory bandwidth the
update achieves (the bytes it must move: param read+write, grad read, exp_avg and exp_avg_sq
read+write, over the time) and that as a share of the device's measured copy bandwidth.
Without CUDA it runs the CPU-side argument checks only and exits 0.
Usage: ``python benchmarks/bench_gpu_fused_adam.py [--layers 24] [--hidden 1024] [--iters 30]``.
"""
import argparse
import statistics
import sys
import time
import warnings

import torch

from accelops.ops.fused_adam import FusedAdam


def gpt_shapes(layers, hidden, vocab=50304, ctx=1024):
    """Parameter shapes of a GPT-2 style decoder: embeddings, then per layer attention, MLP and norms."""
    shapes = [(vocab, hidden), (ctx, hidden)]
    for _ in range(layers):
        shapes += [(hidden,), (hidden,), (3 * hidden, hidden), (3 * hidden,), (hidden, hidden), (hidden,),
                   (hidden,), (hidden,), (4 * hidden, hidden), (4 * hidden,), (hidden, 4 * hidden), (hidden,)]
    return shapes + [(hidden,), (hidden,)]


def cpu_checks():
    """The argument checks that need no GPU: a fallback step and the errors bad input must raise."""
    p = torch.zeros(4, requires_grad=True)
    p.grad = torch.ones(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        FusedAdam([p], lr=0.1).step()
    if not float(p.detach()[0]) < 0:
        raise SystemExit("the fallback step did not update the param")
    bad_grad = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    bad_grad.grad = torch.ones(3, dtype=torch.float64)
    for make, exc in ((lambda: FusedAdam([p], amsgrad=True), ValueError),
                      (lambda: FusedAdam([bad_grad]).step(), TypeError)):
        try:
            make()
        except exc:
            continue
        raise SystemExit(f"expected {exc.__name__} was not raised")


def median_ms(fn, iters, warmup=3):
    """Median of per-call times from CUDA events."""
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


def copy_bandwidth_gbs(nbytes=2**31):
    """Device-to-device copy bandwidth, bytes read plus written."""
    src = torch.empty(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 20)
    return 2 * nbytes / ms / 1e6


def make_params(shapes, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    params = [torch.randn(s, device="cuda", generator=gen).to(dtype).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device="cuda", generator=gen).to(dtype)
    return params


def step_bytes(params, state_dtype):
    """Bytes one step must move through memory."""
    total = 0
    for p in params:
        s = torch.empty((), dtype=state_dtype or p.dtype).element_size()
        total += p.numel() * (3 * p.element_size() + 4 * s)
    return total


def wall_us_per_step(opt, iters=200):
    """Wall time per step() of a host-bound (tiny-tensor) model: the Python and launch overhead."""
    for _ in range(5):
        opt.step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        opt.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e6


def host_overhead(layers):
    """Per-step overhead on tiny tensors (hidden 64, vocab 512): ours (with its input checks) vs torch."""
    shapes = gpt_shapes(layers, 64, vocab=512, ctx=64)
    ours, ref = make_params(shapes, torch.float32), make_params(shapes, torch.float32)
    t_ours = wall_us_per_step(FusedAdam(ours, lr=1e-4, weight_decay=0.01))
    t_ref = wall_us_per_step(torch.optim.AdamW(ref, lr=1e-4, weight_decay=0.01, fused=True))
    print(f"host-bound step ({len(shapes)} tiny fp32 tensors): ours {t_ours:.0f} us, torch fused {t_ref:.0f} us "
          f"(wall time per step, mean of 200)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    cpu_checks()
    if not torch.cuda.is_available():
        print("bench_gpu_fused_adam: no CUDA device; CPU-side argument checks passed, GPU timings skipped")
        return 0
    shapes = gpt_shapes(args.layers, args.hidden)
    peak = copy_bandwidth_gbs()
    name = torch.cuda.get_device_name()
    print(f"device: {name}; measured copy bandwidth {peak:.0f} GB/s; {len(shapes)} tensors, "
          f"{sum(torch.Size(s).numel() for s in shapes) / 1e6:.1f} M params (GPT, {args.layers} layers, "
          f"hidden {args.hidden})")
    header = f"{'config':<22}{'ours ms':>9}{'GB/s':>8}{'% copy':>8}{'torch ms':>10}{'GB/s':>8}{'speedup':>9}"
    print(header)
    for label, dtype, state_dtype in (("fp32", torch.float32, None), ("bf16", torch.bfloat16, None),
                                      ("fp16", torch.float16, None), ("bf16 + fp32 state", torch.bfloat16,
                                                                      torch.float32)):
        ours = make_params(shapes, dtype)
        opt = FusedAdam(ours, lr=1e-4, weight_decay=0.01, state_dtype=state_dtype)
        nbytes = step_bytes(ours, state_dtype)
        t_ours = median_ms(opt.step, args.iters)
        row = f"{label:<22}{t_ours:>9.3f}{nbytes / t_ours / 1e6:>8.0f}{100 * nbytes / t_ours / 1e6 / peak:>7.0f}%"
        del opt, ours
        if state_dtype is None:
            ref = make_params(shapes, dtype)
            ref_opt = torch.optim.AdamW(ref, lr=1e-4, weight_decay=0.01, fused=True)
            t_ref = median_ms(ref_opt.step, args.iters)
            row += f"{t_ref:>10.3f}{nbytes / t_ref / 1e6:>8.0f}{t_ref / t_ours:>8.2f}x"
            del ref_opt, ref
        else:
            row += f"{'(torch has no mixed-dtype state)':>35}"
        print(row, flush=True)
        torch.cuda.empty_cache()
    host_overhead(args.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
