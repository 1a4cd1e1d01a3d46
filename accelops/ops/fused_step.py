"""The device glue of a fused (multi-tensor CUDA) optimizer op, written once for the family.

A fused op is a ``torch.library`` custom op (``accelops::fused_adam_step_``, ``accelops::fused_lion_step_``)
whose default implementation runs its torch reference on any device (with a one-time warning), whose CUDA
kernel runs the compiled extension (``<builder NAME>_step``, loaded on first use; the torch reference with a
one-time warning when it cannot be built) and whose fake implementation only validates. ``FusedStep`` is
all of that for one op, given its builder, its validator and its torch reference::

    _STEP = FusedStep(FusedAdamBuilder, "FusedAdam", check_step, _adam_torch_)

    @torch.library.custom_op("accelops::fused_adam_step_", mutates_args=(...))
    def fused_adam_step_(params: List[Tensor], ...) -> None:
        _STEP.fallback(params, ...)

    _STEP.register(fused_adam_step_)

The torch reference takes the op's arguments, in the op's order; the validator takes some of them, by the
op's argument names (``check_step(params, grads, exp_avgs, labels=None)``), and raises the clear Python error.

Validation: a direct call of the op validates in Python before the extension sees anything. The optimizers
call the op inside ``fast_path()``: then the CUDA kernel goes to the extension first, which checks every
input itself before it launches anything (constant-message checks; a formatted C++ message once segfaulted
under a mismatched C++ runtime), and only on its error does the Python validator run to name the culprit.
That keeps the per-step path free of per-tensor Python checks.
"""
from __future__ import annotations

import inspect
import threading
import warnings
from contextlib import contextmanager
from types import ModuleType
from typing import Callable, Iterator, Optional, Type

from .loader import callers_stacklevel, kernel_loader

__all__ = ["FusedStep"]


class FusedStep:
    """One fused optimizer op's loader, warnings, validation and device implementations.

    ``builder`` is the op's builder class (its ``NAME``, e.g. ``fused_adam``, names the op in messages and
    its extension's function ``<NAME>_step``); ``owner`` the optimizer's name in warnings (``FusedAdam``);
    ``check`` the op's validator; ``reference`` its torch implementation, with the op's signature.
    """

    def __init__(self, builder: Type, owner: str, check: Callable[..., None], reference: Callable[..., None]):
        self.name = builder.NAME
        self.owner = owner
        self.check = check
        self.reference = reference
        self.loader = kernel_loader(builder, f"{owner}: the {self.name} CUDA op is unavailable ({{reason}}); using "
                                             f"the torch fallback")
        self.warned: set = set()
        self.tls = threading.local()  # fast_path: set by the optimizer around its own op calls
        self.op = None  # the custom op, once registered
        self._signature = inspect.signature(reference)
        self._checked = [name for name in inspect.signature(check).parameters if name != "labels"]

    def module(self) -> Optional[ModuleType]:
        """The loaded extension, or None (with a one-time warning) when it cannot be built."""
        return self.loader.module()

    def warn_once(self, key: str, message: str) -> None:
        """A ``RuntimeWarning`` naming the user's line, once per ``key`` and process."""
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=callers_stacklevel())

    @contextmanager
    def fast_path(self) -> Iterator[None]:
        """Op calls inside go to the extension unvalidated (see the module docstring); for the optimizers."""
        self.tls.fast_path = True
        try:
            yield
        finally:
            self.tls.fast_path = False

    def _args(self, args, kwargs) -> tuple:
        """The op's arguments, all positional, defaults filled in."""
        if kwargs or len(args) < len(self._signature.parameters):
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound.args
        return args

    def validate(self, args: tuple) -> None:
        """Run the validator on the op's (positional) arguments: a clear Python error for bad input."""
        named = dict(zip(self._signature.parameters, args))
        self.check(*(named[name] for name in self._checked))

    def fallback(self, *args, **kwargs) -> None:
        """The op's default implementation (every device without a kernel): validate, warn once, run the torch
        reference."""
        args = self._args(args, kwargs)
        self.validate(args)
        params = args[0]
        device = params[0].device.type if params else "cpu"
        self.warn_once(f"fallback:{device}", f"{self.owner}: no fused kernel for device '{device}'; using the torch "
                                             f"fallback")
        self.reference(*args)

    def cuda(self, *args, **kwargs) -> None:
        """The op's CUDA (and ROCm) kernel: the extension, or the torch reference when it cannot be built."""
        args = self._args(args, kwargs)
        fast = getattr(self.tls, "fast_path", False)
        if not fast:  # a direct call: bad input raises here, before the extension sees it
            self.validate(args)
        module = self.module()
        if module is None:
            if fast:
                self.validate(args)  # the torch reference has no C++ checks
            self.reference(*args)
            return
        try:
            getattr(module, f"{self.name}_step")(*args)
        except RuntimeError:
            self.validate(args)  # name the bad tensor (the C++ message is a constant string)
            raise

    def fake(self, *args, **kwargs) -> None:
        """The op's fake implementation: validation only (the op returns nothing)."""
        self.validate(self._args(args, kwargs))

    def register(self, op) -> None:
        """Register the CUDA kernel and the fake implementation of ``op`` (the custom op of this step)."""
        op.register_kernel("cuda")(self.cuda)
        op.register_fake(self.fake)
        self.op = op
