"""The engine ``initialize`` returns for a :class:`PipelineModule`: DeepSpeed's ``PipelineEngine`` surface
(``train_batch``, ``eval_batch``, ``is_first_stage``, ...) on ``torch.distributed.pipelining``.

Each rank is one stage of one pipeline (``PipelineStage`` over its pipeline's process group); a batch is
``gradient_accumulation_steps`` micro-batches run by a torch schedule: ``Schedule1F1B`` (DeepSpeed's own
schedule is 1F1B) or ``ScheduleGPipe``, chosen by the accelops-only config key ``accelops.pipeline_schedule``
(``"1f1b"``, ``"gpipe"``). accelops adds what DeepSpeed's engine does around the schedule.

DeepSpeed facts followed (deepspeed/runtime/pipe/engine.py): ``train_batch(data_iter)`` reads
``gradient_accumulation_steps`` micro-batches ``(inputs, labels)`` from the iterator (the first stage uses the
inputs, the last the labels; other stages read nothing), computes ``loss_fn(outputs, labels)`` on the last
stage, back-propagates the mean over micro-batches, sums the gradients of tied layers over their stages,
averages gradients over the data-parallel ranks, clips, takes one optimizer and
LR-scheduler step, and returns the mean loss (averaged over data-parallel ranks) on every rank as a tensor.
``forward``/``backward``/``step`` are not for pipelines (DeepSpeed raises too); ``train_batch`` under
``torch.no_grad`` is an error. ``train_batch_size = micro x accumulation x data-parallel size``. With a
monitor, rank 0 also writes ``Train/Samples/train_loss``.

Clipping, on purpose unlike DeepSpeed 0.19.8: the norm is the whole model's, over all stages, so the
trajectory does not depend on the number of stages (DeepSpeed's fp32 pipeline clips each stage by its own
norm, and its losses change with the stage count).

ZeRO stage 0 or 1, as DeepSpeed allows (at 1, each stage is sharded over its data-parallel group with
FSDP2, which the torch stage drives: one gradient reduction per batch). Limits: no ZeRO-Offload; a fixed
micro-batch shape (the schedule infers the activation shapes at the first batch).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from ..engine import DeepSpeedEngine
from ..parallel import Parallel
from .module import PipelineModule

SCHEDULES = {"1f1b": "Schedule1F1B", "gpipe": "ScheduleGPipe"}


class _Stage(torch.nn.Module):
    """What the torch stage calls: the pipeline module with the received tensors packed back into one
    argument (a tensor, or a tuple of them) as DeepSpeed's layers expect."""

    def __init__(self, module: PipelineModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> Any:
        return self.module(args[0] if len(args) == 1 else args)


def _as_args(value: Any) -> Tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _cat(micro_batches: List[Any]) -> Any:
    """The micro-batches joined along dimension 0 (tensors, or tuples of tensors), for the schedule to split."""
    first = micro_batches[0]
    if isinstance(first, (tuple, list)):
        return tuple(torch.cat([mb[i] for mb in micro_batches]) for i in range(len(first)))
    return torch.cat(micro_batches)


class PipelineEngine(DeepSpeedEngine):
    """DeepSpeed's ``PipelineEngine`` (module docstring); made by :func:`accelops.initialize` for a
    ``PipelineModule``."""

    def __init__(self, model: PipelineModule, config: Any, **kwargs: Any) -> None:
        if not isinstance(model, PipelineModule):
            raise TypeError(f"PipelineEngine needs a PipelineModule, got a {type(model).__name__}")
        if config.zero_optimization_stage > 1:
            raise ValueError(f"pipeline parallelism is not compatible with ZeRO stage {config.zero_optimization_stage} "
                             f"(as in DeepSpeed: stages 2 and 3 split gradients and parameters that every micro-batch "
                             f"of the pipeline needs); use stage 0 or 1")
        super().__init__(model, config, **kwargs)
        self.num_stages, self.stage_id = model.num_stages, model.stage_id
        self._pipe_group, self._pipe_ranks = model._groups["pipe"], model._groups["pipe_ranks"]
        self._data_group = model._groups["data"]
        self.data_iterator: Optional[Iterator] = None
        self.agg_train_loss: Optional[torch.Tensor] = None
        self._schedules: dict = {}
        if self.training_dataloader is not None and (self.is_first_stage() or self.is_last_stage()):
            from ..dataloader import RepeatingLoader

            self.set_dataiterator(RepeatingLoader(self.training_dataloader))

    # ------------------------------------------------------------------ construction hooks
    def _data_parallel_place(self, model: torch.nn.Module, rank: int, world_size: int) -> Tuple[int, int]:
        topo = model.topology()
        return topo.get_coord(rank).data, topo.get_dim("data")

    def _wrap_model(self, model: torch.nn.Module, offload: bool, pin_memory: bool) -> Parallel:
        """Every data-parallel copy of this stage takes its first copy's values; at ZeRO stage 1 with
        data parallelism the stage (wrapped for the torch stage, :class:`_Stage`) is sharded with FSDP2 over its
        data-parallel group, which then reduces the gradients; otherwise the engine averages them."""
        if offload:
            raise ValueError("pipeline parallelism in accelops does not support ZeRO-Offload")
        groups = model._groups
        if self.dp_world_size > 1:
            with torch.no_grad():
                for tensor in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(tensor.data, src=groups["data_ranks"][0], group=groups["data"])
        stage = _Stage(model)
        if self._config.zero_optimization_stage == 0 or self.dp_world_size == 1:
            return Parallel("none", stage)
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import fully_shard

        from ..parallel import fsdp_units

        mesh = DeviceMesh.from_group(groups["data"], self.device.type)
        tied = {id(m) for m in model.tied_modules.modules()}  # a forward_fn reads their tensors outside their
        for unit in fsdp_units(model, self._config.accelops.fsdp_units):  # forward: they stay in the root unit
            if id(unit) not in tied:
                fully_shard(unit, mesh=mesh, reshard_after_forward=False)
        fully_shard(stage, mesh=mesh, reshard_after_forward=False)
        return Parallel("fsdp", stage)

    # ------------------------------------------------------------------ DeepSpeed's pipeline accessors
    def is_first_stage(self) -> bool:
        return self.stage_id == 0

    def is_last_stage(self) -> bool:
        return self.stage_id == self.num_stages - 1

    def set_dataiterator(self, iterator: Iterator) -> None:
        """The iterator ``train_batch``/``eval_batch`` read when given none (first and last stages)."""
        self.data_iterator = iterator

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Only train_batch() is accessible in pipeline mode (and eval_batch())")

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Only train_batch() is accessible in pipeline mode (and eval_batch())")

    def step(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Only train_batch() is accessible in pipeline mode (and eval_batch())")

    # ------------------------------------------------------------------ running batches
    def _schedule(self, loss_fn: Optional[Callable]) -> Any:
        """The torch schedule (made once per kind of use: with or without a loss)."""
        key = loss_fn is not None
        if key not in self._schedules:
            from torch.distributed import pipelining

            name = self._config.accelops.pipeline_schedule
            stage = pipelining.PipelineStage(self._parallel.runner, self.stage_id, self.num_stages, self.device,
                                             group=self._pipe_group)
            schedule_cls = getattr(pipelining, SCHEDULES[name])
            self._schedules[key] = schedule_cls(stage, n_microbatches=self.gradient_accumulation_steps(),
                                                loss_fn=loss_fn, scale_grads=True)
        return self._schedules[key]

    def _micro_batches(self, data_iter: Optional[Iterator], count: int) -> Tuple[Any, Any]:
        """(inputs, labels) of ``count`` micro-batches joined, as this stage needs them (None elsewhere)."""
        if not (self.is_first_stage() or self.is_last_stage()):
            return None, None
        source = data_iter if data_iter is not None else self.data_iterator
        if source is None:
            raise ValueError("train_batch()/eval_batch() on the first and last stages need data: pass data_iter, "
                             "call set_dataiterator(), or give initialize(training_data=...)")
        batches = [next(source) for _ in range(count)]
        for i, batch in enumerate(batches):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(f"micro-batch {i} must be a pair (inputs, labels), got a {type(batch).__name__}")
        inputs = _cat([b[0] for b in batches]) if self.is_first_stage() else None
        labels = _cat([b[1] for b in batches]) if self.is_last_stage() else None
        return inputs, labels

    def _loss_fn(self) -> Callable:
        """The module's ``loss_fn``, multiplied by the fp16 loss scale in use when it is called."""
        loss_fn = self.module.loss_fn
        if loss_fn is None:
            raise ValueError("train_batch()/eval_batch() need the PipelineModule's loss_fn (PipelineModule(loss_fn=...))")

        def scaled(outputs: Any, labels: Any) -> torch.Tensor:
            loss = loss_fn(outputs, labels)
            scale = self.loss_scaler.loss_scale if self.training else 1.0
            return loss * scale if scale != 1.0 else loss
        return scaled

    def _run(self, schedule: Any, inputs: Any, labels: Any, losses: List[Any], train: bool,
             keep_outputs: bool = False) -> Any:
        """One schedule step (forward only unless ``train``); the last stage's joined outputs when
        ``keep_outputs`` (otherwise torch would keep every micro-batch's outputs until the next batch)."""
        run = schedule.step if train else schedule.eval
        args = _as_args(inputs) if self.is_first_stage() else ()
        extra = {"target": labels, "losses": losses} if self.is_last_stage() else {}
        with self._autocast():
            return run(*args, return_outputs=keep_outputs, **extra)

    def _mean_loss(self, losses: List[torch.Tensor], scale: float) -> torch.Tensor:
        """The mean micro-batch loss, averaged over data-parallel ranks, on every rank of the pipeline."""
        if self.is_last_stage():
            loss = torch.stack([l.detach().float() for l in losses]).mean() / scale
        else:
            loss = torch.zeros((), dtype=torch.float32, device=self.device)
        if self.is_last_stage() and self.dp_world_size > 1:
            dist.all_reduce(loss, group=self._data_group)
            loss /= self.dp_world_size
        if self.num_stages > 1:
            dist.broadcast(loss, src=self._pipe_ranks[-1], group=self._pipe_group)
        return loss

    def train_batch(self, data_iter: Optional[Iterator] = None) -> torch.Tensor:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches (module docstring); returns
        the mean loss on every rank. Every rank of every pipeline must call it."""
        if not torch.is_grad_enabled():
            raise RuntimeError("train_batch() requires gradients enabled. Use eval_batch() instead.")
        self._require_states("train_batch")
        self._require_optimizer("train_batch")
        self.train()
        count = self.gradient_accumulation_steps()
        inputs, labels = self._micro_batches(data_iter, count)
        scale = float(self.loss_scaler.loss_scale)  # what the losses below are multiplied by
        losses: List[torch.Tensor] = []
        self._run(self._schedule(self._loss_fn()), inputs, labels, losses, train=True)
        self._reduce_gradients()
        self.micro_steps += count
        self.agg_train_loss = self._mean_loss(losses, scale)
        self._take_model_step(None)
        self._write_step_events()
        if self.monitor.enabled and self.global_rank == 0:
            self.monitor.write_events([("Train/Samples/train_loss", float(self.agg_train_loss), self.global_samples)])
        return self.agg_train_loss

    def _reduce_gradients(self) -> None:
        """Tied layers' gradients summed over their stages, then every gradient averaged over the
        data-parallel ranks."""
        self.module.allreduce_tied_weight_gradients()
        if self.dp_world_size == 1 or self._parallel.sharded:
            return
        for param in self.module.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad, group=self._data_group)
                param.grad /= self.dp_world_size

    def _gather_over_stages(self, value: Any) -> List[Any]:
        if self.num_stages == 1:
            return [value]
        gathered: List[Any] = [None] * self.num_stages
        dist.all_gather_object(gathered, value, group=self._pipe_group)
        return gathered

    def _global_grad_norm_of(self, grads: List[torch.Tensor]) -> float:
        """The norm over every stage's gradients, a tied tensor counted once."""
        owned = [p.grad for p in self.module.parameters()
                 if p.grad is not None and self.module.tied_tensor_is_owned_here(p)]
        squares = torch.zeros((), dtype=torch.float32, device=self.device)
        for grad in owned:
            local = grad.to_local() if hasattr(grad, "to_local") else grad
            squares += local.float().pow(2).sum()
        if self._parallel.sharded:  # each data-parallel rank holds a shard of each stage's gradients
            dist.all_reduce(squares)
        elif self.num_stages > 1:
            dist.all_reduce(squares, group=self._pipe_group)
        return float(squares.sqrt())

    @torch.no_grad()
    def eval_batch(self, data_iter: Iterator, return_logits: bool = False, compute_loss: bool = True,
                   reduce_output: Optional[str] = "avg", bcast_loss: bool = True,
                   num_micro_batches: Optional[int] = None) -> Any:
        """Forward ``num_micro_batches`` (default: the accumulation steps) micro-batches without training;
        returns the mean loss on every rank (``reduce_output='avg'``; None: the per-micro-batch losses on the
        last stage), and with ``return_logits`` the pair (loss, the last stage's outputs; None elsewhere)."""
        if reduce_output not in ("avg", None):
            raise ValueError(f"eval_batch(reduce_output={reduce_output!r}): expected 'avg' or None")
        count = num_micro_batches or self.gradient_accumulation_steps()
        if count != self.gradient_accumulation_steps():
            raise ValueError(f"eval_batch(num_micro_batches={count}): accelops runs evaluation with the training "
                             f"schedule's {self.gradient_accumulation_steps()} micro-batches")
        self.eval()
        inputs, labels = self._micro_batches(data_iter, count)
        losses: List[torch.Tensor] = []
        schedule = self._schedule(self._loss_fn() if compute_loss else None)
        outputs = self._run(schedule, inputs, labels if compute_loss else None,
                            losses if compute_loss else [], train=False, keep_outputs=return_logits)
        self.train()
        result: Any = None
        if compute_loss:
            result = self._mean_loss(losses, 1.0) if reduce_output == "avg" else (losses or None)
        if return_logits:
            return result, outputs if self.is_last_stage() else None
        return result
