"""Shared pieces of the optimizers' verify checks: run ours and a reference on the same params and grads."""
from __future__ import annotations

STEPS = 5
SIZES = (7, 1025)  # one shorter than a vector, one with a tail


def run_pair(make_ours, make_ref, device: str = "cpu"):
    """Run ours and the reference optimizer on identical params and grads for ``STEPS`` steps; returns
    (our optimizer, our params, the reference's params)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(n, generator=gen) for n in SIZES]
    grads = [[torch.randn(n, generator=gen) for n in SIZES] for _ in range(STEPS)]
    ours = [t.clone().to(device).requires_grad_() for t in init]
    ref = [t.clone().to(device).requires_grad_() for t in init]
    opt_ours, opt_ref = make_ours(ours), make_ref(ref)
    for step_grads in grads:
        for a, b, g in zip(ours, ref, step_grads):
            a.grad, b.grad = g.to(device).clone(), g.to(device).clone()
        opt_ours.step()
        opt_ref.step()
    return opt_ours, ours, ref


def assert_params_close(ours, ref, what: str) -> str:
    """Elementwise comparison (rtol 1e-5, atol 1e-6); returns what was compared and the largest difference."""
    import torch

    worst = 0.0
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")
        worst = max(worst, (a.detach() - b.detach()).abs().max().item())
    return f"{what}, {STEPS} steps, sizes {list(SIZES)}: max abs diff {worst:.1e}"


def require_kernel(front_end) -> None:
    """Fail when ``front_end`` (anything with ``backend``/``backend_reason``) ran its pure-torch path."""
    if front_end.backend != "kernel":
        raise AssertionError(f"{type(front_end).__name__} ran its pure-torch fallback, not the op "
                             f"({front_end.backend_reason})")
