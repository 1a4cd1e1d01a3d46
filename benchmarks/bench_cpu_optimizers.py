"""CPU optimizer benchmark: accelops CPUAdam vs torch.optim (and DeepSpeedCPUAdam if installed), side by side.

Run: ``python benchmarks/bench_cpu_optimizers.py [--quick]``. Prints one table; ratios are
torch_time / our_time (> 1: ours is faster). Effective GB/s counts the bytes an optimizer must move
(fp32 Adam: read p, g, m, v and write p, m, v = 28 B/param) against an in-place memory bandwidth
measured in the same run (``a += b`` on 3 x 80 MB buffers: 12 B/element).
"""
import argparse

import torch

from accelops.ops import CPUAdam
from timing import timeit




def bandwidth_gbs(n, repeats):
    a, b = torch.rand(n), torch.rand(n)
    return 12 * n / timeit(lambda: a.add_(b), repeats) / 1e9


def grads_for(params, dtype=None):
    return [torch.randn_like(p, dtype=dtype or p.dtype) * 1e-2 for p in params]


def bench_fp32(n, repeats, rows):
    p_ours, p_torch = torch.randn(n), torch.randn(n)
    g = torch.randn(n) * 1e-2
    p_torch.grad = g.clone()
    ours = CPUAdam([p_ours], lr=1e-3, adamw_mode=False)
    ref = torch.optim.Adam([p_torch], lr=1e-3, fused=True)
    t_ours = timeit(lambda: ours.step(grads=[g]), repeats)
    t_ref = timeit(ref.step, repeats)
    rows.append((f"Adam fp32 {n / 1e6:.0f}M params", "torch.optim.Adam(fused=True)", t_ours, t_ref))
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except ImportError:
        print("DeepSpeedCPUAdam: deepspeed not installed, skipped")
    else:
        p_ds = torch.randn(n)
        p_ds.grad = g.clone()
        ds = DeepSpeedCPUAdam([p_ds], lr=1e-3, adamw_mode=False)
        rows.append((f"Adam fp32 {n / 1e6:.0f}M params", "DeepSpeedCPUAdam", t_ours, timeit(ds.step, repeats)))
    return 28 * n / t_ours / 1e9, ours.backend


def bench_master_bf16(n, repeats, rows):
    """Whole ZeRO-Offload style step: bf16 grads in, fp32 master + state updated, bf16 params out."""
    master, p16 = torch.randn(n), torch.empty(n, dtype=torch.bfloat16)
    g16 = (torch.randn(n) * 1e-2).bfloat16()
    ours = CPUAdam([master], lr=1e-3)
    t_ours = timeit(lambda: ours.step(grads=[g16], param_copies=[p16]), repeats)
    best = None
    for label, kwargs in (("fused", dict(fused=True)), ("foreach", dict(foreach=True)), ("for-loop", {})):
        m = torch.randn(n)
        opt = torch.optim.AdamW([m], lr=1e-3, **kwargs)
        out = torch.empty(n, dtype=torch.bfloat16)

        def step(m=m, opt=opt, out=out):
            m.grad = g16.float()
            opt.step()
            out.copy_(m)

        t = timeit(step, repeats)
        if best is None or t < best[1]:
            best = (label, t)
    rows.append((f"bf16 params + fp32 master {n / 1e6:.0f}M", f"torch AdamW({best[0]}) + casts", t_ours, best[1]))


def gpt2_small_shapes():
    """Parameter shapes of GPT-2 small (124M params, 148 tensors)."""
    d, shapes = 768, [(50257, 768), (1024, 768)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def bench_gpt2(repeats, rows):
    shapes = gpt2_small_shapes()
    ours_p = [torch.randn(s) for s in shapes]
    ref_p = [torch.randn(s) for s in shapes]
    grads = grads_for(ours_p)
    for p, g in zip(ref_p, grads):
        p.grad = g.clone()
    ours = CPUAdam(ours_p, lr=1e-3, weight_decay=0.01)
    ref = torch.optim.AdamW(ref_p, lr=1e-3, weight_decay=0.01, fused=True)
    t_ours = timeit(lambda: ours.step(grads=grads), repeats)
    n = sum(p.numel() for p in ours_p)
    rows.append((f"GPT-2 small AdamW ({len(shapes)} tensors, {n / 1e6:.0f}M)", "torch.optim.AdamW(fused=True)",
                 t_ours, timeit(ref.step, repeats)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (smoke run)")
    args = parser.parse_args()
    n, repeats = (2_000_000, 3) if args.quick else (20_000_000, 10)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bw = bandwidth_gbs(n, repeats)
    rows = []
    eff, backend = bench_fp32(n, repeats, rows)
    bench_master_bf16(n, repeats, rows)
    bench_gpt2(max(3, repeats // 3), rows)
    print(f"accelops path: {backend}")
    print(f"{'case':48s} {'baseline':34s} {'ours ms':>9s} {'base ms':>9s} {'ratio':>6s}")
    for case, base, t_ours, t_base in rows:
        print(f"{case:48s} {base:34s} {t_ours * 1e3:9.2f} {t_base * 1e3:9.2f} {t_base / t_ours:5.2f}x")
    print(f"in-place bandwidth (a += b): {bw:.1f} GB/s; Adam fp32 effective: {eff:.1f} GB/s = {eff / bw:.2f} of it")


if __name__ == "__main__":
    main()
