"""What the engine does for a model with mixture-of-experts layers (:mod:`accelops.moe`).

* ``setup(model)``: every MoE layer gets its expert-parallel group (``set_deepspeed_parallelism``, a
  collective, in module order).
* Gradients: an expert's parameters differ between the ranks of its expert-parallel group, so they are kept
  out of the data-parallel reduction (DDP ignores them) and ``reduce_expert_grads`` sums them over the
  expert-data-parallel group and divides by the world size: each copy of an expert already holds the
  gradient of the tokens its whole expert-parallel group sent it, and the loss is the mean over all ranks.
* Checkpoint names: local expert ``i`` of expert-parallel rank ``j`` is saved as global expert
  ``j x num_local_experts + i`` (``...deepspeed_experts.<global>...``), so every expert is saved once and a
  checkpoint loads at another ``ep_size`` (and ``to-torch`` gives every expert).
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch

_EXPERTS = "deepspeed_moe.experts.deepspeed_experts."


def moe_layers(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Module]]:
    from ..moe.layer import MoE

    return [(name, module) for name, module in model.named_modules() if isinstance(module, MoE)]


def setup(model: torch.nn.Module) -> None:
    """Give every MoE layer of ``model`` its expert-parallel group (module docstring)."""
    for _, layer in moe_layers(model):
        layer.set_deepspeed_parallelism()


def expert_param_names(model: torch.nn.Module) -> List[str]:
    """The names of ``model``'s expert parameters."""
    from ..moe.utils import is_moe_param

    return [name for name, param in model.named_parameters() if is_moe_param(param)]


def reduce_expert_grads(model: torch.nn.Module, world_size: int) -> None:
    """Sum each expert gradient over its expert-data-parallel group, then divide by ``world_size``."""
    import torch.distributed as dist

    from ..moe.utils import is_moe_param
    from ..utils import groups

    for param in model.parameters():
        if not is_moe_param(param) or param.grad is None:
            continue
        if groups._get_expert_data_parallel_world_size(param.group_name) > 1:
            dist.all_reduce(param.grad, group=groups._get_expert_data_parallel_group(param.group_name))
        if world_size > 1:
            param.grad.div_(world_size)


def global_names(model: torch.nn.Module) -> Dict[str, str]:
    """Local checkpoint prefix -> global prefix for every local expert of every MoE layer (module docstring);
    empty without expert parallelism."""
    from ..utils import groups

    renames: Dict[str, str] = {}
    for name, layer in moe_layers(model):
        if layer.ep_size == 1:
            continue
        ep_rank = groups._get_expert_parallel_rank(layer.expert_group_name)
        prefix = f"{name}.{_EXPERTS}" if name else _EXPERTS
        for i in range(layer.num_local_experts):
            renames[f"{prefix}{i}."] = f"{prefix}{ep_rank * layer.num_local_experts + i}."
    return renames


def rename(key: str, renames: Dict[str, str]) -> str:
    """``key`` with its local expert prefix replaced by the global one (unchanged for other keys)."""
    if not renames:
        return key
    match = re.match(r"^(.*?deepspeed_experts\.\d+\.)", key)
    if match and match.group(1) in renames:
        return renames[match.group(1)] + key[len(match.group(1)):]
    return key
