"""Shared machinery of the fused (multi-tensor CUDA) optimizers (``FusedAdam``, ``FusedLion``).

A subclass names its op (``_STEP``, a ``FusedStep``), the state tensors the op takes (``_STATE_KEYS``, in the
op's order, after params and grads; ``_STEPS_IN_OP`` when the step counts follow them), its state validator
(``_check_state``) and implements
``_op_scalars`` (the op's arguments after the tensor lists, from a param group). This base creates the state
with torch's keys (a float32 ``step`` tensor per param on its device, counting the steps that param took;
state tensors in the param dtype or ``state_dtype``), reports the path it runs (``backend``), runs one op call
per param group and names the culprit when the op rejects its input (nothing is updated then, step counts
included), and loads state_dicts of torch and DeepSpeed (an int ``step`` per param, or per group) without
rounding the saved state, refusing another optimizer's or another model's state before anything changes.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ._distinct_params import DistinctParamsMixin
from .fused_step import FusedStep
from .fused_validate import optimizer_labels
from .optim_args import check_saved_tensor, keep_group_settings

__all__ = ["FusedOptimizerBase"]


class FusedOptimizerBase(DistinctParamsMixin, torch.optim.Optimizer):
    """Base of the fused optimizers; not used directly."""

    _STEP: FusedStep
    #: The state tensors of a param (besides ``step``), in the order the op takes them after params and grads.
    _STATE_KEYS: Sequence[str] = ()
    #: True when the op takes each param's step count (already incremented) after the state tensors.
    _STEPS_IN_OP: bool = False
    #: Group options of torch's optimizers that the op cannot honour: a state_dict turning one on is refused.
    _REFUSED_OPTIONS: Sequence[str] = ("maximize",)
    #: Group keys that choose the update rule: fixed at construction, never taken from a loaded state_dict.
    _RULE_KEYS: Sequence[str] = ()
    #: The op's validator of one param's state, ``check_state(labels, i, p, state, device, first=0)``
    #: (``staticmethod`` of its ``validate.check_state``): run on each state loaded from a state_dict.
    _check_state: Callable[..., None]

    def __init__(self, params, defaults: Dict[str, Any], set_grad_none: bool, state_dtype) -> None:
        if state_dtype not in (None, torch.float32):
            raise ValueError(f"state_dtype must be None (param dtype) or torch.float32, got {state_dtype}")
        super().__init__(params, defaults)
        self.set_grad_none = set_grad_none
        self.state_dtype = state_dtype

    def _owner(self) -> str:
        return self._STEP.owner

    def _devices(self):
        return {p.device.type for group in self.param_groups for p in group["params"]}

    @property
    def backend(self) -> str:
        """``"kernel"`` when every param is on a CUDA/ROCm device and the fused op loads (it loads on first use),
        else ``"torch"`` (the pure-torch step; see ``backend_reason``)."""
        return "kernel" if self._torch_reason() is None else "torch"

    @property
    def backend_reason(self) -> Optional[str]:
        """Why this path runs: why the pure-torch step runs, or, while the fused kernel does, where its module
        was loaded from (prebuilt, JIT cache, JIT build)."""
        return self._torch_reason() or self._STEP.loader.kernel_reason

    def _torch_reason(self) -> Optional[str]:
        """Why the pure-torch step runs, or None while the fused kernel does."""
        others = sorted(self._devices() - {"cuda"})
        if others:
            return f"no fused kernel for device {', '.join(others)}"
        if self._STEP.loader.module() is None:
            return self._STEP.loader.reason
        return None

    def zero_grad(self, set_to_none=None):
        """Clear grads; ``set_to_none`` defaults to the constructor's ``set_grad_none``."""
        super().zero_grad(set_to_none=self.set_grad_none if set_to_none is None else set_to_none)

    def _init_state(self, p: Tensor, state: Dict[str, Tensor]) -> None:
        want = self.state_dtype or p.dtype
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for key in self._STATE_KEYS:
            state[key] = torch.zeros_like(p, dtype=want, memory_format=torch.contiguous_format)

    def _refuse_foreign_state(self, state_dict) -> None:
        """Raise before anything is loaded for options the op cannot honour or state of other params."""
        owner = self._owner()
        for g, group in enumerate(state_dict["param_groups"]):
            for option in self._REFUSED_OPTIONS:
                if group.get(option):
                    raise ValueError(f"{owner}: group {g} of the state_dict has {option}=True, which {owner} does "
                                     f"not support")
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, p in zip(ids, params):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            missing = {"step", *self._STATE_KEYS} - set(saved)
            if missing:
                raise ValueError(f"{owner}: state of param {pid} lacks {sorted(missing)}: a state_dict of another "
                                 f"optimizer?")
            for key in self._STATE_KEYS:
                if tuple(check_saved_tensor(owner, saved[key], key, pid).shape) != tuple(p.shape):
                    raise ValueError(f"{owner}: state {key!r} of param {pid} has shape {tuple(saved[key].shape)}, "
                                     f"the param {tuple(p.shape)}: a state_dict of another model?")

    @staticmethod
    def _with_param_steps(state_dict):
        """DeepSpeed's fused optimizers may keep one ``step`` per group (old FusedAdam checkpoints; FusedLion
        starts a param's count from it): give it to each param's state that lacks its own."""
        if not any("step" in group for group in state_dict["param_groups"]):
            return state_dict
        state = dict(state_dict["state"])
        for group in state_dict["param_groups"]:
            for pid in group["params"]:
                if pid in state and "step" not in state[pid] and "step" in group:
                    state[pid] = {**state[pid], "step": group["step"]}
        return {**state_dict, "state": state}

    def load_state_dict(self, state_dict):
        """Load like torch, but keep the saved state's precision (torch casts state to the param dtype, which
        would round fp32 state of 16-bit params) up to ``state_dtype``; ``step`` (an int in DeepSpeed's) becomes
        a float32 tensor on the param's device, and saved keys the op does not use are dropped. State of other
        params, or options the op lacks, are refused before anything changes."""
        state_dict = self._with_param_steps(state_dict)
        self._refuse_foreign_state(state_dict)
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved = state_dict["state"]
        before = [dict(group) for group in self.param_groups]
        super().load_state_dict(state_dict)
        keep_group_settings(self._owner(), self.param_groups, before, state_dict["param_groups"], self._RULE_KEYS)
        params = [p for group in self.param_groups for p in group["params"]]
        for k, (pid, p) in enumerate(zip(ids, params)):
            if pid not in saved:
                continue
            want = self.state_dtype or p.dtype
            tensors = {key: saved[pid][key].to(device=p.device, dtype=want, memory_format=torch.contiguous_format,
                                               copy=True) for key in self._STATE_KEYS}
            step = torch.as_tensor(saved[pid]["step"], dtype=torch.float32).to(p.device, copy=True)
            self.state[p] = state = {"step": step, **tensors}
            labels = optimizer_labels(self._owner(), lambda _: k, "of the loaded state_dict")
            self._check_state(labels, k, p, state, p.device, first=k)

    def _group_tensors(self, group):
        """(params, grads, [one list per state key], steps) of a group's params that have grads, unchecked:
        the op checks them (see ``FusedStep``) and ``_explain_bad_group`` names the culprit on failure."""
        params, grads, steps = [], [], []
        states: List[List[Tensor]] = [[] for _ in self._STATE_KEYS]
        state_of = self.state
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            state = state_of[p]
            if not state:
                self._init_state(p, state)
            params.append(p)
            grads.append(g)
            for lst, key in zip(states, self._STATE_KEYS):
                lst.append(state[key])
            steps.append(state["step"])
        return params, grads, states, steps

    def _op_lists(self, params, grads, states, steps) -> list:
        """The op's tensor-list arguments."""
        return [params, grads, *states] + ([steps] if self._STEPS_IN_OP else [])

    def _explain_bad_group(self, group) -> None:
        """Raise the validator's clear error naming the first param (index in its group) whose grad or state
        the op cannot take; return quietly when every param looks fine."""
        indexes = [i for i, p in enumerate(group["params"]) if p.grad is not None]
        params = [group["params"][i] for i in indexes]
        states = [self.state[p] for p in params]
        lists = self._op_lists(params, [p.grad for p in params], [[s.get(key) for s in states]
                                                                   for key in self._STATE_KEYS],
                               [s.get("step") for s in states])
        self._STEP.check(*lists, labels=optimizer_labels(self._owner(), lambda k: indexes[k]))

    def _op_scalars(self, group, device: torch.device) -> tuple:
        """The op's arguments after its tensor lists, for ``group`` (whose params are on ``device``)."""
        raise NotImplementedError

    def _skip_flag(self, scalars: tuple) -> Optional[Tensor]:
        """The flag (among the op's scalar arguments) that made the op skip the step when non-zero, or None."""
        return None

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step over every param with a gradient; returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states, steps = self._group_tensors(group)
            if params:
                self._step_group(group, params, grads, states, steps)
        return loss

    def _step_group(self, group, params, grads, states, steps) -> None:
        """One op call over a group's tensors; step counts go up by one, unless the step is skipped."""
        scalars = self._op_scalars(group, params[0].device)
        counted = False
        with self._STEP.fast_path():
            try:
                torch._foreach_add_(steps, 1)
                counted = True
                self._STEP.op(*self._op_lists(params, grads, states, steps), *scalars)
            except (RuntimeError, TypeError, ValueError):
                # Bad input is rejected before anything is updated: undo the step count, then name the
                # culprit by its index in the group (the op's message counts params with grads only).
                if counted:
                    torch._foreach_sub_(steps, 1)
                self._explain_bad_group(group)
                raise
        skipped = self._skip_flag(scalars)
        if skipped is not None:  # a skipped step is not counted (GradScaler may sum flags: 2.0 is one skip)
            torch._foreach_sub_(steps, [(skipped != 0).to(torch.float32)] * len(steps))
