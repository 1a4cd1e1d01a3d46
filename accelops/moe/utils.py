"""``deepspeed.moe.utils``: which parameters are experts', and optimizer param groups that keep them apart."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple, Union

import torch


def has_moe_layers(model: torch.nn.Module) -> Tuple[bool, int]:
    """(whether ``model`` has an MoE layer, the first one's number of experts; 0 without)."""
    from .layer import MoE

    for module in model.modules():
        if isinstance(module, MoE):
            return True, module.num_experts
    return False, 0


def is_moe_param(param: torch.Tensor) -> bool:
    """True for an expert's parameter (DeepSpeed's mark: ``param.allreduce`` is False)."""
    return hasattr(param, "allreduce") and not param.allreduce


def split_params_into_shared_and_expert_params(params: List[torch.nn.Parameter]
                                               ) -> Tuple[List[torch.nn.Parameter], List[torch.nn.Parameter]]:
    """(the parameters that are not experts', the experts')."""
    params = list(params)
    return [p for p in params if not is_moe_param(p)], [p for p in params if is_moe_param(p)]


def split_params_grads_into_shared_and_expert_params(group: List[torch.nn.Parameter]
                                                     ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """(gradients of the shared parameters, of the experts'), each in its parameter's dtype; no gradient,
    no entry."""
    shared, expert = [], []
    for param in group:
        if param.grad is not None:
            (expert if is_moe_param(param) else shared).append(param.grad.to(param.dtype))
    return shared, expert


def split_params_into_different_moe_groups_for_optimizer(param_groups: Union[Dict[str, Any], tuple, list],
                                                         max_group_size: Union[int, float, None] = 178956971
                                                         ) -> List[Dict[str, Any]]:
    """DeepSpeed's split: every group keeps its non-expert parameters, and for each expert group name a copy
    of the group's settings with ``name`` that name, ``moe`` True and that name's expert parameters is
    appended, cut into groups of at most ``max_group_size`` elements (None: not cut). Each input group needs a
    ``name``. The input groups are changed in place; returns the whole list."""
    if isinstance(param_groups, dict):
        param_groups = [param_groups]
    elif isinstance(param_groups, tuple):
        param_groups = list(param_groups)
    elif not isinstance(param_groups, list):
        raise ValueError(f"Unknown param group type of {type(param_groups)}: expected a dict, a list or a tuple")
    for i, group in enumerate(param_groups):
        if "name" not in group:
            raise KeyError(f"param group {i} has no 'name'; split_params_into_different_moe_groups_for_optimizer "
                           f"needs a name for every group (DeepSpeed's convention)")
    names = sorted({p.group_name for g in param_groups for p in g["params"] if is_moe_param(p)})
    added: List[Dict[str, Any]] = []
    for group in list(param_groups):
        params = list(group["params"])
        for name in names:
            experts = [p for p in params if is_moe_param(p) and p.group_name == name]
            for chunk in _chunks(experts, max_group_size):
                added.append({**group, "name": name, "moe": True, "params": chunk})
            if not experts and max_group_size is None:
                added.append({**group, "name": name, "moe": True, "params": []})
        group["params"] = [p for p in params if not is_moe_param(p)]
    param_groups.extend(added)
    return param_groups


def _chunks(params: List[torch.nn.Parameter], limit: Union[int, float, None]) -> List[List[torch.nn.Parameter]]:
    if limit is None:
        return [params] if params else []
    chunks: List[List[torch.nn.Parameter]] = []
    size = 0
    for param in params:
        if chunks and size + param.numel() <= limit:
            chunks[-1].append(param)
            size += param.numel()
        else:
            chunks.append([param])
            size = param.numel()
    return chunks


def is_moe_param_group(param_group: Dict[str, Any]) -> bool:
    return bool(param_group.get("moe", False))
