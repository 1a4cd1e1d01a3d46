"""Data parallelism for the engine on torch's own engines: DDP for ZeRO stage 0, FSDP2 for stages 1 to 3.

* Stage 0: ``torch.nn.parallel.DistributedDataParallel`` (no wrapper in a world of one). Buffers are
  synchronised once at construction and not before every forward (``forward_sync_buffers=False``, as
  DeepSpeed, which never broadcasts buffers during training). ``find_unused_parameters=True``: models
  with parameters that some forward does not use train as under DeepSpeed (at the cost of one graph walk
  per forward).
* Stages 1 and 2: ``fully_shard(..., reshard_after_forward=False)``: parameters stay gathered between
  forward and backward, gradients and optimizer state are sharded. Stage 3: ``reshard_after_forward=True``
  (parameters sharded outside each unit's forward/backward too).
* FSDP units: chosen by the config's ``accelops.fsdp_units`` (:mod:`accelops.runtime.accelops_config`); by
  default the model's ``_no_split_modules`` classes when it names them, else every child of the model that
  holds parameters (``ModuleList`` and ``ModuleDict`` children, which have no forward, are opened and their
  items become units); the root is a unit for whatever parameters remain. Before sharding, rank 0's
  parameters and buffers are broadcast, so every rank starts from the same model (DeepSpeed broadcasts too).
* ZeRO-Offload (``offload_optimizer`` / ``offload_param`` with ``device: cpu``): FSDP2's
  ``CPUOffloadPolicy``. The sharded fp32 parameters (the master weights), their gradients and so the
  optimizer state live in CPU memory; each unit's forward/backward copies its gathered parameters to the
  device, and the reduced gradient shards come back to the CPU, where a CPU kernel optimizer steps.

``bind_optimizer`` points an optimizer built on the model's original parameters at the sharded ones:
FSDP2 replaces every parameter by a new DTensor parameter. accelops' kernel optimizers update plain
tensors, so they get each rank's local shard (a view sharing the DTensor's storage); other optimizers get
the DTensor parameters, which torch's optimizers handle themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

from .optimizers import is_elementwise_kernel_optimizer

_CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict)


@dataclass
class Parallel:
    """How the model is wrapped. ``kind``: "none" (a world of one at stage 0), "ddp" or "fsdp".
    ``runner``: what forward calls (the DDP wrapper, or the model itself). ``bound``: after
    ``bind_optimizer``, (name, sharded param) of every optimizer param. ``local_pairs``: for an optimizer
    bound to local shards, (DTensor param, local shard) in the optimizer's param order."""
    kind: str
    runner: torch.nn.Module
    bound: List[Tuple[str, torch.Tensor]] = field(default_factory=list)
    local_pairs: List[Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def sharded(self) -> bool:
        return self.kind == "fsdp"


def _has_params(module: torch.nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _children_units(model: torch.nn.Module) -> List[torch.nn.Module]:
    units: List[torch.nn.Module] = []

    def visit(module: torch.nn.Module) -> None:
        for child in module.children():
            if not _has_params(child):
                continue
            if isinstance(child, _CONTAINERS):
                visit(child)
            else:
                units.append(child)

    visit(model)
    return units


def _class_units(model: torch.nn.Module, names: Sequence[str], where: str) -> List[torch.nn.Module]:
    """Every submodule below the root whose class name is in ``names``, children before their parents
    (FSDP2 needs inner units sharded first). ValueError naming ``where`` when a name matches nothing."""
    wanted = set(names)
    found = [m for m in model.modules() if m is not model and type(m).__name__ in wanted and _has_params(m)]
    missing = wanted - {type(m).__name__ for m in found}
    if missing:
        present = sorted({type(m).__name__ for m in model.modules() if m is not model and _has_params(m)})
        raise ValueError(f"{where} names {sorted(missing)}, but the model has no submodule of that class that holds "
                         f"parameters; classes with parameters in this model: {present}")
    return list(reversed(found))  # modules() is pre-order: reversed, every child comes before its parent


def _shares_a_parameter_outside(unit: torch.nn.Module, model: torch.nn.Module) -> bool:
    """True when a module outside ``unit``'s subtree holds one of its parameters (tied weights, such as a
    language model's head tied to its token embedding)."""
    inside = {id(p) for p in unit.parameters()}
    subtree = {id(m) for m in unit.modules()}
    return any(id(p) in inside for m in model.modules() if id(m) not in subtree for p in m.parameters(recurse=False))


def _rule_units(model: torch.nn.Module, rule: Union[str, Sequence[str]]) -> List[torch.nn.Module]:
    if rule == "root":
        return []
    if rule == "children":
        return _children_units(model)
    if rule == "auto":
        declared = getattr(model, "_no_split_modules", None)
        if declared:
            return _class_units(model, list(declared), f"the model's _no_split_modules ({list(declared)})")
        return _children_units(model)
    return _class_units(model, list(rule), "the config's accelops.fsdp_units")


def fsdp_units(model: torch.nn.Module, rule: Union[str, Sequence[str]] = "auto") -> List[torch.nn.Module]:
    """The modules that become FSDP units below the root, by ``rule`` (module docstring): "auto",
    "children", "root" or a list of class names; a module that shares a parameter with a module outside it
    is no unit (FSDP2 refuses a parameter in two units: tied weights stay with the enclosing unit, at
    worst the root). ValueError when a named class is not in the model."""
    return [unit for unit in _rule_units(model, rule) if not _shares_a_parameter_outside(unit, model)]


def _broadcast_from_rank0(model: torch.nn.Module, skip: Sequence[torch.Tensor] = ()) -> None:
    """Every rank takes rank 0's parameters and buffers (in place), except those in ``skip``."""
    skipped = {id(t) for t in skip}
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            # meta: a zero.Init parameter, whose parts were made from rank 0's values
            if not tensor.is_meta and id(tensor) not in skipped:
                dist.broadcast(tensor.data, src=0)


def wrap_model(model: torch.nn.Module, stage: int, world_size: int, device: torch.device,
               reduce_dtype: Optional[torch.dtype] = None, units: Union[str, Sequence[str]] = "auto",
               offload: bool = False, pin_memory: bool = False, ignore: Sequence[str] = ()) -> Parallel:
    """Wrap ``model`` (already on ``device``) for ``stage`` in the default process group.

    ``reduce_dtype``: the dtype gradients are reduced in (None: the gradients' own, fp32). ``units``: the
    FSDP unit rule (:func:`fsdp_units`). ``offload``: ZeRO-Offload with FSDP2's CPU offload policy (stages
    1 to 3), its CPU copies pinned when ``pin_memory``. ``ignore``: names of parameters that stay plain and
    are neither broadcast, reduced nor sharded (experts: the engine syncs and reduces them over their own
    group). Side effects: with FSDP the model is changed in place (its class and parameters, see the module
    docstring; with offload its parameters move to CPU memory) and rank 0's weights are broadcast; with DDP,
    DDP broadcasts them."""
    if stage == 0:
        if world_size == 1:
            return Parallel("none", model)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
        if ignore:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(ignore))
        ddp = DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False,
                                      find_unused_parameters=True)
        if reduce_dtype is not None:
            _register_compression(ddp, reduce_dtype)
        return Parallel("ddp", ddp)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    chosen = fsdp_units(model, units)
    named = dict(model.named_parameters())
    ignored = {named[name] for name in ignore}
    if world_size > 1:
        _broadcast_from_rank0(model, skip=list(ignored))
    mesh = init_device_mesh(device.type, (world_size,))
    options = dict(mesh=mesh, reshard_after_forward=stage == 3,
                   mp_policy=MixedPrecisionPolicy(reduce_dtype=reduce_dtype),
                   offload_policy=CPUOffloadPolicy(pin_memory=pin_memory) if offload else OffloadPolicy(),
                   ignored_params=ignored or None)
    for unit in chosen:
        fully_shard(unit, **options)
    fully_shard(model, **options)
    return Parallel("fsdp", model)


def _register_compression(ddp: torch.nn.Module, dtype: torch.dtype) -> None:
    """DDP reduces gradients in ``dtype`` (fp16 or bf16): each bucket is divided by the world size, cast,
    all-reduced and cast back (torch's ``fp16_compress_hook``, which also works for bf16 on gloo; torch's
    own bf16 hook requires NCCL)."""
    world = dist.get_world_size()

    def hook(state, bucket):  # no annotations: DDP checks them against its own types
        compressed = bucket.buffer().div(world).to(dtype)
        future = dist.all_reduce(compressed, async_op=True).get_future()

        def decompress(done):
            out = bucket.buffer()
            out.copy_(done.value()[0])
            return out

        return future.then(decompress)

    ddp.register_comm_hook(state=None, hook=hook)


def local_shard(param: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor parameter as a plain tensor sharing its storage (a parameter FSDP2
    ignores: the parameter's own data)."""
    with torch.no_grad():
        return param.to_local().detach() if hasattr(param, "to_local") else param.detach()


def bind_optimizer(optimizer: torch.optim.Optimizer, fqn_of: Dict[int, str], model: torch.nn.Module,
                   parallel: Parallel) -> None:
    """After FSDP wrapping, replace the optimizer's params (the model's original parameters, found by
    ``fqn_of``: id(original param) -> name) with the sharded ones (module docstring). Records the local
    pairs in ``parallel``. ValueError when the optimizer holds a tensor that is not a parameter of the
    model, or already has state (it has stepped: its state would belong to the unsharded parameters)."""
    if not parallel.sharded:
        return
    if any(optimizer.state.values()):
        raise ValueError(f"the client optimizer ({type(optimizer).__name__}) already has state; with ZeRO stages "
                         f"1-3 the engine re-points it at the sharded parameters, so pass an optimizer that has "
                         f"not stepped yet (or a callable that builds one)")
    named = dict(model.named_parameters())
    use_local = is_elementwise_kernel_optimizer(optimizer)
    pairs, bound_names = [], []
    for g, group in enumerate(optimizer.param_groups):
        bound = []
        for i, param in enumerate(group["params"]):
            name = fqn_of.get(id(param))
            if name is None or name not in named:
                raise ValueError(f"param {i} of optimizer group {g} (shape {tuple(param.shape)}) is not a parameter "
                                 f"of the model; with ZeRO stages 1-3 the optimizer may only hold the model's "
                                 f"parameters")
            sharded = named[name]
            bound_names.append((name, sharded))
            if use_local:
                local = local_shard(sharded)
                pairs.append((sharded, local))
                bound.append(local)
            else:
                bound.append(sharded)
        group["params"] = bound
    parallel.bound = bound_names
    parallel.local_pairs = pairs


def held_tensors(optimizer: Optional[torch.optim.Optimizer], parallel: Parallel) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """(model parameter, the tensor ``optimizer`` holds for it) for every param of ``optimizer`` (after
    ``bind_optimizer``): the parameter itself, or with FSDP the sharded parameter and, for a kernel optimizer,
    its local shard. Empty without an optimizer."""
    if optimizer is None:
        return []
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if not parallel.sharded:
        return [(p, p) for p in held]
    return [(sharded, tensor) for (_, sharded), tensor in zip(parallel.bound, held)]


def _replaced(name: str) -> RuntimeError:
    return RuntimeError(f"the sharded parameter {name!r} was replaced after initialize() (by module.to(), "
                        f"load_state_dict(assign=True) or similar), so the optimizer no longer updates the model; "
                        f"move or load the model before initialize(), or use load_checkpoint")


def sync_local_grads(parallel: Parallel, model: torch.nn.Module) -> None:
    """Give each local shard the local part of its DTensor parameter's gradient (or None). RuntimeError
    when a bound parameter is no longer the model's, or no longer uses the storage the optimizer updates."""
    if parallel.bound:
        named = dict(model.named_parameters())
        for name, sharded in parallel.bound:
            if named.get(name) is not sharded:
                raise _replaced(name)
    for (name, _), (sharded, local) in zip(parallel.bound, parallel.local_pairs):
        if local.numel() and local_shard(sharded).data_ptr() != local.data_ptr():
            raise _replaced(name)
        grad = sharded.grad
        local.grad = grad.to_local() if hasattr(grad, "to_local") else grad


def clear_local_grads(parallel: Parallel) -> None:
    for _, local in parallel.local_pairs:
        local.grad = None


def local_grads(params: List[torch.Tensor]) -> List[torch.Tensor]:
    """The gradients of ``params`` as plain tensors (a DTensor gradient's local shard); None skipped."""
    grads = []
    for param in params:
        grad = param.grad
        if grad is None:
            continue
        grads.append(grad.to_local() if hasattr(grad, "to_local") else grad)
    return grads


def model_param_names(model: torch.nn.Module) -> Dict[int, str]:
    """id(param) -> its name, for every parameter of the model (before wrapping)."""
    return {id(param): name for name, param in model.named_parameters()}
