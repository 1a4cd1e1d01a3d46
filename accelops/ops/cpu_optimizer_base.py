"""Shared machinery of the CPU optimizers (``CPUAdam``, ``CPUAdagrad``, ``CPULion``).

A subclass names its op builder, its fp32 state keys and implements ``_update`` (one call per param
group with checked lists). This base checks every param/grad before anything is updated, creates the
fp32 state with torch's keys, counts steps like torch (a float32 scalar tensor ``step`` per param),
loads state_dicts from torch.optim and from DeepSpeed's CPU optimizers without rounding fp32 state to the
param dtype and without changing the update rule chosen at construction, and supports the master-weight
pattern: ``step(grads=..., param_copies=...)`` updates fp32 master params from (e.g. bf16) grads and writes
their bf16/fp16 copies in the same pass.
"""
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ._distinct_params import DistinctParamsMixin
from .cpu_optim_validate import check_param, check_state, checked_by_caller
from .loader import CPU_FALLBACK_ENV, kernel_loader
from .optim_args import check_saved_tensor, keep_group_settings

__all__ = ["CPUOptimizerBase", "DeepSpeedCPUOptimizer"]


class CPUOptimizerBase(DistinctParamsMixin, torch.optim.Optimizer):
    """Base of the CPU optimizers; not used directly."""

    _BUILDER: type
    _STATE_KEYS: Sequence[str] = ()
    _STATE_INIT: float = 0.0  # initial value of the first state tensor (Adagrad's initial_accumulator_value)
    #: Group keys that choose the update rule (Adam vs AdamW): fixed at construction, never taken from a loaded
    #: state_dict (DeepSpeed keeps its mode outside the groups, so its state_dicts do not carry it).
    _RULE_KEYS: Sequence[str] = ()
    #: State keys of DeepSpeed's layout that differ from ours: ``{ours: deepspeed's}`` (Adagrad's ``sum``).
    _DEEPSPEED_KEYS: Dict[str, str] = {}
    #: State keys DeepSpeed saves but never reads (its Lion keeps an unused ``exp_avg_sq``): dropped on load.
    _DEEPSPEED_UNUSED: Sequence[str] = ()
    #: False keeps the state in the param dtype (DeepSpeed's ``fp32_optimizer_states=False``); the math is fp32.
    _fp32_states: bool = True

    @property
    def backend(self) -> str:
        """``"kernel"`` when the compiled CPU op runs, ``"torch"`` for the pure-torch fallback (loads the op)."""
        return kernel_loader(self._BUILDER, fallback_env=CPU_FALLBACK_ENV).backend

    @property
    def backend_reason(self) -> Optional[str]:
        """Why this path runs: on the kernel path the op, its CPU tier and where it was loaded from (prebuilt,
        JIT cache, JIT build); on the torch path why the fallback runs (loads the op)."""
        return kernel_loader(self._BUILDER, fallback_env=CPU_FALLBACK_ENV).backend_reason

    def _name(self) -> str:
        return type(self).__name__

    def _check(self, where: str, p: Tensor, g: Tensor, copy: Optional[Tensor]) -> Tensor:
        """Raise a clear error for anything the step cannot update in place; returns a contiguous grad."""
        check_param(self._name(), where, p, g, copy)
        return g.contiguous()  # read-only: a copy of a strided grad is safe

    def _state_dtype(self, p: Tensor) -> torch.dtype:
        return torch.float32 if self._fp32_states else p.dtype

    def _state_for(self, p: Tensor, key: Any = None) -> Dict[str, Tensor]:
        """The state of ``p`` under ``key`` (default ``p``), created on first use."""
        state = self.state[p if key is None else key]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            for i, name in enumerate(self._STATE_KEYS):
                fill = self._STATE_INIT if i == 0 else 0.0
                state[name] = torch.full_like(p, fill, dtype=self._state_dtype(p),
                                              memory_format=torch.contiguous_format)
        return state

    def _check_state(self, where: str, p: Tensor, state: Dict[str, Tensor]) -> None:
        """Refuse state the kernel cannot update in place (e.g. loaded from another model's state_dict)."""
        for key in self._STATE_KEYS:
            check_state(self._name(), where, key, p, state.get(key), dtype=self._state_dtype(p))

    def _checked_lists(self, grads: Optional[Sequence[Optional[Tensor]]],
                       param_copies: Optional[Sequence[Optional[Tensor]]]):
        """Per group: (params, grads, [state lists], copies, steps), all checked before any update."""
        flat = [p for group in self.param_groups for p in group["params"]]
        for name, seq in (("grads", grads), ("param_copies", param_copies)):
            if seq is None:
                continue
            if not isinstance(seq, (list, tuple)):
                raise TypeError(f"{self._name()}: {name} must be a list or tuple with one tensor (or None) per "
                                f"param, got {type(seq).__name__}")
            if len(seq) != len(flat):
                raise ValueError(f"{self._name()}: {name} must have one entry per param ({len(flat)}), got {len(seq)}")
            bad = next((i for i, t in enumerate(seq) if t is not None and not isinstance(t, Tensor)), None)
            if bad is not None:
                raise TypeError(f"{self._name()}: {name}[{bad}] must be a tensor or None, got {type(seq[bad]).__name__}")
        out, k = [], 0
        for group in self.param_groups:
            ps, gs, cs, sts = [], [], [], []
            states: List[List[Tensor]] = [[] for _ in self._STATE_KEYS]
            for i, p in enumerate(group["params"]):
                g = grads[k] if grads is not None else p.grad
                c = param_copies[k] if param_copies is not None else None
                k += 1
                if g is None:
                    continue
                where = f"param {i} of group {len(out)} (shape {tuple(p.shape)})"
                g = self._check(where, p, g, c)
                state = self._state_for(p)
                self._check_state(where, p, state)
                ps.append(p)
                gs.append(g)
                cs.append(c)
                sts.append(state["step"])
                for lst, key in zip(states, self._STATE_KEYS):
                    lst.append(state[key])
            if param_copies is not None and any(c is None for c in cs) and not all(c is None for c in cs):
                raise ValueError(f"{self._name()}: param_copies must give a copy for every param with a grad, "
                                 f"or be None")
            copies = [c for c in cs if c is not None]
            out.append((group, ps, gs, states, copies, sts))
        return out

    @torch.no_grad()
    def step(self, closure=None, *, grads: Optional[Sequence[Optional[Tensor]]] = None,
             param_copies: Optional[Sequence[Optional[Tensor]]] = None):
        """One step over every param with a gradient; returns the closure's loss, if any.

        ``grads``: optional list with one entry per param (all groups, in order) used instead of
        ``p.grad`` (None skips a param); it may be float32, the param dtype, or the copies' dtype.
        ``param_copies``: optional list of contiguous bf16/fp16 tensors, one per float32 (master) param,
        overwritten with the updated params in the same pass. Everything is checked before any tensor is
        updated; a bad input raises and leaves params and state untouched.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, ps, gs, states, copies, steps in self._checked_lists(grads, param_copies):
            if ps:
                torch._foreach_add_(steps, 1.0)
                self._run_update(group, ps, gs, states, copies, [float(s) for s in steps])
        return loss

    def _run_update(self, group, params, grads, states, copies, steps) -> None:
        """``_update`` on checked lists; state kept in a low precision goes through fp32 copies."""
        work = [[t if t.dtype == torch.float32 else t.float() for t in lst] for lst in states]
        with checked_by_caller():
            self._update(group, params, grads, work, copies, steps)
        for lst, done in zip(states, work):
            for t, w in zip(lst, done):
                if w is not t:
                    t.copy_(w)

    def _update(self, group, params, grads, states, copies, steps) -> None:
        raise NotImplementedError

    def load_state_dict(self, state_dict) -> None:
        """Load like torch.optim, from torch's layout or DeepSpeed's (its key names, an int ``step``).

        The state becomes float32 and contiguous (torch would cast it to the param dtype; with
        ``fp32_optimizer_states=False`` it takes the param dtype). The update rule chosen at construction
        (``adamw_mode``) is kept, and group settings the saved groups lack keep this optimizer's values
        instead of defaults. State of another optimizer (other keys) or of other params (other shapes) is
        refused before anything changes."""
        state_dict = {**state_dict, "state": {pid: self._our_layout(pid, value)
                                              for pid, value in state_dict["state"].items()}}
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved = state_dict["state"]
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, p in zip(ids, params):
            if pid not in saved:
                continue
            for key in self._STATE_KEYS:
                if tuple(check_saved_tensor(self._name(), saved[pid][key], key, pid).shape) != tuple(p.shape):
                    raise ValueError(f"{self._name()}: state {key!r} of param {pid} has shape "
                                     f"{tuple(saved[pid][key].shape)}, the param {tuple(p.shape)}: a state_dict of "
                                     f"another model?")
        before = [dict(group) for group in self.param_groups]
        super().load_state_dict(state_dict)
        keep_group_settings(self._name(), self.param_groups, before, state_dict["param_groups"], self._RULE_KEYS)
        for pid, p in zip(ids, params):
            if pid not in saved:
                continue
            state = self.state[p]
            for key in self._STATE_KEYS:
                state[key] = saved[pid][key].to(dtype=self._state_dtype(p), memory_format=torch.contiguous_format,
                                                copy=True)
            state["step"] = torch.as_tensor(saved[pid]["step"], dtype=torch.float32).clone()

    def _our_layout(self, pid: Any, saved: Dict[str, Any]) -> Dict[str, Any]:
        """One param's saved state with DeepSpeed's key names mapped to ours; other keys are refused."""
        renamed = {key: value for key, value in saved.items() if key not in self._DEEPSPEED_UNUSED}
        for ours, theirs in self._DEEPSPEED_KEYS.items():
            if theirs in renamed and ours not in renamed:
                renamed[ours] = renamed.pop(theirs)
        wanted = {"step", *self._STATE_KEYS}
        if set(renamed) != wanted:
            raise ValueError(f"{self._name()}: state of param {pid} has keys {sorted(saved)}, expected "
                             f"{sorted(wanted)}: a state_dict of another optimizer?")
        return renamed


class DeepSpeedCPUOptimizer:
    """Mixin of the DeepSpeed-named CPU optimizers (``DeepSpeedCPUAdam``, ...): DeepSpeed's attributes
    (``opt_id`` counted per class from 0, ``fp32_optimizer_states``) and state_dicts in DeepSpeed's layout
    (its key names, an int ``step``), which DeepSpeed's own optimizers load. Loading takes either layout."""

    optimizer_id = 0

    def _deepspeed_setup(self, fp32_optimizer_states: bool) -> None:
        owner = type(self)
        self.opt_id = owner.optimizer_id
        owner.optimizer_id = self.opt_id + 1
        self.fp32_optimizer_states = bool(fp32_optimizer_states)
        self._fp32_states = self.fp32_optimizer_states

    def state_dict(self) -> Dict[str, Any]:
        """torch's state_dict with each param's state in DeepSpeed's layout (tensors shared, as torch shares
        them)."""
        sd = super().state_dict()
        renames = self._DEEPSPEED_KEYS
        sd["state"] = {pid: {(key if key == "step" else renames.get(key, key)): (int(value) if key == "step" else value)
                             for key, value in state.items()}
                       for pid, state in sd["state"].items()}
        return sd
