"""What the engine does for a model with mixture-of-experts layers (:mod:`accelops.moe`).

* ``setup(model)``: every MoE layer gets its expert-parallel group (``set_deepspeed_parallelism``, a
  collective, in module order).
* Values: an expert's parameters differ between the ranks of its expert-parallel group, so they are kept
  out of the data-parallel wrapping (DDP ignores them at ZeRO 0, FSDP2's ``ignored_params`` at ZeRO 1-2;
  ZeRO 3 with experts is an error, as in DeepSpeed) and ``broadcast_experts`` gives the copies of an expert
  (its expert-data-parallel group) their first copy's values.
* Gradients: ``reduce_expert_grads`` sums them over the expert-data-parallel group and divides by the world
  size: each copy of an expert already holds the gradient of the tokens its whole expert-parallel group
  sent it, and the loss is the mean over all ranks. ``global_norm`` counts every expert once.
* Checkpoint names: local expert ``i`` of expert-parallel rank ``j`` is saved as global expert
  ``j x num_local_experts + i`` (``...deepspeed_experts.<global>...``), so every expert is saved once and a
  checkpoint loads at another ``ep_size`` (and ``to-torch`` gives every expert).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

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


def _expert_group(param: torch.Tensor) -> Tuple[Any, List[int]]:
    from ..utils import groups

    return (groups._get_expert_data_parallel_group(param.group_name),
            groups._get_expert_data_parallel_group_ranks(param.group_name))


def broadcast_experts(model: torch.nn.Module) -> None:
    """Every copy of an expert takes the values of its expert-data-parallel group's first rank."""
    import torch.distributed as dist

    from ..moe.utils import is_moe_param

    with torch.no_grad():
        for param in model.parameters():
            if is_moe_param(param):
                group, ranks = _expert_group(param)
                if len(ranks) > 1:
                    dist.broadcast(param.data, src=ranks[0], group=group)


def global_norm(model: torch.nn.Module, sharded: bool, device: torch.device) -> float:
    """The 2-norm of the whole model's gradients (after reduction): the shared parameters' (their shards
    summed over the ranks when ``sharded``, else this rank's copy) and every expert's once (each copy's square
    divided by the number of copies, summed over the ranks). A collective."""
    import torch.distributed as dist

    from ..moe.utils import is_moe_param

    shared = torch.zeros((), dtype=torch.float32, device=device)
    experts = torch.zeros((), dtype=torch.float32, device=device)
    for param in model.parameters():
        grad = param.grad
        if grad is None:
            continue
        local = grad.to_local() if hasattr(grad, "to_local") else grad
        square = local.float().pow(2).sum().to(device)
        if is_moe_param(param):
            experts += square / len(_expert_group(param)[1])
        else:
            shared += square
    if dist.is_initialized() and dist.get_world_size() > 1:
        if sharded:
            shared += experts
            dist.all_reduce(shared)
            return float(shared.sqrt())
        dist.all_reduce(experts)
    return float((shared + experts).sqrt())


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
