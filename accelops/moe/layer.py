"""``deepspeed.moe.layer.MoE``: a mixture-of-experts layer (DeepSpeed's signature and meaning).

``MoE(hidden_size, expert, num_experts, ep_size, k, ...)`` holds ``num_experts / ep_size`` copies of
``expert`` on each rank (the layer's experts are split over ``ep_size`` ranks) and a top-``k`` gate;
``forward(hidden_states, used_token=None)`` returns ``(output, l_aux, exp_counts)``. With ``use_residual``
it is a Residual MoE: ``expert`` itself also runs as a dense MLP and a learned two-way softmax mixes the two
outputs. The expert-parallel groups are made by ``set_deepspeed_parallelism()``, which
:func:`accelops.initialize` calls for every MoE layer of the model (on every rank, in module order).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .experts import Experts
from .sharded_moe import MOELayer, NOISY_GATE_POLICIES, TopKGate


class MoE(torch.nn.Module):
    """DeepSpeed's MoE layer (module docstring). ValueError when ``ep_size`` does not divide ``num_experts``,
    for ``k`` other than 1 or 2, an unknown ``noisy_gate_policy``, or expert tensor parallelism."""

    def __init__(self, hidden_size: int, expert: torch.nn.Module, num_experts: int = 1, ep_size: int = 1, k: int = 1,
                 capacity_factor: float = 1.0, eval_capacity_factor: float = 1.0, min_capacity: int = 4,
                 use_residual: bool = False, noisy_gate_policy: Optional[str] = None, drop_tokens: bool = True,
                 use_rts: bool = True, use_tutel: bool = False, enable_expert_tensor_parallelism: bool = False,
                 top2_2nd_expert_sampling: bool = True) -> None:
        super().__init__()
        if not isinstance(expert, torch.nn.Module):
            raise TypeError(f"MoE(expert=...) must be a torch.nn.Module, got a {type(expert).__name__}")
        if ep_size < 1 or num_experts < 1 or num_experts % ep_size:
            raise ValueError(f"MoE: the number of experts ({num_experts}) must be a multiple of the expert-parallel "
                             f"size ({ep_size})")
        if noisy_gate_policy not in NOISY_GATE_POLICIES:
            raise ValueError(f"MoE(noisy_gate_policy={noisy_gate_policy!r}): expected None, 'Jitter' or 'RSample'")
        if enable_expert_tensor_parallelism:
            raise ValueError("MoE(enable_expert_tensor_parallelism=True): accelops has no tensor parallelism")
        self.use_residual = use_residual
        self.enable_expert_tensor_parallelism = False
        self.ep_size, self.num_experts = ep_size, num_experts
        self.num_local_experts = num_experts // ep_size
        self.expert_group_name = f"ep_size_{ep_size}"
        experts = Experts(expert, self.num_local_experts, self.expert_group_name)
        gate = TopKGate(hidden_size, num_experts, k, capacity_factor, eval_capacity_factor, min_capacity,
                        noisy_gate_policy, drop_tokens, use_rts, None, top2_2nd_expert_sampling)
        self.deepspeed_moe = MOELayer(gate, experts, self.expert_group_name, ep_size, self.num_local_experts)
        if use_residual:
            self.mlp = expert
            self.coefficient = torch.nn.Linear(hidden_size, 2)

    def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
        """Make (once per ``ep_size``) and attach the expert-parallel group. A collective: every rank calls it
        for the same layers in the same order."""
        from ..utils import groups

        if self.expert_group_name not in groups._get_expert_parallel_group_dict():
            groups._create_expert_and_data_parallel(self.ep_size,
                                                    use_data_before_expert_parallel_=use_data_before_expert_parallel_)
        self.deepspeed_moe._set_ep_group(groups._get_expert_parallel_group(self.expert_group_name))

    def forward(self, hidden_states: torch.Tensor, used_token: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(output, l_aux, exp_counts)`` for ``hidden_states`` (..., hidden_size)."""
        output = self.deepspeed_moe(hidden_states, used_token)
        if self.use_residual:
            dense = self.mlp(hidden_states)
            dense = dense[0] if isinstance(dense, tuple) else dense
            coefficient = F.softmax(self.coefficient(hidden_states), dim=-1)
            output = output * coefficient[..., 0:1] + dense * coefficient[..., 1:]
        return output, self.deepspeed_moe.l_aux, self.deepspeed_moe.exp_counts
