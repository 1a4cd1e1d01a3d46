"""The mixture-of-experts machinery of ``deepspeed.moe.sharded_moe``: GShard top-1 / top-2 gating with
capacity, token dropping, random token selection and the load-balancing loss; the gate module; and the layer
that dispatches tokens to experts, across ranks with all-to-all when the experts are split over them.

DeepSpeed facts followed (deepspeed/moe/sharded_moe.py), S tokens, E experts, capacity C:

* gates are the softmax of the fp32 logits; C = max(ceil(S / E x capacity_factor), min_capacity) for top-1,
  with ``2 x capacity_factor`` for top-2; with ``drop_tokens=False`` C is the largest expert count over the
  expert-parallel group (top-1: at most S), so nothing is dropped;
* top-1: the expert is the argmax of the gates (of the logits plus Gumbel noise for the ``RSample`` policy);
  ``l_aux = E x sum_e(mean_s gates x mean_s mask)``; when an expert has more than C tokens it keeps the C
  with the largest uniform random numbers (``use_rts``; the first C without it); a token's slot is its rank
  among the kept tokens of its expert; fewer tokens than ``min_capacity`` is an error;
* top-2: the second expert is the argmax of the logits (plus Gumbel noise with ``top2_2nd_expert_sampling``)
  without the first; second choices queue behind every first choice; ``l_aux = E^2 x mean_e(...)`` over the
  first choices; a token past the capacity is dropped from that expert; the two gates are renormalised to sum
  to 1;
* the ``Jitter`` policy multiplies the gate's input by uniform noise in [0.99, 1.01] in training;
* the layer returns, per token, the gate-weighted sum of its experts' outputs (a dropped token gives 0);
  ``exp_counts`` are the tokens each expert was chosen for, before dropping.

The layer dispatches and combines by index, as DeepSpeed 0.19 scatters by slot: the gate gives each token's
routes (:class:`Routes`: expert, slot and gate per route, ``return_routes=True`` of the gating functions, or
:func:`routes_from_masks` of the dense weights a custom gate returns) and the ``moe_dispatch`` op
(``accelops.ops.moe_dispatch``: its CPU or CUDA kernel, else its torch index reference) moves the rows, with no
(S, E, C) mask and O(S x k x M) work instead of the ``einsum``s' O(S x E x C x M). The results are those of the
dense ``einsum("sec,sm->ecm")`` / ``einsum("sec,ecm->sm")`` path (up to float32 summation order).
"""
from __future__ import annotations

import math
from typing import Any, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

NOISY_GATE_POLICIES = (None, "None", "Jitter", "RSample")


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` over ``group`` whose backward is the same exchange of the gradients."""

    @staticmethod
    def forward(ctx: Any, group: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.group = group
        tensor = tensor.contiguous()
        output = torch.empty_like(tensor)
        dist.all_to_all_single(output, tensor, group=group)
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, torch.Tensor]:
        return None, _AllToAll.apply(ctx.group, grad)


def _uniform(shape: torch.Size, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(shape, device=device).uniform_(low, high)


def _gumbel(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise: -log(-log(U)), U uniform in (0, 1)."""
    u = torch.empty(shape, device=device).uniform_(torch.finfo(torch.float32).tiny, 1.0)
    return -torch.log(-torch.log(u))


def multiplicative_jitter(x: torch.Tensor, device: torch.device = None, epsilon: float = 1e-2) -> torch.Tensor:
    """``x`` times uniform noise in [1 - epsilon, 1 + epsilon] (nothing when epsilon is 0)."""
    if epsilon == 0:
        return x
    return x * _uniform(x.shape, 1.0 - epsilon, 1.0 + epsilon, x.device)


def _capacity(num_tokens: int, num_experts: int, capacity_factor: float, min_capacity: int) -> int:
    return max(int(math.ceil(num_tokens / num_experts * capacity_factor)), int(min_capacity))


def _max_over_group(value: torch.Tensor, group: Any) -> torch.Tensor:
    import torch.distributed as dist

    if group is not None and dist.is_initialized() and dist.get_world_size(group=group) > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return value


def _combine(gates_s: torch.Tensor, mask: torch.Tensor, locations_s: torch.Tensor, capacity: int) -> torch.Tensor:
    """The (S, E, C) weights: each kept token's gate at its expert and slot."""
    return torch.einsum("se,sc->sec", gates_s.unsqueeze(1) * mask.float(),
                        F.one_hot(locations_s, capacity).float())


class Routes(NamedTuple):
    """Where each token goes, ``[k, S]`` for k routes per token (top-1: k = 1; top-2: the first choice, then the
    second): ``expert`` (int32, -1 where the token is dropped from that route), ``slot`` (int32, its row in the
    expert's ``capacity``; 0 when dropped) and ``gate`` (float32, its combine weight; differentiable).
    ``combine_weights[s, expert[k, s], slot[k, s]] == gate[k, s]`` for every kept route, and a kept route is
    exactly a true entry of ``dispatch_mask``."""

    expert: torch.Tensor
    slot: torch.Tensor
    gate: torch.Tensor
    num_experts: int
    capacity: int


def _routes(choices: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]], capacity: int) -> Routes:
    """Routes of ``(gates_s, mask (S, E), locations_s)`` per choice (the arguments of :func:`_combine`). A route
    whose gate is 0 is dropped, as ``dispatch_mask = combine_weights.bool()`` leaves it out."""
    experts, slots, gates = [], [], []
    for gates_s, mask, locations_s in choices:
        kept = mask.any(dim=1) & (gates_s != 0)
        experts.append(torch.where(kept, mask.argmax(dim=1), -1).to(torch.int32))
        slots.append(torch.where(kept, locations_s, 0).to(torch.int32))
        gates.append(gates_s.float())
    return Routes(torch.stack(experts), torch.stack(slots), torch.stack(gates), choices[0][1].shape[1], capacity)


def _gating_result(l_aux: torch.Tensor, choices: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   capacity: int, exp_counts: torch.Tensor, return_routes: bool) -> Tuple:
    if return_routes:
        return l_aux, _routes(choices, capacity), exp_counts
    combine = _combine(*choices[0], capacity)
    for choice in choices[1:]:
        combine = combine + _combine(*choice, capacity)
    return l_aux, combine, combine.bool(), exp_counts


def routes_from_masks(combine_weights: torch.Tensor) -> Routes:
    """The :class:`Routes` of dense ``combine_weights`` (S, E, C) (what a gate returns): each token's nonzero
    entries in (expert, slot) order, k the most any token has (at least 1); gates are gathered from
    ``combine_weights``, so gradients flow back into it."""
    num_tokens, num_experts, capacity = combine_weights.shape
    flat = combine_weights.reshape(num_tokens, num_experts * capacity)
    nonzero = flat != 0
    k = max(int(nonzero.sum(dim=1).max()) if num_tokens else 0, 1)
    k = min(k, max(num_experts * capacity, 1))
    if num_experts * capacity == 0:
        empty = torch.zeros((1, num_tokens), dtype=torch.int32, device=flat.device)
        return Routes(empty - 1, empty, flat.new_zeros((1, num_tokens), dtype=torch.float32), num_experts, capacity)
    # the first k nonzero columns of each row: a larger key for an earlier column, 0 for zeros
    key = nonzero * torch.arange(num_experts * capacity, 0, -1, device=flat.device)
    top = torch.topk(key, k, dim=1)
    kept = (top.values > 0).t()
    index = top.indices.t()
    expert = torch.where(kept, index // capacity, -1).to(torch.int32)
    slot = torch.where(kept, index % capacity, 0).to(torch.int32)
    gate = torch.where(kept, flat.gather(1, top.indices).t().float(), 0.0)
    return Routes(expert.contiguous(), slot.contiguous(), gate.contiguous(), num_experts, capacity)


def top1gating(logits: torch.Tensor, capacity_factor: float, min_capacity: int,
               used_token: Optional[torch.Tensor] = None, noisy_gate_policy: Optional[str] = None,
               drop_tokens: bool = True, use_rts: bool = True, ep_group: Any = None, return_routes: bool = False
               ) -> Tuple:
    """Top-1 gating of ``logits`` (S, E) (module docstring). Returns ``(l_aux, combine_weights (S, E, C),
    dispatch_mask (S, E, C), exp_counts (E,))``; with ``return_routes=True`` ``(l_aux, routes, exp_counts)``
    instead (:class:`Routes`, k = 1; no dense mask is made). ValueError with fewer tokens than ``min_capacity``."""
    num_tokens, num_experts = logits.shape
    if num_tokens < min_capacity:
        raise ValueError(f"top-1 gating got {num_tokens} tokens, fewer than min_capacity={min_capacity}: set "
                         f"min_capacity to 0 or give more tokens")
    gates = F.softmax(logits, dim=1)
    choice = logits + _gumbel(logits.shape, logits.device) if noisy_gate_policy == "RSample" else gates
    mask = F.one_hot(torch.argmax(choice, dim=1), num_classes=num_experts)
    if used_token is not None:
        mask = mask * used_token.reshape(-1, 1).to(mask.dtype)
    exp_counts = mask.sum(dim=0).detach()
    if drop_tokens:
        capacity = _capacity(num_tokens, num_experts, capacity_factor, min_capacity)
    else:
        capacity = min(int(_max_over_group(exp_counts.max(), ep_group)), num_tokens)
    l_aux = torch.sum(gates.mean(dim=0) * mask.float().mean(dim=0)) * num_experts
    if use_rts:
        score = mask * _uniform(mask.shape, 0.0, 1.0, logits.device)
    else:  # the earliest tokens first (torch.topk orders ties arbitrarily)
        score = mask * torch.arange(num_tokens, 0, -1, device=logits.device, dtype=torch.float32).unsqueeze(1)
    kept = torch.topk(score, k=min(capacity, num_tokens), dim=0).indices
    mask = mask * torch.zeros_like(mask).scatter_(0, kept, 1)
    locations = torch.sum((torch.cumsum(mask, dim=0) - 1) * mask, dim=1)
    return _gating_result(l_aux, [((gates * mask).sum(dim=1), mask, locations)], capacity, exp_counts, return_routes)


def top2gating(logits: torch.Tensor, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
               ep_group: Any = None, top2_2nd_expert_sampling: bool = True, return_routes: bool = False
               ) -> Tuple:
    """Top-2 gating of ``logits`` (S, E) (module docstring); returns as :func:`top1gating` (routes: k = 2, the
    first choices, then the second)."""
    num_tokens, num_experts = logits.shape
    gates = F.softmax(logits, dim=1)
    first = torch.argmax(gates, dim=1)
    mask1 = F.one_hot(first, num_classes=num_experts)
    if top2_2nd_expert_sampling:
        logits = logits + _gumbel(logits.shape, logits.device)
    mask2 = F.one_hot(torch.argmax(logits.masked_fill(mask1.bool(), float("-inf")), dim=1), num_classes=num_experts)
    locations1 = torch.cumsum(mask1, dim=0) - 1
    locations2 = torch.cumsum(mask2, dim=0) - 1 + mask1.sum(dim=0, keepdim=True)
    l_aux = torch.mean(gates.mean(dim=0) * mask1.float().mean(dim=0)) * num_experts * num_experts
    exp_counts = (mask1 + mask2).sum(dim=0).detach()
    if drop_tokens:
        capacity = _capacity(num_tokens, num_experts, capacity_factor * 2, min_capacity)
        mask1 = mask1 * (locations1 < capacity)
        mask2 = mask2 * (locations2 < capacity)
    else:
        capacity = int(_max_over_group(exp_counts.max(), ep_group))
    gates1 = (gates * mask1).sum(dim=1)
    gates2 = (gates * mask2).sum(dim=1)
    denominator = torch.clamp(gates1 + gates2, min=torch.finfo(gates.dtype).eps)
    choices = [(gates1 / denominator, mask1, torch.sum(locations1 * mask1, dim=1)),
               (gates2 / denominator, mask2, torch.sum(locations2 * mask2, dim=1))]
    return _gating_result(l_aux, choices, capacity, exp_counts, return_routes)


class TopKGate(torch.nn.Module):
    """DeepSpeed's gate: a bias-free ``Linear(model_dim, num_experts)`` (``wg``) and top-``k`` gating, k 1 or 2,
    with ``capacity_factor`` in training and ``eval_capacity_factor`` otherwise; noise only in training."""

    def __init__(self, model_dim: int, num_experts: int, k: int = 1, capacity_factor: float = 1.0,
                 eval_capacity_factor: float = 1.0, min_capacity: int = 8, noisy_gate_policy: Optional[str] = None,
                 drop_tokens: bool = True, use_rts: bool = True, ep_group: Any = None,
                 top2_2nd_expert_sampling: bool = True) -> None:
        super().__init__()
        if k not in (1, 2):
            raise ValueError(f"TopKGate(k={k!r}): only top-1 and top-2 gating are supported")
        if noisy_gate_policy not in NOISY_GATE_POLICIES:
            raise ValueError(f"noisy_gate_policy={noisy_gate_policy!r}: expected None, 'Jitter' or 'RSample'")
        self.wg = torch.nn.Linear(model_dim, num_experts, bias=False)
        self.k, self.ep_group = k, ep_group
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        self.min_capacity, self.drop_tokens, self.use_rts = min_capacity, drop_tokens, use_rts
        self.noisy_gate_policy = None if noisy_gate_policy == "None" else noisy_gate_policy
        self.top2_2nd_expert_sampling = top2_2nd_expert_sampling

    def _set_ep_group(self, ep_group: Any) -> None:
        self.ep_group = ep_group

    def forward(self, inputs: torch.Tensor, used_token: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(l_aux, combine_weights, dispatch_mask, exp_counts)`` of the gating of ``inputs`` (S, model_dim)."""
        return self._gate(inputs, used_token, return_routes=False)

    def routes(self, inputs: torch.Tensor, used_token: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, Routes, torch.Tensor]:
        """``(l_aux, routes, exp_counts)``: the same gating as ``forward`` (same noise, same results), with the
        :class:`Routes` instead of the dense (S, E, C) weights and mask. :class:`MOELayer` calls this instead of
        the module (so forward hooks of the gate do not run); a subclass that changes ``forward`` changes this too."""
        return self._gate(inputs, used_token, return_routes=True)

    def _gate(self, inputs: torch.Tensor, used_token: Optional[torch.Tensor], return_routes: bool) -> Tuple:
        x = inputs.float()
        if self.noisy_gate_policy == "Jitter" and self.training:
            x = multiplicative_jitter(x)
        logits = F.linear(x, self.wg.weight.float())
        factor = self.capacity_factor if self.training else self.eval_capacity_factor
        if self.k == 1:
            return top1gating(logits, factor, self.min_capacity, used_token,
                              self.noisy_gate_policy if self.training else None, self.drop_tokens, self.use_rts,
                              self.ep_group, return_routes=return_routes)
        return top2gating(logits, factor, self.min_capacity, self.drop_tokens, self.ep_group,
                          self.top2_2nd_expert_sampling, return_routes=return_routes)


class MOELayer(torch.nn.Module):
    """Gate, dispatch, experts, combine (GShard's algorithm). With ``ep_size`` > 1 the experts of the layer
    are split over the expert-parallel group (``num_local_experts`` here) and tokens travel with all-to-all.
    After a forward, ``l_aux`` and ``exp_counts`` hold the gate's results.

    Dispatch and combine run the ``moe_dispatch`` op on the gate's routes (``gate.routes(...)`` when the gate has
    that method, as :class:`TopKGate` does; else :func:`routes_from_masks` of the combine weights its forward
    returns); ``dispatcher`` says which path that op takes on a device (``dispatcher("cpu").backend``)."""

    def __init__(self, gate: torch.nn.Module, experts: torch.nn.Module, ep_group_name: str, ep_size: int,
                 num_local_experts: int, use_tutel: bool = False) -> None:
        super().__init__()
        self.gate, self.experts = gate, experts
        self.ep_group, self.ep_group_name = None, ep_group_name
        self.ep_size, self.num_local_experts = ep_size, num_local_experts
        self.l_aux: Optional[torch.Tensor] = None
        self.exp_counts: Optional[torch.Tensor] = None

    def _set_ep_group(self, ep_group: Any) -> None:
        self.ep_group = ep_group
        self.gate._set_ep_group(ep_group)

    def forward(self, *inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        hidden = inputs[0]
        d_model = hidden.shape[-1]
        tokens = hidden.reshape(-1, d_model)
        used_token = inputs[1] if len(inputs) > 1 else None
        from accelops.ops.moe_dispatch import moe_combine, moe_dispatch

        own_routes = hasattr(self.gate, "routes")
        if own_routes:
            self.l_aux, routes, self.exp_counts = self.gate.routes(tokens, used_token)
        else:  # a gate with DeepSpeed's four results only
            self.l_aux, combine, _dispatch, self.exp_counts = self.gate(tokens, used_token)
            routes = routes_from_masks(combine)
        # the gating functions make routes in range and one per buffer row: no index check (no device sync);
        # another gate's weights could put two tokens in one row, which the check reports
        dispatched = moe_dispatch(tokens, routes.expert, routes.slot, routes.num_experts, routes.capacity,
                                  check_routes=not own_routes)
        if self.ep_size > 1:
            if self.ep_group is None:
                raise RuntimeError(f"this MoE layer splits its experts over {self.ep_size} ranks but has no "
                                   f"expert-parallel group: call set_deepspeed_parallelism() (accelops.initialize does)")
            dispatched = _AllToAll.apply(self.ep_group, dispatched)
        expert_output = self.experts(dispatched.reshape(self.ep_size, self.num_local_experts, -1, d_model))
        expert_output = expert_output.reshape(self.ep_size * self.num_local_experts, -1, d_model)
        if self.ep_size > 1:
            expert_output = _AllToAll.apply(self.ep_group, expert_output)
        combined = moe_combine(expert_output.reshape(routes.num_experts, routes.capacity, d_model), routes.expert,
                               routes.slot, routes.gate, check_routes=False)  # checked by moe_dispatch
        return combined.reshape(hidden.shape)

    @staticmethod
    def dispatcher(device: Any = "cpu") -> Any:
        """The ``moe_dispatch`` op's front end on ``device``: ``backend`` (``"kernel"`` or ``"torch"``) and
        ``backend_reason``."""
        from accelops.ops.moe_dispatch import MoEDispatcher

        return MoEDispatcher(device)
