"""``deepspeed.checkpointing``: activation checkpointing on ``torch.utils.checkpoint`` (non-reentrant).

DeepSpeed 0.19 facts followed (deepspeed/runtime/activation_checkpointing/checkpointing.py; the module is
``deepspeed.checkpointing`` after ``import deepspeed``):

* ``checkpoint(function, *args, **kwargs)`` runs ``function`` without keeping its activations and runs it
  again in backward. It returns what ``function`` returned: a tensor as it is; a list or tuple as a tuple
  of all its items, tensors and others (a one-item sequence as that item). Non-tensor arguments pass
  through; tensor keyword arguments take part in autograd like positional ones.
* Recomputation replays randomness: the CPU generator and the generators of the arguments' devices are
  restored (torch does this), and so are the states of the model-parallel RNG tracker
  (``get_cuda_rng_tracker()``) as they were when the forward started, so that dropout run under
  ``get_cuda_rng_tracker().fork()`` draws the same mask again.
* ``configure(mpu_, deepspeed_config=None, ...)`` sets the module's options, each argument given overriding
  the config's ``activation_checkpointing`` section; ``is_configured()`` says whether it was called;
  ``reset()`` drops buffers kept between forward and backward (none here) and leaves the options.
* ``get_cuda_rng_tracker()`` / ``model_parallel_cuda_manual_seed(seed)``: Megatron's RNG tracker; the
  default generator is seeded with ``seed`` and the tracked state ``"model-parallel-rng"`` with
  ``seed + 2718 + tensor-model-parallel rank``. The accelerator's generator is used (the CPU generator on
  the CPU accelerator).

The options, without model parallelism (accelops has none: ``mpu_`` must be None or report a
model-parallel world size of 1, else ValueError):

* ``checkpoint_in_cpu`` / ``cpu_checkpointing``: the floating-point tensors a checkpoint keeps for
  backward (its inputs) are copied to CPU memory (pinned when the accelerator allows) and copied back
  for recomputation, through torch's saved-tensor hooks. Tensors already on the CPU stay as they are.
* ``partition_activations``: DeepSpeed splits the kept inputs across the model-parallel ranks; with one
  model-parallel rank the split is the whole tensor, so it changes nothing here.
* ``contiguous_checkpointing`` / ``contiguous_memory_optimization`` and ``num_checkpoints`` /
  ``number_checkpoints``: DeepSpeed copies the partitions into preallocated buffers; no effect here, but
  as in DeepSpeed it needs ``partition_activations`` and ``num_checkpoints`` (else ValueError).
* ``synchronize`` / ``synchronize_checkpoint_boundary``: the accelerator is synchronized before and after
  each checkpointed forward and each recomputation.
* ``profile``: rank 0 logs the time of each checkpointed forward and of each recomputation (DeepSpeed
  logs the whole backward of the checkpoint).

Differences from DeepSpeed: ``checkpoint`` and ``non_reentrant_checkpoint`` both use torch's
non-reentrant checkpoint, so parameters get gradients even when no input requires grad, and
``torch.autograd.grad`` works (DeepSpeed's reentrant ``checkpoint`` refuses it); ``CheckpointFunction`` is
kept as a name whose ``apply(run_function, all_outputs, *args)`` calls ``checkpoint``; errors are
ValueError/TypeError with a message instead of bare ``Exception``/``assert``.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ..._logging import get_logger
from ..activation_checkpointing_config import ActivationCheckpointingConfig, parse_activation_checkpointing

logger = get_logger(__name__)

# DeepSpeed's module state, under DeepSpeed's names (scripts and tests read and set them).
deepspeed_checkpointing_enabled = False
mpu = None
mp_rank = 0
mp_size = 1
mp_group = None
num_layers: Optional[int] = None
PARTITION_ACTIVATIONS = False
CPU_CHECKPOINT = False
CONTIGUOUS_CHECKPOINTING = False
SYNCHRONIZE = False
PROFILE_TIME = False

_MODEL_PARALLEL_RNG_TRACKER_NAME = "model-parallel-rng"


def _accelerator():
    from ...accelerator import get_accelerator
    return get_accelerator()


def _global_rank() -> int:
    from ...comm import get_rank
    return get_rank()


def _check_seed(seed: Any, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{what} must be an integer, got {seed!r} ({type(seed).__name__})")
    return seed


# ---------------------------------------------------------------------------------------------- RNG tracker
class CudaRNGStatesTracker:
    """Named RNG states of the accelerator's generator (Megatron's tracker, DeepSpeed's name).

    ``add(name, seed)`` records the state the generator has after ``manual_seed(seed)``; ``fork(name)``
    runs its block from that state and keeps the advanced state for the next fork, then puts back the
    generator's own state. ``get_states`` is a shallow copy of {name: state}; ``set_states`` replaces it.
    """

    def __init__(self) -> None:
        self.states_: Dict[str, Any] = {}
        self.seeds_: set = set()

    def reset(self) -> None:
        """No tracked states and no used seeds."""
        self.states_ = {}
        self.seeds_ = set()

    def get_states(self) -> Dict[str, Any]:
        return copy.copy(self.states_)

    def set_states(self, states: Dict[str, Any]) -> None:
        if not isinstance(states, dict):
            raise TypeError(f"set_states takes the dict that get_states returned, got a {type(states).__name__}")
        self.states_ = states

    def add(self, name: str, seed: int) -> None:
        """Track the state of the accelerator's generator seeded with ``seed`` under ``name``; the
        generator's current state is left as it was. Each name and each seed can be added once."""
        _check_seed(seed)
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} is already tracked (each tracked RNG state needs its own seed)")
        if name in self.states_:
            raise ValueError(f"RNG state {name!r} is already tracked; reset() the tracker to seed it again")
        accelerator = _accelerator()
        original = accelerator.get_rng_state()
        accelerator.manual_seed(seed)
        self.states_[name] = accelerator.get_rng_state()
        accelerator.set_rng_state(original)
        self.seeds_.add(seed)

    @contextlib.contextmanager
    def fork(self, name: str = _MODEL_PARALLEL_RNG_TRACKER_NAME):
        """Run the block with the generator in the tracked state ``name``; afterwards the tracked state
        is the advanced one and the generator is back where it was."""
        if name not in self.states_:
            known = ", ".join(repr(n) for n in self.states_) or "none"
            raise ValueError(f"RNG state {name!r} is not tracked (tracked: {known}); add it with "
                             f"get_cuda_rng_tracker().add(name, seed) or model_parallel_cuda_manual_seed(seed)")
        accelerator = _accelerator()
        original = accelerator.get_rng_state()
        accelerator.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = accelerator.get_rng_state()
            accelerator.set_rng_state(original)


_CUDA_RNG_STATE_TRACKER = CudaRNGStatesTracker()


def get_cuda_rng_tracker() -> CudaRNGStatesTracker:
    """The module's RNG tracker (one per process)."""
    return _CUDA_RNG_STATE_TRACKER


def _tensor_model_parallel_rank(unit: Any) -> int:
    if unit is None:
        return 0
    for name in ("get_tensor_model_parallel_rank", "get_model_parallel_rank", "get_slice_parallel_rank"):
        if hasattr(unit, name):
            return int(getattr(unit, name)())
    return 0


def model_parallel_cuda_manual_seed(seed: int) -> None:
    """Seed the default generator with ``seed`` (the data-parallel stream, the same on every rank of a
    model-parallel group) and track ``"model-parallel-rng"`` seeded with ``seed + 2718 + tensor-model-parallel
    rank`` (0 here). Replaces ``manual_seed``: call it once, after ``configure``."""
    _check_seed(seed)
    tp_rank = _tensor_model_parallel_rank(mpu)
    model_parallel_seed = seed + 2718 + tp_rank
    if _global_rank() == 0:
        logger.info("> initializing model parallel seeds on global rank %d, model parallel rank %d: model parallel "
                    "seed %d, data parallel seed %d", _global_rank(), tp_rank, model_parallel_seed, seed)
    _CUDA_RNG_STATE_TRACKER.reset()
    _accelerator().manual_seed(seed)
    _CUDA_RNG_STATE_TRACKER.add(_MODEL_PARALLEL_RNG_TRACKER_NAME, model_parallel_seed)


def model_parallel_reconfigure_tp_seed(seed: int) -> None:
    """Re-seed the tracked ``"model-parallel-rng"`` state with ``seed + 2718 + tensor-model-parallel rank``."""
    _check_seed(seed)
    with _CUDA_RNG_STATE_TRACKER.fork():
        _accelerator().manual_seed(seed + 2718 + _tensor_model_parallel_rank(mpu))


# ---------------------------------------------------------------------------------------------- CPU checkpointing
def _to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of ``tensor``, in pinned memory when the accelerator allows it."""
    if tensor.layout is not torch.strided:
        return tensor.to("cpu")
    try:
        host = torch.empty(tensor.size(), dtype=tensor.dtype, pin_memory=True)
    except RuntimeError:
        host = torch.empty(tensor.size(), dtype=tensor.dtype)
    host.copy_(tensor)
    return host


def _offloaded(tensor: torch.Tensor) -> bool:
    """Whether CPU checkpointing moves ``tensor``: a floating-point tensor on a device (DeepSpeed moves only
    floating-point activations, and not those marked ``no_checkpointing``)."""
    return tensor.device.type != "cpu" and tensor.is_floating_point() and not getattr(tensor, "no_checkpointing",
                                                                                         False)


def _pack_to_cpu(tensor: torch.Tensor) -> Any:
    """Saved-tensor pack hook: ``(device, CPU copy)`` for a tensor that goes to CPU memory, else the tensor."""
    return (tensor.device, _to_host(tensor)) if _offloaded(tensor) else tensor


def _unpack_from_cpu(packed: Any) -> torch.Tensor:
    if isinstance(packed, torch.Tensor):
        return packed
    device, host = packed
    return host.to(device, non_blocking=host.is_pinned())


# ---------------------------------------------------------------------------------------------- checkpoint
# raised by torch to end a recomputation once every tensor backward needs has been recomputed
_EARLY_STOP = getattr(torch.utils.checkpoint, "_StopRecomputationError", ())


def _synchronize() -> None:
    _accelerator().synchronize()


class _Timed:
    """Synchronize and/or time a block, per the module's SYNCHRONIZE and PROFILE_TIME."""

    def __init__(self, what: str, synchronize: bool, profile: bool):
        self.what, self.synchronize, self.profile = what, synchronize, profile

    def __enter__(self):
        if self.synchronize or self.profile:
            _synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.synchronize or self.profile:
            _synchronize()
        finished = exc[0] is None or issubclass(exc[0], _EARLY_STOP)  # torch stops a recomputation early
        if self.profile and finished and _global_rank() == 0:
            logger.info("activation checkpointing: %s took %.3f ms", self.what,
                        (time.perf_counter() - self.start) * 1e3)
        return False


class _Recompute:
    """torch's recompute context (re-entered by each recomputation, e.g. after ``retain_graph=True``): the
    tracker's states as they were when the forward started, the later ones back afterwards."""

    def __init__(self, forward_states: Dict[str, Any], synchronize: bool, profile: bool):
        self.forward_states, self.timed = forward_states, _Timed("recomputation", synchronize, profile)
        self.backward_states: Dict[str, Any] = {}

    def __enter__(self):
        self.backward_states = _CUDA_RNG_STATE_TRACKER.get_states()
        _CUDA_RNG_STATE_TRACKER.set_states(copy.copy(self.forward_states))
        self.timed.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self.timed.__exit__(*exc)
        finally:
            _CUDA_RNG_STATE_TRACKER.set_states(self.backward_states)
        return False


def _context_fn(synchronize: bool, profile: bool) -> Callable[[], Tuple[Any, Any]]:
    """torch's ``context_fn``, called when the checkpointed forward starts (it snapshots the tracker)."""
    return lambda: (contextlib.nullcontext(), _Recompute(_CUDA_RNG_STATE_TRACKER.get_states(), synchronize, profile))


def _run(function: Callable, args: tuple, kwargs: dict) -> Any:
    """``function(*args, **kwargs)`` under torch's non-reentrant checkpoint with the module's options;
    returns what it returned."""
    if not callable(function):
        raise TypeError(f"checkpoint's first argument must be the function to run, got {function!r}")
    if kwargs:  # as positional arguments, so that no name can clash with torch's own keywords
        run, names, count = function, tuple(kwargs), len(args)

        def function(*all_args):  # noqa: F811 - the wrapped function
            return run(*all_args[:count], **dict(zip(names, all_args[count:])))

        args = args + tuple(kwargs.values())
    synchronize, profile = SYNCHRONIZE, PROFILE_TIME
    offload = torch.autograd.graph.saved_tensors_hooks(_pack_to_cpu, _unpack_from_cpu) if (
        CPU_CHECKPOINT and torch.is_grad_enabled()) else contextlib.nullcontext()
    with _Timed("forward", synchronize, profile), offload:
        return _torch_checkpoint(function, *args, use_reentrant=False, preserve_rng_state=True,
                                 context_fn=_context_fn(synchronize, profile))


def _as_deepspeed_returns(outputs: Any) -> Any:
    if isinstance(outputs, (list, tuple)):
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
    return outputs


def checkpoint(function: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` keeping only its inputs for backward, where it runs again with
    the same randomness. Returns its outputs: a tensor as it is, a list or tuple as a tuple (one item: the
    item), anything else as it is."""
    return _as_deepspeed_returns(_run(function, args, kwargs))


def non_reentrant_checkpoint(function: Callable, *args: Any) -> Any:
    """DeepSpeed's non-reentrant variant (what pipeline modules use with ``use_reentrant=False``); here
    the same as :func:`checkpoint`, as a distinct function object as in DeepSpeed."""
    return _as_deepspeed_returns(_run(function, args, {}))


class CheckpointFunction:
    """DeepSpeed's autograd Function name. ``CheckpointFunction.apply(run_function, all_outputs, *args)``
    runs :func:`checkpoint`, appends every output of ``run_function`` to the list ``all_outputs`` and
    returns its tensor outputs (one tensor, or a tuple), as DeepSpeed's does."""

    @staticmethod
    def apply(run_function: Callable, all_outputs: list, *args: Any) -> Any:
        if not isinstance(all_outputs, list):
            raise TypeError(f"CheckpointFunction.apply's second argument must be a list to receive the outputs, "
                            f"got a {type(all_outputs).__name__}")
        outputs = _run(run_function, args, {})
        if isinstance(outputs, torch.Tensor):
            all_outputs.append(outputs)
            return outputs
        all_outputs.extend(outputs)
        return tuple(o for o in outputs if isinstance(o, torch.Tensor))


# ---------------------------------------------------------------------------------------------- configuration
def _flag(name: str, value: Any) -> Optional[bool]:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"configure: {name} must be True, False or None, got {value!r} ({type(value).__name__})")
    return value


def _section(deepspeed_config: Any) -> ActivationCheckpointingConfig:
    """The ``activation_checkpointing`` section of a DeepSpeed config: a dict, a JSON file path, base64
    JSON (as DeepSpeed's ``DeepSpeedConfig`` takes), an accelops ``EngineConfig`` or the section itself."""
    if isinstance(deepspeed_config, ActivationCheckpointingConfig):
        return deepspeed_config
    section = getattr(deepspeed_config, "activation_checkpointing", None)
    if isinstance(section, ActivationCheckpointingConfig):  # an EngineConfig
        return section
    from ..config import _read
    raw = _read(deepspeed_config)
    return parse_activation_checkpointing(raw.get("activation_checkpointing"), [])


def _model_parallel(unit: Any) -> Tuple[int, int, Any]:
    """(rank, world size, group) of ``unit``'s (tensor-)model-parallel group; world size must be 1."""
    for prefix in ("get_tensor_model_parallel", "get_model_parallel"):
        size_of = getattr(unit, f"{prefix}_world_size", None)
        if callable(size_of):
            size = size_of()
            rank_of = getattr(unit, f"{prefix}_rank", None)
            group_of = getattr(unit, f"{prefix}_group", None)
            rank = rank_of() if callable(rank_of) else 0
            group = group_of() if callable(group_of) else None
            break
    else:
        raise ValueError(f"configure: mpu_ must be None or a model-parallel unit with get_model_parallel_world_size() "
                         f"(or get_tensor_model_parallel_world_size()), got {type(unit).__name__}")
    if size != 1:
        raise ValueError(f"configure: the mpu's model-parallel world size is {size}; accelops has no model "
                         f"parallelism, so activation checkpointing supports a model-parallel world size of 1 only")
    return int(rank), 1, group


def configure(mpu_: Any, deepspeed_config: Any = None, partition_activations: Optional[bool] = None,
              contiguous_checkpointing: Optional[bool] = None, num_checkpoints: Optional[int] = None,
              checkpoint_in_cpu: Optional[bool] = None, synchronize: Optional[bool] = None,
              profile: Optional[bool] = None) -> None:
    """Configure activation checkpointing (DeepSpeed's signature).

    ``mpu_``: None (keep the one given before) or a model-parallel unit whose model-parallel world size
    is 1. ``deepspeed_config``: a DeepSpeed config (dict, JSON path, base64 JSON, or an accelops
    ``EngineConfig``) whose ``activation_checkpointing`` section is read; every other argument that is
    not None overrides its key. See the module docstring for what each option does here. Raises
    ValueError for a value that cannot be honoured, ConfigError (a ValueError) for a bad config.
    """
    global mpu, mp_rank, mp_size, mp_group, num_layers, deepspeed_checkpointing_enabled
    global PARTITION_ACTIVATIONS, CONTIGUOUS_CHECKPOINTING, CPU_CHECKPOINT, SYNCHRONIZE, PROFILE_TIME

    flags = {name: _flag(name, value) for name, value in (
        ("partition_activations", partition_activations), ("contiguous_checkpointing", contiguous_checkpointing),
        ("checkpoint_in_cpu", checkpoint_in_cpu), ("synchronize", synchronize), ("profile", profile))}
    if num_checkpoints is not None and (isinstance(num_checkpoints, bool) or not isinstance(num_checkpoints, int)
                                        or num_checkpoints < 1):
        raise ValueError(f"configure: num_checkpoints must be a positive integer or None, got {num_checkpoints!r}")
    unit = mpu_ if mpu_ is not None else mpu
    parallel = _model_parallel(unit) if unit is not None else (0, 1, None)
    section = _section(deepspeed_config) if deepspeed_config is not None else ActivationCheckpointingConfig()

    def pick(name: str, from_config: Any) -> Any:
        return flags[name] if flags[name] is not None else from_config

    settings = dict(
        partition=pick("partition_activations", section.partition_activations),
        contiguous=pick("contiguous_checkpointing", section.contiguous_memory_optimization),
        layers=num_checkpoints if num_checkpoints is not None else section.number_checkpoints,
        cpu=pick("checkpoint_in_cpu", section.cpu_checkpointing),
        synchronize=pick("synchronize", section.synchronize_checkpoint_boundary),
        profile=pick("profile", section.profile))
    if settings["contiguous"] and not settings["partition"]:
        raise ValueError("configure: contiguous checkpointing works only with partitioned activations; set "
                         "partition_activations (activation_checkpointing.partition_activations) too")
    if settings["contiguous"] and settings["layers"] is None:
        raise ValueError("configure: contiguous checkpointing needs the number of checkpoints; give num_checkpoints "
                         "(activation_checkpointing.number_checkpoints)")

    mpu = unit
    mp_rank, mp_size, mp_group = parallel
    PARTITION_ACTIVATIONS, CONTIGUOUS_CHECKPOINTING = settings["partition"], settings["contiguous"]
    num_layers, CPU_CHECKPOINT = settings["layers"], settings["cpu"]
    SYNCHRONIZE, PROFILE_TIME = settings["synchronize"], settings["profile"]
    deepspeed_checkpointing_enabled = True
    if _global_rank() == 0:
        logger.info("Activation checkpointing: partition activations %s (no effect with one model-parallel rank), "
                    "CPU checkpointing %s, contiguous memory %s with %s checkpoints (no effect), synchronize %s, "
                    "profile %s", PARTITION_ACTIVATIONS, CPU_CHECKPOINT, CONTIGUOUS_CHECKPOINTING, num_layers,
                    SYNCHRONIZE, PROFILE_TIME)


def is_configured() -> bool:
    """True once :func:`configure` has been called."""
    return deepspeed_checkpointing_enabled


def reset() -> None:
    """DeepSpeed frees its contiguous checkpoint buffers here (for evaluation, where forwards run without
    backward); accelops keeps no such buffers, so there is nothing to free. The options stay."""


def partition_activations_in_checkpoint(partition_activation: bool) -> None:
    """Set ``partition_activations`` (no effect with one model-parallel rank)."""
    global PARTITION_ACTIVATIONS
    PARTITION_ACTIVATIONS = bool(_flag("partition_activation", partition_activation))


def set_num_layers(nlayers: Optional[int]) -> None:
    """Set the number of checkpoints (used by contiguous checkpointing, which has no effect here)."""
    global num_layers
    if nlayers is not None and (isinstance(nlayers, bool) or not isinstance(nlayers, int) or nlayers < 1):
        raise ValueError(f"set_num_layers: nlayers must be a positive integer or None, got {nlayers!r}")
    num_layers = nlayers


def _unconfigure() -> None:
    """Back to the state before any :func:`configure` (for tests)."""
    global mpu, mp_rank, mp_size, mp_group, num_layers, deepspeed_checkpointing_enabled
    global PARTITION_ACTIVATIONS, CONTIGUOUS_CHECKPOINTING, CPU_CHECKPOINT, SYNCHRONIZE, PROFILE_TIME
    mpu, mp_rank, mp_size, mp_group, num_layers = None, 0, 1, None, None
    PARTITION_ACTIVATIONS = CONTIGUOUS_CHECKPOINTING = CPU_CHECKPOINT = SYNCHRONIZE = PROFILE_TIME = False
    deepspeed_checkpointing_enabled = False
    _CUDA_RNG_STATE_TRACKER.reset()


__all__ = ["CheckpointFunction", "CudaRNGStatesTracker", "checkpoint", "configure", "get_cuda_rng_tracker",
           "is_configured", "model_parallel_cuda_manual_seed", "model_parallel_reconfigure_tp_seed",
           "non_reentrant_checkpoint", "partition_activations_in_checkpoint", "reset", "set_num_layers"]
