"""The training engine that ``accelops.initialize`` returns: DeepSpeed's ``DeepSpeedEngine`` surface on
torch's DDP (ZeRO stage 0) and FSDP2 (stages 1 to 3); see :mod:`accelops.runtime.parallel`.

The loop is DeepSpeed's: ``loss = engine(batch)``, ``engine.backward(loss)``, ``engine.step()`` once per
micro-batch. DeepSpeed facts followed (deepspeed/runtime/engine.py):

* ``is_gradient_accumulation_boundary()`` is ``(micro_steps + 1) % gradient_accumulation_steps == 0``;
  ``step()`` counts ``micro_steps`` on every call and updates the weights only on a boundary.
* ``backward(loss)`` divides the loss by ``gradient_accumulation_steps`` (``scale_wrt_gas``) and returns
  that divided loss; gradients are synchronised across ranks only on boundary micro-steps.
* A boundary step clips to ``gradient_clipping`` with the global norm, steps the optimizer, then the LR
  scheduler (not on a skipped step), zeroes the gradients and adds 1 to ``global_steps`` and
  ``train_batch_size`` to ``global_samples`` (skipped steps count there too, as in DeepSpeed).
* fp16: the loss is multiplied by the loss scale before backward; a step whose gradients hold inf/nan on
  any rank is skipped on every rank (``skipped_steps``), and the dynamic scale is updated
  (:mod:`accelops.runtime.loss_scaler`). Gradients are unscaled with the scale read before that update.
  bf16 skips such steps too while ``bf16.check_grad_overflow`` is true (DeepSpeed's default).
* ``engine.monitor`` (the config's tensorboard/csv_monitor/wandb/comet sections, :mod:`accelops.monitor`):
  after every boundary step, skipped or not, rank 0 writes ``Train/Samples/lr`` (first param group) and with
  fp16 ``Train/Samples/loss_scale``, at step ``global_samples`` (DeepSpeed 0.19's engine writes no
  ``train_loss`` outside pipeline parallelism).
* ``flops_profiler`` (:mod:`accelops.profiling.flops_profiler.engine_hooks`): rank 0 profiles the forward
  passes of global step ``profile_step`` and prints the profile at the end of each ``step()`` of that step.

Mixed precision, accelops' way: parameters, gradients, the gradient reduction and the optimizer state stay
fp32 (the fp32 master weights *are* the model's parameters) and forward runs under
``torch.autocast(device, dtype=bf16/fp16)``. It is the same on every ZeRO stage, so stages give the same
trajectory and checkpoints move between them. The model must therefore be given in fp32 when fp16 or
bf16 is enabled (DeepSpeed converts it itself).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .._logging import get_logger
from ..profiling.flops_profiler.engine_hooks import EngineFlopsProfiling, FlopsProfilerAccessors
from .config import EngineConfig
from .dataloader import make_dataloader
from .grads import clip_factor, global_norm, scale_
from . import moe_support
from .offload_states import StateOffloader, parse_device, parse_include
from .zero import materialize as zero_materialize
from .zero.offload_config import OffloadDeviceEnum, OffloadStateTypeEnum
from .loss_scaler import create_loss_scaler, has_overflow, torch_all_reduce_max
from .optimizers import (as_param_list, build_optimizer, client_optimizer, client_scheduler, drop_empty_groups,
                         optimizer_params)
from ..utils.tensor_fragment import link_params
from .parallel import (Parallel, bind_optimizer, clear_local_grads, held_tensors, local_grads, model_param_names,
                       sync_local_grads, wrap_model)

logger = get_logger(__name__)
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _can_pin() -> bool:
    """True when pinned (page-locked) host memory can be allocated (a CUDA/ROCm runtime is there)."""
    return torch.cuda.is_available()


class LossScaleValue(float):
    """``engine.loss_scale``: the current loss scale as a float that may also be called.

    DeepSpeed's engine has a *method* ``loss_scale()`` (it returns the config's static ``loss_scale``, 0
    when dynamic); scripts also read the current scale. Here ``engine.loss_scale`` and
    ``engine.loss_scale()`` both give the scale in use now (1.0 without fp16)."""

    def __call__(self) -> float:
        return float(self)


class _DisabledMonitor:
    """``engine.monitor`` when no monitor section is enabled: ``enabled`` False, writes nothing (DeepSpeed's
    MonitorMaster with every section off)."""
    enabled = False

    def write_events(self, event_list: Any) -> None:
        """Accept and drop ``(name, value, step)`` events."""

    def close(self) -> None:
        """Nothing to close."""


class DeepSpeedEngine(FlopsProfilerAccessors, torch.nn.Module):
    """DeepSpeed's training engine (see the module docstring); made by :func:`accelops.initialize`.

    ``module`` is the client's model (with FSDP, sharded in place); ``optimizer`` the optimizer (or None
    when neither the client nor the config gave one; ``backward``/``step`` then raise); ``lr_scheduler``
    the scheduler or None; ``training_dataloader`` a DataLoader when ``training_data`` was given.
    """

    def __init__(self, model: torch.nn.Module, config: EngineConfig, rank: int, local_rank: int, world_size: int,
                 device: torch.device, args: Any = None, optimizer: Any = None, model_parameters: Any = None,
                 training_data: Any = None, lr_scheduler: Any = None, collate_fn: Optional[Callable] = None,
                 raw_config: Any = None):
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"initialize(model=...) must be a torch.nn.Module, got a {type(model).__name__}")
        self._config = config
        self.config = raw_config
        self.args = args
        self.global_rank, self.local_rank, self.world_size = rank, local_rank, world_size
        self.dp_rank, self.dp_world_size = self._data_parallel_place(model, rank, world_size)
        self.device = device
        self.collate_fn = collate_fn
        self.global_steps = self.global_samples = self.micro_steps = self.skipped_steps = 0
        self._global_grad_norm: Optional[float] = None
        self._boundary_override: Optional[bool] = None
        self._inside_no_sync = False
        self._report_no_effect()
        self._check_dtypes(model)
        self.monitor = self._make_monitor()
        offload, pin_memory = self._offload()

        self.module = model
        fqn_of = model_param_names(model)
        basic = self._make_optimizer(optimizer, model_parameters, model, on_cpu=offload or None)
        zero_init = self._take_zero_init_params(model)
        model._apply(lambda t: t if t.is_meta else t.to(device))  # model.to(device), meta parameters left alone
        self._has_moe = self._setup_moe(model)
        self._parallel = self._wrap_model(model, offload, pin_memory)
        if zero_init:
            zero_materialize.fill(model, zero_init, torch.device("cpu") if offload else device)
        if basic is not None:
            bind_optimizer(basic, fqn_of, model, self._parallel)
        self.optimizer = self.basic_optimizer = basic
        link_params(model, basic, held_tensors(basic, self._parallel))  # for safe_get_full_*
        self.lr_scheduler = self._make_scheduler(lr_scheduler)
        self.loss_scaler = create_loss_scaler(config.fp16)
        self.training_dataloader = None if training_data is None else self.deepspeed_io(training_data)
        self._gloo_group = self._make_gloo_group()
        self._flops = EngineFlopsProfiling(self)  # DeepSpeed's flops_profiler section
        self.flops_profiler = self._flops.profiler
        self._states = StateOffloader()

    # ------------------------------------------------------------------ construction
    def _report_no_effect(self) -> None:
        if self._config.no_effect and self.global_rank == 0:
            logger.warning("config keys that have no effect in accelops (they tune DeepSpeed's own implementation "
                           "or feed DeepSpeed tools): %s", ", ".join(self._config.no_effect))

    def _make_monitor(self) -> Any:
        """DeepSpeed's ``engine.monitor``: a :class:`accelops.monitor.MonitorMaster` for the config's
        tensorboard/csv_monitor/wandb/comet sections (ImportError naming the package when an enabled
        section's package is missing; writers on rank 0 only). Imported only when a section is enabled."""
        if not self._config.monitor.enabled:
            return _DisabledMonitor()
        from ..monitor import MonitorMaster

        return MonitorMaster(self._config.monitor, rank=self.global_rank)

    def _write_step_events(self) -> None:
        """After a boundary step, rank 0 writes ``Train/Samples/lr`` (first param group) and, with fp16,
        ``Train/Samples/loss_scale``, at ``global_samples`` (DeepSpeed 0.19's ``step()``)."""
        if not self.monitor.enabled or self.global_rank != 0:
            return
        lrs = self.get_lr()
        events = [("Train/Samples/lr", lrs[0] if lrs else 0.0, self.global_samples)]
        if self.fp16_enabled():
            events.append(("Train/Samples/loss_scale", float(self.loss_scaler.loss_scale), self.global_samples))
        self.monitor.write_events(events)

    def _check_dtypes(self, model: torch.nn.Module) -> None:
        precision = self._config.precision
        if precision == "fp32":
            return
        for name, param in model.named_parameters():
            if param.is_floating_point() and param.dtype != torch.float32:
                raise TypeError(f"{precision} is enabled but parameter {name!r} is {param.dtype}: accelops keeps "
                                f"fp32 master weights and computes in {precision} with autocast, so pass the model "
                                f"in float32 (do not call .half()/.bfloat16() on it)")

    def _offload(self) -> Tuple[bool, bool]:
        """(offload, pin_memory) for ZeRO-Offload: either offload section with ``device: cpu`` offloads the
        sharded master weights, gradients and optimizer state to CPU memory (FSDP2's CPU offload policy,
        see :mod:`accelops.runtime.parallel`); pinned unless a section says ``pin_memory: false``, and only
        when the accelerator can pin (a CPU rank's memory needs no pinning)."""
        zero = self._config.zero
        sections = [s for s in (zero.offload_optimizer, zero.offload_param) if s.enabled]
        if not sections:
            return False, False
        pin = all(s.pin_memory for s in sections) and self.device.type != "cpu"
        return True, pin and _can_pin()

    def _setup_moe(self, model: torch.nn.Module) -> bool:
        """Give the model's MoE layers their expert groups (:mod:`accelops.runtime.moe_support`); True when
        it has any. ValueError at ZeRO stages 1-3, which do not handle expert parameters yet."""
        layers = moe_support.moe_layers(model)
        if not layers:
            return False
        if self._config.zero_optimization_stage == 3:
            raise ValueError("mixture-of-experts layers are not supported with ZeRO stage 3 (as in DeepSpeed): "
                             "use stage 0, 1 or 2")
        moe_support.setup(model)
        moe_support.broadcast_experts(model)
        return True

    def _data_parallel_place(self, model: torch.nn.Module, rank: int, world_size: int) -> Tuple[int, int]:
        """(this rank's index among the data-parallel ranks, their number): every rank is one here."""
        return rank, world_size

    def _wrap_model(self, model: torch.nn.Module, offload: bool, pin_memory: bool) -> Parallel:
        """DDP or FSDP2 for the ZeRO stage over every rank (:func:`accelops.runtime.parallel.wrap_model`)."""
        config = self._config
        return wrap_model(model, config.zero_optimization_stage, self.world_size, self.device,
                          _AUTOCAST.get(config.communication_data_type or ""), units=config.accelops.fsdp_units,
                          offload=offload, pin_memory=pin_memory,
                          ignore=moe_support.expert_param_names(model) if self._has_moe else ())

    def _take_zero_init_params(self, model: torch.nn.Module) -> Dict[str, torch.nn.Parameter]:
        """For a model built inside ``zero.Init`` (:mod:`accelops.runtime.zero.materialize`): at stage 0 its
        parameters are gathered whole; at stages 1-3 they become meta parameters in the model, and the
        returned zero parameters (by name) fill the FSDP2 shards after wrapping. Empty for any other model."""
        params = zero_materialize.zero_params(model)
        if not params:
            return {}
        zero_materialize.check_world(params, self.global_rank, self.world_size)
        if self._config.zero_optimization_stage == 0:
            zero_materialize.gather_whole(params)
            return {}
        return zero_materialize.prepare(model)

    def _make_optimizer(self, optimizer: Any, model_parameters: Any, model: torch.nn.Module,
                        on_cpu: Optional[bool] = None) -> Optional[torch.optim.Optimizer]:
        config = self._config.optimizer
        if optimizer is None and config is None:
            return None
        params = as_param_list(model_parameters, model)
        if optimizer is not None:
            if config is not None and self.global_rank == 0:
                logger.warning("initialize() got an optimizer and the config names one (%s); the client's optimizer "
                               "is used, as in DeepSpeed", config.type)
            built = client_optimizer(optimizer, params)
        else:
            built = build_optimizer(config, params, on_cpu=on_cpu)
        drop_empty_groups(built)
        return built

    def _make_scheduler(self, lr_scheduler: Any) -> Any:
        if lr_scheduler is not None:
            if self.optimizer is None:
                raise ValueError("initialize() got an lr_scheduler but no optimizer (neither the optimizer argument "
                                 "nor the config's optimizer section)")
            return client_scheduler(lr_scheduler, self.optimizer)
        if self._config.scheduler is None:
            return None
        if self.optimizer is None:
            raise ValueError("the config names a scheduler but there is no optimizer (neither the optimizer "
                             "argument nor the config's optimizer section)")
        from .lr_schedules import build_scheduler

        return build_scheduler(self.optimizer, self._config.scheduler)

    def _make_gloo_group(self) -> Any:
        """A gloo group for the checkpoint barriers' timeouts when the default group is not gloo (NCCL has no
        monitored_barrier); None when it is gloo or in a world of one."""
        import torch.distributed as dist

        if self.world_size == 1 or dist.get_backend() == "gloo":
            return None
        return dist.new_group(backend="gloo")

    def _checkpoint_group(self) -> Any:
        return self._gloo_group

    # ------------------------------------------------------------------ config accessors (DeepSpeed's names)
    def train_batch_size(self) -> int:
        return self._config.train_batch_size

    def train_micro_batch_size_per_gpu(self) -> int:
        return self._config.train_micro_batch_size_per_gpu

    def gradient_accumulation_steps(self) -> int:
        return self._config.gradient_accumulation_steps

    def zero_optimization_stage(self) -> int:
        return self._config.zero_optimization_stage

    def zero_optimization(self) -> bool:
        return self._config.zero_optimization_stage > 0

    def fp16_enabled(self) -> bool:
        return self._config.fp16.enabled

    def bfloat16_enabled(self) -> bool:
        return self._config.bf16.enabled

    bf16_enabled = bfloat16_enabled

    def dynamic_loss_scale(self) -> bool:
        return self._config.fp16.enabled and self._config.fp16.dynamic_loss_scale

    def gradient_clipping(self) -> float:
        return self._config.gradient_clipping

    def steps_per_print(self) -> Optional[int]:
        return self._config.steps_per_print

    def dataloader_drop_last(self) -> bool:
        return self._config.dataloader_drop_last

    @property
    def loss_scale(self) -> LossScaleValue:
        return LossScaleValue(self.loss_scaler.loss_scale)

    def get_global_grad_norm(self) -> Optional[float]:
        """The global 2-norm of the gradients of the last boundary step, before clipping (inf on a skipped
        step); None before the first step."""
        return self._global_grad_norm

    def get_lr(self) -> List[Any]:
        """The lr of every param group (DeepSpeed: 0.0 for a group without one; [] without optimizer)."""
        return [] if self.optimizer is None else [g.get("lr", 0.0) for g in self.optimizer.param_groups]

    def get_mom(self) -> List[Any]:
        """The momentum of every param group (``momentum`` for SGD, ``betas`` otherwise), as DeepSpeed."""
        if self.optimizer is None:
            return []
        key = "momentum" if isinstance(self.optimizer, torch.optim.SGD) else "betas"
        return [g.get(key, 0.0) for g in self.optimizer.param_groups]

    # ------------------------------------------------------------------ accumulation boundary
    def is_gradient_accumulation_boundary(self) -> bool:
        """True when the current micro-batch ends an accumulation: its backward synchronises gradients and
        the next ``step()`` updates the weights."""
        if self._boundary_override is not None:
            return self._boundary_override
        return (self.micro_steps + 1) % self.gradient_accumulation_steps() == 0

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        """Override the boundary (DeepSpeed's API); ``None`` returns to counting micro-steps."""
        if is_boundary is not None and not isinstance(is_boundary, bool):
            raise TypeError(f"is_boundary must be True, False or None, got {is_boundary!r}")
        self._boundary_override = is_boundary

    # ------------------------------------------------------------------ training
    def train(self, mode: bool = True) -> "DeepSpeedEngine":
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) takes True or False, got {mode!r}")
        self.training = mode
        self._parallel.runner.train(mode)  # the DDP wrapper too (it is the module itself otherwise)
        return self

    def eval(self) -> "DeepSpeedEngine":
        return self.train(False)

    def _autocast(self):
        dtype = _AUTOCAST.get(self._config.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _synchronises_gradients(self) -> bool:
        """Whether the next backward reduces gradients across ranks: on a boundary, outside ``no_sync``."""
        return self.is_gradient_accumulation_boundary() and not self._inside_no_sync

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """The model's forward (under autocast with fp16/bf16). With DDP, gradients of a non-boundary
        micro-batch (or inside ``no_sync``) are kept local (DDP's ``no_sync``)."""
        self._require_states("forward")
        runner = self._parallel.runner
        sync = contextlib.nullcontext()
        if self._parallel.kind == "ddp" and not self._synchronises_gradients():
            sync = runner.no_sync()
        with self._flops.forward(self), self._autocast(), sync:
            return runner(*inputs, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """DeepSpeed's context manager: backward passes inside it keep their gradients local to the rank
        (accumulated, not reduced); the first backward outside it on a boundary reduces the sum. Only with
        ZeRO stages 0 and 1 (AssertionError otherwise, as in DeepSpeed: stages 2 and 3 shard gradients as
        they are made); ``step()`` inside it and re-entering it are AssertionErrors too."""
        stage = self.zero_optimization_stage()
        if stage >= 2:
            raise AssertionError(f"no_sync context manager is incompatible with gradient partitioning logic of ZeRO "
                                 f"stage {stage}")
        if self._inside_no_sync:
            raise AssertionError("no_sync context manager reentry is unsupported")
        self._inside_no_sync = True
        try:
            yield
        finally:
            self._inside_no_sync = False

    def _require_optimizer(self, what: str) -> None:
        if self.optimizer is None:
            raise RuntimeError(f"engine.{what}() needs an optimizer: pass optimizer= to initialize() or name one in "
                               f"the config's optimizer section")

    def backward(self, loss: torch.Tensor, retain_graph: bool = False, scale_wrt_gas: bool = True) -> torch.Tensor:
        """Backpropagate ``loss`` (a scalar tensor) divided by ``gradient_accumulation_steps`` (when
        ``scale_wrt_gas``) and multiplied by the fp16 loss scale; returns the divided (unscaled) loss."""
        self._require_states("backward")
        self._require_optimizer("backward")
        if not torch.is_tensor(loss) or loss.numel() != 1:
            what = f"a tensor of shape {tuple(loss.shape)}" if torch.is_tensor(loss) else f"a {type(loss).__name__}"
            raise TypeError(f"engine.backward(loss) needs a scalar loss tensor, got {what}")
        if not loss.requires_grad:
            raise RuntimeError("engine.backward(loss): the loss does not require grad (computed under torch.no_grad(), "
                               "or from no trainable parameters?)")
        divided = loss / self.gradient_accumulation_steps() if scale_wrt_gas else loss
        scale = self.loss_scaler.loss_scale
        to_backward = divided * scale if scale != 1.0 else divided
        if self._parallel.sharded:
            self.module.set_requires_gradient_sync(self._synchronises_gradients())
        to_backward.backward(retain_graph=retain_graph)
        return divided

    def step(self, lr_kwargs: Optional[dict] = None) -> None:
        """End a micro-batch: on an accumulation boundary, update the weights (module docstring).
        AssertionError inside ``no_sync`` (as in DeepSpeed)."""
        if self._inside_no_sync:
            raise AssertionError("It is illegal to call Engine.step() inside no_sync context manager")
        self._require_states("step")
        self._require_optimizer("step")
        if self.is_gradient_accumulation_boundary():
            self._take_model_step(lr_kwargs)
            self._write_step_events()
        self.micro_steps += 1
        self._flops.after_step(self)

    def _take_model_step(self, lr_kwargs: Optional[dict]) -> None:
        if self._has_moe:
            moe_support.reduce_expert_grads(self.module, self.world_size)
        sync_local_grads(self._parallel, self.module)
        grads = local_grads(optimizer_params(self.optimizer))
        scale = self.loss_scaler.loss_scale  # read before update(): the scale these gradients carry
        overflow = False
        if self.fp16_enabled() or (self.bfloat16_enabled() and self._config.bf16.check_grad_overflow):
            all_reduce_max = torch_all_reduce_max(device=self.device) if self.world_size > 1 else None
            overflow = self.loss_scaler.update(has_overflow(grads), all_reduce_max)
        if overflow:
            self.skipped_steps += 1
            self._global_grad_norm = math.inf
        else:
            scale_(grads, 1.0 / scale)
            norm = self._global_grad_norm_of(grads)
            self._global_grad_norm = norm
            scale_(grads, clip_factor(norm, self.gradient_clipping()))
            self.optimizer.step()
            if self.lr_scheduler is not None:
                self.lr_scheduler.step(**(lr_kwargs or {}))
        self.zero_grad()
        self.global_steps += 1
        self.global_samples += self.train_batch_size()
        every = self.steps_per_print()
        if every and self.global_steps % every == 0 and self.global_rank == 0:
            logger.info("step=%d, skipped=%d, lr=%s, mom=%s", self.global_steps, self.skipped_steps, self.get_lr(),
                        self.get_mom())

    # ------------------------------------------------------------------ offloading states
    def _state_tensors(self) -> Dict[OffloadStateTypeEnum, List[torch.Tensor]]:
        params = list(self.module.parameters()) + [local for _, local in self._parallel.local_pairs]
        optim_states = [value for state in self.optimizer.state.values() for value in state.values()
                        if torch.is_tensor(value) and value.dim() > 0]
        return {OffloadStateTypeEnum.optim_states: optim_states, OffloadStateTypeEnum.hp_params: params,
                OffloadStateTypeEnum.lp_grads: [p.grad for p in params if p.grad is not None]}

    def offload_states(self, include: Any = None, device: Any = OffloadDeviceEnum.cpu, pin_memory: bool = True,
                       non_blocking: bool = False) -> None:
        """Free the memory of the engine's states until :meth:`reload_states` (DeepSpeed's API; what each
        state type is and how: :mod:`accelops.runtime.offload_states`). ``include``: state types (None: all);
        ``device``: ``OffloadDeviceEnum.cpu``; ``pin_memory``: pin the CPU copies (when a CUDA runtime is
        there). The engine refuses to train or save until the states are reloaded."""
        chosen = parse_include(include)
        if self._config.zero.offload_param.enabled:
            raise RuntimeError("offload_states: moving states across devices is not supported with offload_param "
                               "configured (the parameters already live in CPU memory)")
        self._require_optimizer("offload_states")
        if parse_device(device) is None:
            return
        self._states.offload(self._state_tensors(), chosen, pin=bool(pin_memory) and _can_pin(),
                             non_blocking=bool(non_blocking))

    def reload_states(self, non_blocking: bool = False) -> None:
        """Bring back every state :meth:`offload_states` moved, bit-exact (nothing when none is offloaded)."""
        self._states.reload(bool(non_blocking))

    def _require_states(self, what: str) -> None:
        if self._states.offloaded:
            names = sorted(kind.value for kind in self._states.offloaded)
            raise RuntimeError(f"engine.{what}(): the engine's states {names} are offloaded; call "
                               f"engine.reload_states() first")

    def _gather_over_stages(self, value: Any) -> List[Any]:
        """``value`` of every stage of this rank's pipeline, in stage order (a collective over the pipeline):
        here, without pipeline stages, ``[value]``."""
        return [value]

    def _global_grad_norm_of(self, grads: List[torch.Tensor]) -> float:
        """The 2-norm of the whole model's gradients (``grads``: this rank's, already reduced)."""
        if self._has_moe:
            return moe_support.global_norm(self.module, self._parallel.sharded, self.device)
        return global_norm(grads, self._parallel.sharded, reduce_on=self.device)

    def destroy(self) -> None:
        """Release what the engine holds besides the model (DeepSpeed's name): the optimizer's resources
        (its ``destroy()`` when it has one), the engine's own gloo group, and the monitors' open files. Do not
        train with it after."""
        if self.optimizer is not None and callable(getattr(self.optimizer, "destroy", None)):
            self.optimizer.destroy()
        if self._gloo_group is not None:
            import torch.distributed as dist

            dist.destroy_process_group(self._gloo_group)
            self._gloo_group = None
        self.monitor.close()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient of the model (and of the optimizer's local shards)."""
        for param in self.module.parameters():
            param.grad = None
        clear_local_grads(self._parallel)

    # ------------------------------------------------------------------ data and state
    def deepspeed_io(self, dataset: Any, batch_size: Optional[int] = None, route: str = "train",
                     pin_memory: bool = True, data_sampler: Any = None, collate_fn: Optional[Callable] = None,
                     num_local_io_workers: Optional[int] = None) -> torch.utils.data.DataLoader:
        """A DataLoader of this rank's share of ``dataset`` (see :mod:`accelops.runtime.dataloader`)."""
        return make_dataloader(dataset, batch_size or self.train_micro_batch_size_per_gpu(), self.dp_world_size,
                               self.dp_rank, self.dataloader_drop_last(), self.device.type, route=route,
                               pin_memory=pin_memory, data_sampler=data_sampler,
                               collate_fn=collate_fn if collate_fn is not None else self.collate_fn,
                               num_local_io_workers=num_local_io_workers)

    def module_state_dict(self, destination: Any = None, prefix: str = "", keep_vars: bool = False,
                          exclude_frozen_parameters: bool = False) -> dict:
        """The model's state dict with full (unsharded) tensors. With ZeRO stages 1-3 this gathers the
        shards: a collective that every rank must call; every rank gets the full tensors."""
        if self._parallel.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True))
            state = {prefix + key: value for key, value in state.items()}
        else:
            state = self.module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        if exclude_frozen_parameters:
            frozen = {prefix + name for name, param in self.module.named_parameters() if not param.requires_grad}
            state = type(state)((key, value) for key, value in state.items() if key not in frozen)
        return state

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, save_dir: Any, tag: Any = None, client_state: Optional[dict] = None,
                        save_latest: bool = True, exclude_frozen_parameters: bool = False,
                        client_sd: Optional[dict] = None) -> bool:
        """Save model, optimizer, scheduler, loss scaler, counters and ``client_state`` (the guide calls it
        ``client_sd``; either name) under ``save_dir/tag`` with torch.distributed.checkpoint, atomically,
        and point ``save_dir/latest`` at it. Every rank must call it. See :mod:`accelops.runtime.checkpoint`."""
        self._require_states("save_checkpoint")
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, save_dir, tag=tag, client_state=client_state, save_latest=save_latest,
                               exclude_frozen_parameters=exclude_frozen_parameters, client_sd=client_sd)

    def load_checkpoint(self, load_dir: Any, tag: Any = None, load_module_strict: bool = True,
                        load_optimizer_states: bool = True, load_lr_scheduler_states: bool = True,
                        load_module_only: bool = False, custom_load_fn: Any = None) -> tuple:
        """Load a checkpoint of :meth:`save_checkpoint` (any world size, any ZeRO stage); ``tag`` None reads
        ``load_dir/latest``. Returns ``(path, client_state)``, or ``(None, None)`` when there is nothing to
        load. Every rank must call it."""
        self._require_states("load_checkpoint")
        from .checkpoint import load_checkpoint

        return load_checkpoint(self, load_dir, tag=tag, load_module_strict=load_module_strict,
                               load_optimizer_states=load_optimizer_states,
                               load_lr_scheduler_states=load_lr_scheduler_states, load_module_only=load_module_only,
                               custom_load_fn=custom_load_fn)

    def save_16bit_model(self, save_dir: Any, save_filename: str = "pytorch_model.bin",
                         exclude_frozen_parameters: bool = False) -> bool:
        """Rank 0 writes the full model state dict to ``save_dir/save_filename`` with ``torch.save``, its
        floating-point tensors in the compute dtype (bf16/fp16; fp32 without mixed precision). A collective
        with ZeRO stages 1-3 (the shards are gathered). Returns True."""
        import os

        state = self.module_state_dict(exclude_frozen_parameters=exclude_frozen_parameters)
        dtype = _AUTOCAST.get(self._config.precision)
        if self.global_rank == 0:
            os.makedirs(save_dir, exist_ok=True)
            state = {k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype)
                     for k, v in state.items()}
            torch.save(state, os.path.join(save_dir, save_filename))
        return True

    def __getattr__(self, name: str) -> Any:
        """Attributes the engine lacks come from the client's model, as in DeepSpeed."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" in modules:
                return getattr(modules["module"], name)
            raise
