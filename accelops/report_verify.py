"""``ds_report --verify``: build (or load) each compatible op and check it against its torch reference.

Each check runs the op through its public front end on small inputs and compares elementwise with
``torch.testing.assert_close``; it fails when the front end fell back to its pure-torch path (each
check asks the front end which path ran), since then the op itself was not exercised. Every op is verified in its own child process
(``python -m accelops.report_verify <op>``), so a crashing kernel becomes a FAIL row, not a dead
report. May compile ops (progress goes to stderr).
"""
from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

CHILD_TIMEOUT_S = 3600  # a cold CUDA build on a small machine takes minutes

STEPS = 5
SIZES = (7, 1025)  # one shorter than a vector, one with a tail


def _pairs(make_ours, make_ref, device: str = "cpu"):
    """Run ours and the reference optimizer on identical params and grads; returns (our optimizer, our
    params, the reference's params)."""
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


def _assert_params_close(ours, ref, what: str) -> str:
    import torch

    worst = 0.0
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")
        worst = max(worst, (a.detach() - b.detach()).abs().max().item())
    return f"{what}, {STEPS} steps, sizes {list(SIZES)}: max abs diff {worst:.1e}"


def _require_kernel(opt) -> None:
    if getattr(opt, "backend", "kernel") != "kernel":
        raise AssertionError(f"{type(opt).__name__} ran its pure-torch fallback, not the op "
                             f"(ACCELOPS_CPU_OPS_FALLBACK set, or the op failed to load)")


def check_cpu_adam() -> str:
    import torch

    from accelops.ops.cpu_adam import CPUAdam

    opt, ours, ref = _pairs(lambda p: CPUAdam(p, lr=1e-2, weight_decay=0.01, adamw_mode=True),
                            lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01))
    _require_kernel(opt)
    return _assert_params_close(ours, ref, "CPUAdam(adamw_mode=True) vs torch.optim.AdamW")


def check_cpu_adagrad() -> str:
    import torch

    from accelops.ops.cpu_adagrad import CPUAdagrad

    opt, ours, ref = _pairs(lambda p: CPUAdagrad(p, lr=1e-2, weight_decay=0.01),
                            lambda p: torch.optim.Adagrad(p, lr=1e-2, weight_decay=0.01))
    _require_kernel(opt)
    return _assert_params_close(ours, ref, "CPUAdagrad vs torch.optim.Adagrad")


class _ReferenceLion:
    """Lion (Chen et al. 2023) in plain torch: the reference for CPULion."""

    def __init__(self, params, lr: float, betas, weight_decay: float) -> None:
        import torch

        self.params, self.lr, self.betas, self.wd = params, lr, betas, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        import torch

        beta1, beta2 = self.betas
        with torch.no_grad():
            for p, m in zip(self.params, self.exp_avg):
                update = (beta1 * m + (1 - beta1) * p.grad).sign()
                p.mul_(1 - self.lr * self.wd).add_(update, alpha=-self.lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)


def check_cpu_lion() -> str:
    from accelops.ops.cpu_lion import CPULion

    opt, ours, ref = _pairs(lambda p: CPULion(p, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01),
                            lambda p: _ReferenceLion(p, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01))
    _require_kernel(opt)
    return _assert_params_close(ours, ref, "CPULion vs a torch Lion")


def _layer_norm_check(device: str) -> str:
    """fused_add_layer_norm forward and backward vs F.layer_norm(x + r), rows of 1, 63 and 1024."""
    import torch
    import torch.nn.functional as F

    from accelops.ops.layer_norm_ops import fused_add_layer_norm

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


def check_cpu_layer_norm() -> str:
    from accelops.ops.layer_norm_ops import layer_norm_path

    if layer_norm_path() != "kernel":
        raise AssertionError("fused_add_layer_norm ran its pure-torch fallback on CPU, not the op "
                             "(ACCELOPS_CPU_OPS_FALLBACK set, or the op failed to load)")
    return _layer_norm_check("cpu")


def _cuda_device() -> Optional[str]:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _require_loaded(module_name: str, attribute: str, what: str) -> None:
    """Fail when the front end module ``module_name`` has not loaded its extension into ``attribute``."""
    if getattr(importlib.import_module(module_name), attribute, None) is None:
        raise AssertionError(f"{what} ran its pure-torch fallback, not the CUDA op")


def check_fused_adam() -> str:
    import torch

    from accelops.ops.fused_adam import FusedAdam

    _, ours, ref = _pairs(lambda p: FusedAdam(p, lr=1e-2, weight_decay=0.01, adam_w_mode=True),
                          lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01, fused=True), device="cuda")
    _require_loaded("accelops.ops.fused_adam", "_cuda_module", "FusedAdam")
    return _assert_params_close(ours, ref, "FusedAdam(adam_w_mode=True) vs torch.optim.AdamW(fused=True)")


def check_fused_layer_norm() -> str:
    detail = _layer_norm_check("cuda")
    _require_loaded("accelops.ops.layer_norm_cuda", "_module", "fused_add_layer_norm on CUDA")
    return detail


#: op name -> (check, whether it needs a CUDA device to run).
CHECKS: Dict[str, tuple] = {
    "cpu_adam": (check_cpu_adam, False),
    "cpu_adagrad": (check_cpu_adagrad, False),
    "cpu_lion": (check_cpu_lion, False),
    "cpu_layer_norm": (check_cpu_layer_norm, False),
    "fused_adam": (check_fused_adam, True),
    "fused_layer_norm": (check_fused_layer_norm, True),
}


def _result(name: str, status: str, detail: str, load_s: Optional[float] = None,
            check_s: Optional[float] = None) -> Dict[str, Any]:
    return {"name": name, "status": status, "load_s": load_s, "check_s": check_s, "detail": detail}


def verify_op(row: Dict[str, Any]) -> Dict[str, Any]:
    """Build/load one op and check it: ``{"name", "status": PASS|FAIL|SKIP, "load_s", "check_s", "detail"}``.

    Every check also fails when the front end ran its pure-torch fallback instead of the op."""
    name = row["name"]
    if not row.get("compatible"):
        return _result(name, "SKIP", "not compatible: " + "; ".join(row.get("reasons") or ["unknown reason"]))
    try:
        import torch  # noqa: F401  (imported before the clock starts: load_s is the op's own load)

        from accelops.op_builder import get_builder_class

        start = time.perf_counter()
        get_builder_class(name)().load(verbose=False)
        load_s = round(time.perf_counter() - start, 3)
    except Exception as exc:
        return _result(name, "FAIL", f"build/load failed: {exc}")
    check, needs_cuda = CHECKS.get(name, (None, False))
    if check is None:
        return _result(name, "PASS", "loaded; no numerical check is defined for this op", load_s)
    if needs_cuda and _cuda_device() is None:
        return _result(name, "SKIP", "built and loaded; numerical check skipped: no CUDA device here", load_s)
    start = time.perf_counter()
    try:
        status, detail = "PASS", check()
    except Exception as exc:
        status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
    return _result(name, status, detail, load_s, round(time.perf_counter() - start, 3))


def _verify_in_child(row: Dict[str, Any]) -> Dict[str, Any]:
    """``verify_op`` for one compatible op in a child process; a crash or hang becomes a FAIL result."""
    name = row["name"]
    command = [sys.executable, "-m", "accelops.report_verify", name]
    try:  # the child's stderr (build progress, crash messages) goes straight to ours
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT_S,
                               stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return _result(name, "FAIL", f"no result after {CHILD_TIMEOUT_S} s (hung build or check)")
    lines = child.stdout.strip().splitlines()
    if child.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    how = (f"was killed by {signal.Signals(-child.returncode).name}" if child.returncode < 0
           else f"exited {child.returncode} without a result")
    return _result(name, "FAIL", f"the check process {how} (its messages are on stderr above)")


def verify_ops(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One result per row, in order: incompatible ops SKIP here, each compatible op runs in a child."""
    return [_verify_in_child(row) if row.get("compatible") else verify_op(row) for row in rows]


if __name__ == "__main__":  # child mode: verify the op named on the command line, print one JSON line
    print(json.dumps(verify_op({"name": sys.argv[1], "compatible": True})))
