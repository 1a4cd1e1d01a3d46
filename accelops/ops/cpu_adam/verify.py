"""``ds_report --verify``: CPUAdam(adamw_mode=True) against torch.optim.AdamW."""
from ..registry import Check
from ..verify_support import assert_params_close, require_kernel, run_pair


def check() -> str:
    import torch

    from . import CPUAdam

    opt, ours, ref = run_pair(lambda p: CPUAdam(p, lr=1e-2, weight_decay=0.01, adamw_mode=True),
                              lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01))
    require_kernel(opt)
    return assert_params_close(ours, ref, "CPUAdam(adamw_mode=True) vs torch.optim.AdamW")


CHECKS = {"cpu_adam": Check(check)}
