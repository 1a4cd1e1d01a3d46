"""DeepSpeed's ``deepspeed.utils``: the names training scripts import from it.

``logger`` and ``log_dist`` (:mod:`accelops.utils.logging`), ``groups`` and its public process-group helpers
(:mod:`accelops.utils.groups`: data parallelism over every rank), ``RepeatingLoader``
(:mod:`accelops.runtime.dataloader`), and ``safe_get_full_fp32_param``, ``safe_get_full_grad``,
``safe_get_full_optimizer_state`` with their ``safe_set_full_*`` partners
(:mod:`accelops.utils.tensor_fragment`); the submodule ``pin_memory`` (native pinning, DeepSpeed's
``DS_PIN_MEMORY_BACKEND=native``). Every name is imported on first access: importing this package
imports no torch.
"""
from accelops._lazy import lazy_attributes

_EXPORTS = {
    "logger": "accelops.utils.logging",
    "log_dist": "accelops.utils.logging",
    "RepeatingLoader": "accelops.runtime.dataloader",
    **{name: "accelops.utils.tensor_fragment" for name in (
        "safe_get_full_fp32_param", "safe_get_full_grad", "safe_get_full_optimizer_state",
        "safe_set_full_fp32_param", "safe_set_full_grad", "safe_set_full_optimizer_state")},
    # DeepSpeed's ``from .groups import *`` puts the public group helpers here too
    **{name: "accelops.utils.groups" for name in (
        "get_data_parallel_group", "get_data_parallel_rank", "get_data_parallel_world_size",
        "get_model_parallel_group", "get_model_parallel_rank", "get_model_parallel_world_size",
        "get_tensor_model_parallel_group", "get_tensor_model_parallel_rank", "get_tensor_model_parallel_src_rank",
        "get_tensor_model_parallel_world_size")},
}
_SUBMODULES = ("groups", "logging", "pin_memory", "tensor_fragment")

__all__ = sorted([*_EXPORTS, "groups"])


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS, _SUBMODULES)
