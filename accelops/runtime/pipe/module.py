"""``deepspeed.pipe``: ``PipelineModule``, ``LayerSpec`` and ``TiedLayerSpec``.

A pipeline model is a list of layers applied in turn (the output of one is the input of the next). Each
rank builds only the layers of its own stage; the stages are cut by ``partition_method``:
``"parameters"`` (even trainable parameter counts), ``"uniform"`` (even layer counts) or ``"type:<regex>"``
(even counts of layers whose class name matches, case-insensitive). The engine
(:mod:`accelops.runtime.pipe.engine`) runs the stages with ``torch.distributed.pipelining``.

DeepSpeed facts followed (deepspeed/runtime/pipe/module.py): ``num_stages`` must divide the world size (or
a ``topology`` gives it); layer ``i`` of a stage is registered as submodule ``str(i)`` (its global index), a
tied layer under ``tied_modules.<key>``; ``seed_layers`` seeds layer ``i`` with ``base_seed + i`` before
building it (``seed_fn`` or :func:`accelops.runtime.utils.set_random_seed`), so a layer's values do not
depend on the stage it lands on; a ``TiedLayerSpec`` key is built once per stage that uses it, its
``tied_weight_attr`` tensors start from the first such stage's values and their gradients are summed over
those stages; ``activation_checkpoint_interval`` > 0 runs each run of that many layers under
``activation_checkpoint_func`` (default ``deepspeed.checkpointing.checkpoint``) when one of them has
parameters (or is of a class in ``checkpointable_layers``), in training mode.

Differences, on purpose: counting parameters for ``"parameters"`` builds each layer on the meta device
(no memory, no random numbers drawn) where DeepSpeed builds it for real; ``"profile"`` is not offered in
either. A ``PipelineModule`` given as a layer is an error, as in DeepSpeed.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .partition import partition_balanced, partition_uniform
from .topology import PipeDataParallelTopology, ProcessTopology


class PipelineError(Exception):
    """Errors of a ``PipelineModule``'s construction or use (DeepSpeed's name)."""


class LayerSpec:
    """A layer to build later: ``typename(*module_args, **module_kwargs)``, a ``torch.nn.Module`` class.
    RuntimeError (DeepSpeed's type) for anything else."""

    def __init__(self, typename: type, *module_args: Any, **module_kwargs: Any) -> None:
        if not (isinstance(typename, type) and issubclass(typename, torch.nn.Module)):
            raise RuntimeError(f"LayerSpec only supports torch.nn.Module types, got {typename!r}")
        self.typename, self.module_args, self.module_kwargs = typename, module_args, module_kwargs

    def __repr__(self) -> str:
        args = [repr(a) for a in self.module_args] + [f"{k}={v!r}" for k, v in self.module_kwargs.items()]
        return f"{self.typename.__name__}({', '.join(args)})"

    def build(self, log: bool = False) -> torch.nn.Module:
        """A new module from the spec."""
        return self.typename(*self.module_args, **self.module_kwargs)


class TiedLayerSpec(LayerSpec):
    """A layer shared by every stage that lists ``key`` (a language model's embedding and its output head):
    ``forward_fn(module, inputs)`` instead of ``module(inputs)`` when given; ``tied_weight_attr``: the
    attribute names (dotted paths) of the tied tensors."""

    def __init__(self, key: str, typename: type, *module_args: Any, forward_fn: Optional[Callable] = None,
                 tied_weight_attr: Any = ("weight",), **module_kwargs: Any) -> None:
        super().__init__(typename, *module_args, **module_kwargs)
        self.key = key
        self.forward_fn = forward_fn
        self.tied_weight_attr = [tied_weight_attr] if isinstance(tied_weight_attr, str) else list(tied_weight_attr)


def _layer_name(layer: Any) -> Optional[str]:
    if isinstance(layer, LayerSpec):
        return layer.typename.__name__
    if isinstance(layer, torch.nn.Module):
        return type(layer).__name__
    return getattr(layer, "__name__", None)


def _trainable_count(layer: Any) -> int:
    if isinstance(layer, LayerSpec):
        try:
            with torch.device("meta"):
                layer = layer.build()
        except Exception:  # a layer whose constructor cannot run on meta: build it for real
            layer = layer.build()
    if isinstance(layer, torch.nn.Module):
        return sum(p.numel() for p in layer.parameters() if p.requires_grad)
    return 0


def partition_layers(specs: Sequence[Any], num_stages: int, method: str) -> List[int]:
    """Stage boundaries for ``specs`` by ``method`` (module docstring). ValueError for an unknown method or
    a ``type:`` pattern that matches no layer."""
    method = method.lower()
    if method == "uniform":
        return partition_uniform(len(specs), num_stages)
    if method == "parameters":
        return partition_balanced([_trainable_count(layer) for layer in specs], num_stages)
    if method.startswith("type:"):
        pattern = re.compile(method.split(":", 1)[1], re.IGNORECASE)
        hits = [1 if (name := _layer_name(layer)) and pattern.search(name) else 0 for layer in specs]
        if not any(hits):
            raise ValueError(f"partition_method={method!r} matches no layer; layer classes: "
                             f"{sorted({n for n in map(_layer_name, specs) if n})}")
        return partition_balanced(hits, num_stages)
    raise ValueError(f"partition_method={method!r}: expected 'parameters', 'uniform' or 'type:<regex>'")


def _attr(module: torch.nn.Module, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


class PipelineModule(torch.nn.Module):
    """DeepSpeed's ``PipelineModule`` (its signature; module docstring). Needs ``torch.distributed``
    initialised (it is by ``accelops.comm.init_distributed`` when not). Side effects: builds this stage's
    layers on the accelerator's current device, creates the process groups of the topology (pipelines,
    data-parallel groups, tied-layer groups: every rank must construct the same pipeline), and gives every
    stage that shares a tied layer the first stage's values of it."""

    def __init__(self, layers: Sequence[Any], num_stages: Optional[int] = None,
                 topology: Optional[ProcessTopology] = None, loss_fn: Optional[Callable] = None,
                 seed_layers: bool = False, seed_fn: Optional[Callable] = None, base_seed: int = 1234,
                 partition_method: str = "parameters", activation_checkpoint_interval: int = 0,
                 activation_checkpoint_func: Optional[Callable] = None,
                 checkpointable_layers: Optional[List[str]] = None, dynamic_shape: bool = False) -> None:
        super().__init__()
        import torch.distributed as dist

        from accelops.accelerator import get_accelerator
        from accelops.comm import init_distributed

        if num_stages is None and topology is None:
            raise RuntimeError("PipelineModule needs num_stages or topology")
        if checkpointable_layers is not None and not isinstance(checkpointable_layers, list):
            raise TypeError("PipelineModule(checkpointable_layers=...) must be a list of class names")
        if not dist.is_initialized():
            init_distributed()
        self.global_rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._topo = topology or self._default_topology(num_stages, self.world_size)
        if self._topo.world_size() != self.world_size:
            raise ValueError(f"the topology has {self._topo.world_size()} ranks, the world {self.world_size}")
        if self._topo.get_dim("model") > 1:
            raise ValueError("accelops has no model (tensor) parallelism: the topology's 'model' axis must be 1")
        self.num_stages = self._topo.get_dim("pipe")
        self.stage_id = self._topo.get_coord(self.global_rank).pipe
        self.loss_fn = loss_fn
        self.seed_layers, self.seed_fn, self.base_seed = seed_layers, seed_fn, base_seed
        self.activation_checkpoint_interval = int(activation_checkpoint_interval)
        self.activation_checkpoint_func = activation_checkpoint_func
        self.checkpointable_layers = checkpointable_layers
        self.dynamic_shape = dynamic_shape
        self._layer_specs = list(layers)
        for layer in self._layer_specs:
            if isinstance(layer, PipelineModule):
                raise PipelineError("a PipelineModule cannot be a layer of another PipelineModule")
        self.parts = partition_layers(self._layer_specs, self.num_stages, partition_method)
        self._local_start, self._local_stop = self.parts[self.stage_id], self.parts[self.stage_id + 1]
        self.forward_funcs: List[Callable] = []
        self.tied_modules = torch.nn.ModuleDict()
        self.tied_weight_attrs: Dict[str, List[str]] = {}
        self._build()
        self.to(get_accelerator().current_device_name())
        self._groups = self._make_groups(dist)
        self._synchronize_tied_weights()

    @staticmethod
    def _default_topology(num_stages: int, world_size: int) -> ProcessTopology:
        if not isinstance(num_stages, int) or num_stages < 1 or world_size % num_stages:
            raise RuntimeError(f"num_stages ({num_stages}) must divide the world size ({world_size})")
        return PipeDataParallelTopology(num_pp=num_stages, num_dp=world_size // num_stages)

    # ------------------------------------------------------------------ building
    def _seed(self, layer_idx: int) -> None:
        if not self.seed_layers:
            return
        if self.seed_fn is not None:
            self.seed_fn(self.base_seed + layer_idx)
        else:
            from ..utils import set_random_seed

            set_random_seed(self.base_seed + layer_idx)

    def _build(self) -> None:
        for layer_idx in range(self._local_start, self._local_stop):
            layer = self._layer_specs[layer_idx]
            self._seed(layer_idx)
            if isinstance(layer, TiedLayerSpec):
                if layer.key not in self.tied_modules:
                    self.tied_modules[layer.key] = layer.build()
                    self.tied_weight_attrs[layer.key] = layer.tied_weight_attr
                module = self.tied_modules[layer.key]
                self.forward_funcs.append(module if layer.forward_fn is None
                                          else functools.partial(layer.forward_fn, module))
            elif isinstance(layer, (LayerSpec, torch.nn.Module)):
                module = layer.build() if isinstance(layer, LayerSpec) else layer
                self.add_module(str(layer_idx), module)
                self.forward_funcs.append(module)
            elif callable(layer):
                self.forward_funcs.append(layer)
            else:
                raise TypeError(f"layer {layer_idx} of the PipelineModule is a {type(layer).__name__}: expected a "
                                f"LayerSpec, a TiedLayerSpec, a torch.nn.Module or a callable")

    def _tied_owners(self) -> Dict[str, List[int]]:
        """key -> the stages that use that tied layer (the same on every rank)."""
        owners: Dict[str, List[int]] = {}
        for stage in range(self.num_stages):
            for layer in self._layer_specs[self.parts[stage]:self.parts[stage + 1]]:
                if isinstance(layer, TiedLayerSpec) and stage not in owners.setdefault(layer.key, []):
                    owners[layer.key].append(stage)
        return owners

    def _make_groups(self, dist: Any) -> Dict[str, Any]:
        """The pipeline and data-parallel groups of this rank, and one group per tied key spanning its owning
        stages within this rank's pipeline. Every rank creates every group, in the same order."""
        topo, coord = self._topo, self._topo.get_coord(self.global_rank)
        groups: Dict[str, Any] = {"tied": {}}
        for name, axis in (("pipe", "pipe"), ("data", "data")):
            for ranks in topo.get_axis_comm_lists(axis):
                group = dist.new_group(ranks=ranks)
                if self.global_rank in ranks:
                    groups[name], groups[f"{name}_ranks"] = group, ranks
        for key, stages in sorted(self._tied_owners().items()):
            for data in range(topo.get_dim("data")):
                ranks = [topo.get_rank(pipe=s, data=data, **({"model": 0} if "model" in topo.axes else {}))
                         for s in stages]
                group = dist.new_group(ranks=ranks) if len(ranks) > 1 else None
                if data == coord.data and self.stage_id in stages:
                    groups["tied"][key] = (group, ranks)
        return groups

    def _synchronize_tied_weights(self) -> None:
        import torch.distributed as dist

        with torch.no_grad():
            for key, (group, ranks) in self._groups["tied"].items():
                if group is None:
                    continue
                for attr in self.tied_weight_attrs[key]:
                    dist.broadcast(_attr(self.tied_modules[key], attr).data, src=ranks[0], group=group)

    def allreduce_tied_weight_gradients(self) -> None:
        """Sum the gradients of every tied tensor over the stages that share it (DeepSpeed's name)."""
        import torch.distributed as dist

        for key, (group, _) in self._groups["tied"].items():
            if group is None:
                continue
            for attr in self.tied_weight_attrs[key]:
                grad = _attr(self.tied_modules[key], attr).grad
                if grad is not None:  # with ZeRO-1, every stage holds the same shard of it
                    dist.all_reduce(grad.to_local() if hasattr(grad, "to_local") else grad, group=group)

    def tied_tensor_is_owned_here(self, param: torch.Tensor) -> bool:
        """False for a tied tensor on a stage that is not the first to share it (counted there once)."""
        for key, (_, ranks) in self._groups["tied"].items():
            if ranks[0] != self.global_rank and any(_attr(self.tied_modules[key], a) is param
                                                    for a in self.tied_weight_attrs[key]):
                return False
        return True

    # ------------------------------------------------------------------ running
    def _checkpointable(self, funcs: Sequence[Callable]) -> bool:
        if self.checkpointable_layers is not None:
            return any(type(f).__name__ in self.checkpointable_layers for f in funcs)
        return any(isinstance(f, torch.nn.Module) and next(f.parameters(), None) is not None for f in funcs)

    def _checkpoint_func(self) -> Callable:
        if self.activation_checkpoint_func is not None:
            return self.activation_checkpoint_func
        from ..activation_checkpointing.checkpointing import checkpoint

        return checkpoint

    def forward(self, forward_input: Any) -> Any:
        """This stage's layers applied in turn to ``forward_input`` (module docstring for checkpointing)."""
        def run(start: int, stop: int) -> Callable:
            def apply(*inputs: Any) -> Any:
                x = inputs[0] if len(inputs) == 1 else inputs
                for func in self.forward_funcs[start:stop]:
                    x = func(x)
                return x
            return apply

        interval, count = self.activation_checkpoint_interval, len(self.forward_funcs)
        if interval <= 0 or not self.training:
            return run(0, count)(forward_input)
        x = forward_input
        for start in range(0, count, interval):
            stop = min(start + interval, count)
            args = x if isinstance(x, tuple) else (x,)
            if self._checkpointable(self.forward_funcs[start:stop]):
                x = self._checkpoint_func()(run(start, stop), *args)
            else:
                x = run(start, stop)(*args)
        return x

    # ------------------------------------------------------------------ DeepSpeed's accessors
    def topology(self) -> ProcessTopology:
        return self._topo

    def num_pipeline_stages(self) -> int:
        return self.num_stages

    def partitions(self) -> List[int]:
        return self.parts

    def stage_owner(self, layer_idx: int) -> int:
        """The stage that holds layer ``layer_idx``."""
        if not 0 <= layer_idx < len(self._layer_specs):
            raise ValueError(f"layer {layer_idx} is not in the pipeline (0..{len(self._layer_specs) - 1})")
        return next(s for s in range(self.num_stages) if self.parts[s] <= layer_idx < self.parts[s + 1])
