"""Refuses a param listed twice, or two params that share memory, when an accelops optimizer's param
groups are built. Its kernels update all params of a step at once, in parallel, so such params would
race (lost or doubled updates), where torch.optim updates them one after another."""
from typing import List, Tuple

from torch import Tensor

__all__ = ["DistinctParamsMixin"]


def _span(t: Tensor):
    """(storage key, first byte, one past the last byte) that ``t`` can touch, or None when it has
    no elements or no real storage (meta tensors)."""
    if t.numel() == 0 or t.device.type == "meta":
        return None
    size = t.element_size()
    first = t.storage_offset() * size
    extent = sum((n - 1) * s for n, s in zip(t.shape, t.stride())) + 1
    return (str(t.device), t.untyped_storage().data_ptr()), first, first + extent * size


def _check_distinct(owner: str, labelled: List[Tuple[str, Tensor]]) -> None:
    """ValueError naming the first two params that are one tensor or whose memory overlaps."""
    first_label = {}
    for label, t in labelled:
        if id(t) in first_label:
            raise ValueError(f"{owner}: {label} is the same tensor as {first_label[id(t)]}; pass each param once "
                             f"(the step updates all params in parallel, so a repeated one would race)")
        first_label[id(t)] = label
    spans = sorted((span, label) for label, t in labelled if (span := _span(t)) is not None)
    prev_key, prev_end, prev_label = None, 0, ""
    for (key, start, end), label in spans:
        if key == prev_key and start < prev_end:
            raise ValueError(f"{owner}: {label} overlaps the memory of {prev_label}; params must not share memory "
                             f"(the step updates all params in parallel, so overlapping ones would race)")
        if key != prev_key or end > prev_end:
            prev_key, prev_end, prev_label = key, end, label


def _tensors(params) -> List[Tensor]:
    """The tensors of a param list (which may hold torch's (name, tensor) pairs)."""
    return [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]


class DistinctParamsMixin:
    """Optimizer mixin (put before ``torch.optim.Optimizer``): ``add_param_group`` raises ValueError
    when the new group lists a param twice or a param shares memory with any param of any group.
    Nothing is added then. Params that are disjoint views of one buffer are fine."""

    def add_param_group(self, param_group):
        if isinstance(param_group, dict) and "params" in param_group and not isinstance(param_group["params"], set):
            params = param_group["params"]
            param_group["params"] = [params] if isinstance(params, Tensor) else list(params)
            labelled = [(f"param {i} of group {g}", t) for g, group in enumerate(self.param_groups)
                        for i, t in enumerate(_tensors(group["params"]))]
            new = len(self.param_groups)
            labelled += [(f"param {i} of group {new}", t) for i, t in enumerate(_tensors(param_group["params"]))]
            _check_distinct(type(self).__name__, labelled)
        super().add_param_group(param_group)
