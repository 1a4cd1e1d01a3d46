"""MoE dispatch + combine on CPU: the dense einsum path MOELayer used before vs the torch index reference vs the
fused moe_dispatch op, side by side.

Run: ``python benchmarks/bench_moe_dispatch.py [--quick]``. S = 4096 tokens, E = 8 experts, C = S / E x 1.25 = 640,
M = 1024; routes from top1gating / top2gating on random logits (capacity factor set so that C is 640 for both,
so top-2 drops tokens). Each case times dispatch (tokens -> [E, C, M]) then combine ([E, C, M] -> [S, M]), forward
only and forward + backward (gradients of the tokens, the expert outputs and the gates). The dense path is
``einsum("sec,sm->ecm", dispatch_mask)`` / ``einsum("sec,ecm->sm", combine_weights)`` from the gate's masks; the
index reference is the op's torch fallback (``ACCELOPS_CPU_OPS_FALLBACK=1``). Ratios: dense / fused and
reference / fused (> 1: the fused op is faster). No assertions.
"""
import argparse
import os

import torch

from accelops.moe.sharded_moe import top1gating, top2gating
from accelops.ops.moe_dispatch import MoEDispatcher, moe_combine, moe_dispatch
from timing import timeit

FALLBACK = "ACCELOPS_CPU_OPS_FALLBACK"




def dense(tokens, expert_output, combine, dispatch, backward):
    if backward:
        tokens, expert_output = tokens.detach().requires_grad_(), expert_output.detach().requires_grad_()
        combine = combine.detach().requires_grad_()
    buffer = torch.einsum("sec,sm->ecm", dispatch.type_as(tokens), tokens)
    out = torch.einsum("sec,ecm->sm", combine.type_as(tokens), expert_output)
    if backward:
        torch.autograd.backward([buffer, out], [torch.ones_like(buffer), torch.ones_like(out)])


def indexed(tokens, expert_output, routes, backward):
    gate = routes.gate.detach()
    if backward:
        tokens, expert_output = tokens.detach().requires_grad_(), expert_output.detach().requires_grad_()
        gate = gate.requires_grad_()
    buffer = moe_dispatch(tokens, routes.expert, routes.slot, routes.num_experts, routes.capacity, check_routes=False)
    out = moe_combine(expert_output, routes.expert, routes.slot, gate, check_routes=False)
    if backward:
        torch.autograd.backward([buffer, out], [torch.ones_like(buffer), torch.ones_like(out)])


def reference(*args):
    os.environ[FALLBACK] = "1"
    try:
        indexed(*args)
    finally:
        del os.environ[FALLBACK]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args()
    os.environ.pop(FALLBACK, None)
    tokens_n, experts, m, repeats = 4096, 8, 1024, 3 if args.quick else 10
    capacity = int(tokens_n / experts * 1.25)
    front = MoEDispatcher("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; S={tokens_n} E={experts} C={capacity} M={m}")
    print(f"fused op: {front.backend} ({front.backend_reason})")
    print(f"{'case':34s} {'dense ms':>9s} {'ref ms':>9s} {'fused ms':>9s} {'dense/fused':>11s} {'ref/fused':>9s}")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(tokens_n, experts, generator=gen)
    torch.manual_seed(0)
    gatings = {"top1": lambda **kw: top1gating(logits, 1.25, 4, **kw),
               "top2": lambda **kw: top2gating(logits, 0.625, 4, top2_2nd_expert_sampling=False, **kw)}
    for name, gating in gatings.items():
        torch.manual_seed(1)
        _l_aux, combine, dispatch, _counts = gating()
        torch.manual_seed(1)
        _l_aux, routes, _counts = gating(return_routes=True)
        assert routes.capacity == capacity
        kept = int((routes.expert >= 0).sum())
        for dtype in (torch.float32, torch.bfloat16):
            tokens = torch.randn(tokens_n, m, generator=gen).to(dtype)
            expert_output = torch.randn(experts, capacity, m, generator=gen).to(dtype)
            for backward in (False, True):
                with torch.set_grad_enabled(backward):
                    runs = (lambda: dense(tokens, expert_output, combine, dispatch, backward),
                            lambda: reference(tokens, expert_output, routes, backward),
                            lambda: indexed(tokens, expert_output, routes, backward))
                    t_dense, t_ref, t_fused = (timeit(run, repeats, warmup=1) for run in runs)
                case = f"{name} ({kept} routes) {str(dtype)[6:]} {'fwd+bwd' if backward else 'fwd'}"
                print(f"{case:34s} {t_dense * 1e3:9.1f} {t_ref * 1e3:9.1f} {t_fused * 1e3:9.1f} "
                      f"{t_dense / t_fused:10.1f}x {t_ref / t_fused:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
