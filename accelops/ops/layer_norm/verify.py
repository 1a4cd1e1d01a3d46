"""``ds_report --verify``: fused_add_layer_norm forward and backward against F.layer_norm(x + r), CPU and CUDA."""
from ..registry import Check


def compare_with_torch(device: str) -> str:
    """fused_add_layer_norm forward and backward vs F.layer_norm(x + r), rows of 1, 63 and 1024 elements."""
    import torch
    import torch.nn.functional as F

    from .ops import fused_add_layer_norm

    worst = 0.0
    for n in (1, 63, 1024):
        gen = torch.Generator().manual_seed(n)
        tensors = [torch.randn(*shape, generator=gen).to(device) for shape in ((16, n), (16, n), (n,), (n,), (16, n))]
        x, r, w, b, dy = tensors
        ours = [t.clone().requires_grad_() for t in (x, r, w, b)]
        ref = [t.clone().requires_grad_() for t in (x, r, w, b)]
        y_ours = fused_add_layer_norm(*ours, eps=1e-5)
        y_ref = F.layer_norm(ref[0] + ref[1], (n,), ref[2], ref[3], 1e-5)
        y_ours.backward(dy)
        y_ref.backward(dy)
        pairs = [(y_ours, y_ref)] + [(a.grad, c.grad) for a, c in zip(ours, ref)]
        for a, c in pairs:
            torch.testing.assert_close(a.detach().cpu(), c.detach().cpu(), rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"add+layer norm, row size {n}: {m}")
            worst = max(worst, (a.detach() - c.detach()).abs().max().item())
    return f"fused_add_layer_norm vs F.layer_norm(x + r), fwd+bwd, rows 1/63/1024: max abs diff {worst:.1e}"


def _require(loader, where: str) -> None:
    if loader.backend != "kernel":
        raise AssertionError(f"fused_add_layer_norm ran its pure-torch fallback on {where}, not the op "
                             f"({loader.reason})")


def check_cpu() -> str:
    from .ops import CPU_LOADER

    _require(CPU_LOADER, "CPU")
    return compare_with_torch("cpu")


def check_cuda() -> str:
    from .cuda import CUDA_LOADER

    detail = compare_with_torch("cuda")
    _require(CUDA_LOADER, "CUDA")
    return detail


CHECKS = {"cpu_layer_norm": Check(check_cpu), "fused_layer_norm": Check(check_cuda, device="cuda")}
