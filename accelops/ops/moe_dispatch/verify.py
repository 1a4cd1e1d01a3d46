"""``ds_report --verify``: moe_dispatch/moe_combine forward and backward against the torch reference, CPU and CUDA."""
from ..registry import Check


def compare_with_reference(device: str) -> str:
    """Dispatch then combine (top-2 routes with dropped tokens, row sizes 1, 37 and 1024) vs the torch reference:
    outputs and the gradients of the tokens, the expert outputs and the gates."""
    import torch

    from .ops import moe_combine, moe_dispatch
    from .reference import combine_torch, dispatch_torch

    worst = 0.0
    tokens, experts, capacity, k = 64, 4, 40, 2
    for m in (1, 37, 1024):
        gen = torch.Generator().manual_seed(m)
        rows = torch.randperm(experts * capacity, generator=gen)[:k * tokens]
        expert = (rows // capacity).int().reshape(k, tokens)
        expert[1, ::5] = -1  # dropped second choices
        slot = (rows % capacity).int().reshape(k, tokens)
        x, y_in, g_in = (torch.randn(*shape, generator=gen).to(device) for shape in
                         ((tokens, m), (experts, capacity, m), (tokens, m)))
        gate = torch.rand(k, tokens, generator=gen).to(device)
        expert, slot = expert.to(device), slot.to(device)
        results = []
        for dispatch, combine in ((moe_dispatch, moe_combine),
                                  (lambda t, e, s, ne, c: dispatch_torch(t, e, s, None, ne, c), combine_torch)):
            xs, ys, gs = (t.clone().requires_grad_() for t in (x, y_in, gate))
            buffer = dispatch(xs, expert, slot, experts, capacity)
            out = combine(ys, expert, slot, gs)
            (buffer * y_in).sum().backward()
            out.backward(g_in)
            results.append((buffer, out, xs.grad, ys.grad, gs.grad))
        for name, a, c in zip(("buffer", "output", "tokens' grad", "expert outputs' grad", "gates' grad"), *results):
            # the gates' gradients are float32 dot products over M: summation order moves them by ~sqrt(M) ulps
            atol = 1e-5 * (m ** 0.5 if name == "gates' grad" else 1.0)
            torch.testing.assert_close(a.detach().cpu(), c.detach().cpu(), rtol=1e-5, atol=atol,
                                       msg=lambda msg: f"moe dispatch/combine, {name}, row size {m}: {msg}")
            worst = max(worst, (a.detach() - c.detach()).abs().max().item())
    return (f"moe_dispatch/moe_combine vs the torch reference, fwd+bwd, top-2 with drops, rows 1/37/1024: "
            f"max abs diff {worst:.1e}")


def _require(loader, where: str) -> None:
    if loader.backend != "kernel":
        raise AssertionError(f"moe_dispatch ran its pure-torch fallback (the index reference) on {where}, not the "
                             f"op ({loader.reason})")


def check_cpu() -> str:
    from .ops import CPU_LOADER

    _require(CPU_LOADER, "CPU")
    return compare_with_reference("cpu")


def check_cuda() -> str:
    from .cuda import CUDA_LOADER

    detail = compare_with_reference("cuda")
    _require(CUDA_LOADER, "CUDA")
    return detail


CHECKS = {"cpu_moe_dispatch": Check(check_cpu), "fused_moe_dispatch": Check(check_cuda, device="cuda")}
