"""``ds_report --verify``: CPUAdagrad against torch.optim.Adagrad."""
from ..registry import Check
from ..verify_support import assert_params_close, require_kernel, run_pair


def check() -> str:
    import torch

    from . import CPUAdagrad

    opt, ours, ref = run_pair(lambda p: CPUAdagrad(p, lr=1e-2, weight_decay=0.01),
                              lambda p: torch.optim.Adagrad(p, lr=1e-2, weight_decay=0.01))
    require_kernel(opt)
    return assert_params_close(ours, ref, "CPUAdagrad vs torch.optim.Adagrad")


CHECKS = {"cpu_adagrad": Check(check)}
