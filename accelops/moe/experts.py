"""``deepspeed.moe.experts.Experts``: this rank's experts of one MoE layer, copies of the given expert."""
from __future__ import annotations

import copy
from typing import List, Optional

import torch


class Experts(torch.nn.Module):
    """``num_local_experts`` deep copies of ``expert`` (``deepspeed_experts``). Their parameters are marked as
    DeepSpeed marks them: ``allreduce = False`` (reduced only over the expert-data-parallel group) and
    ``group_name`` (the layer's expert group, ``ep_size_<n>``). ``forward`` splits its input along dimension
    1 into one chunk per local expert and concatenates their outputs (a tuple output's first item)."""

    def __init__(self, expert: torch.nn.Module, num_local_experts: int = 1,
                 expert_group_name: Optional[str] = None) -> None:
        super().__init__()
        self.deepspeed_experts = torch.nn.ModuleList([copy.deepcopy(expert) for _ in range(num_local_experts)])
        self.num_local_experts = num_local_experts
        for local in self.deepspeed_experts:
            for param in local.parameters():
                param.allreduce = False
                param.group_name = expert_group_name

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs: List[torch.Tensor] = []
        for chunk, expert in zip(inputs.chunk(self.num_local_experts, dim=1), self.deepspeed_experts):
            out = expert(chunk)
            outputs.append(out[0] if isinstance(out, tuple) else out)
        return torch.cat(outputs, dim=1)
