"""``ds_report --verify``: FusedAdam(adam_w_mode=True) against torch.optim.AdamW(fused=True), on CUDA."""
from ..registry import Check
from ..verify_support import assert_params_close, require_kernel, run_pair


def check() -> str:
    import torch

    from . import FusedAdam

    opt, ours, ref = run_pair(lambda p: FusedAdam(p, lr=1e-2, weight_decay=0.01, adam_w_mode=True),
                              lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01, fused=True), device="cuda")
    require_kernel(opt)
    return assert_params_close(ours, ref, "FusedAdam(adam_w_mode=True) vs torch.optim.AdamW(fused=True)")


CHECKS = {"fused_adam": Check(check, device="cuda")}
