"""``ds_report --verify``: FusedLion against the op's torch reference (``_lion_torch_``), on CUDA."""
from ..registry import Check
from ..verify_support import assert_params_close, require_kernel, run_pair


class ReferenceLion:
    """The torch reference of the Lion step as an optimizer (state in the param dtype)."""

    def __init__(self, params, lr: float, betas, weight_decay: float) -> None:
        import torch

        self.params, self.lr, self.betas, self.wd = params, lr, betas, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        import torch

        from . import _lion_torch_

        with torch.no_grad():
            _lion_torch_(self.params, [p.grad for p in self.params], self.exp_avg, self.lr, self.betas[0],
                         self.betas[1], self.wd)


def check() -> str:
    from . import FusedLion

    opt, ours, ref = run_pair(lambda p: FusedLion(p, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01),
                              lambda p: ReferenceLion(p, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01), device="cuda")
    require_kernel(opt)
    return assert_params_close(ours, ref, "FusedLion vs a torch Lion")


CHECKS = {"fused_lion": Check(check, device="cuda")}
