"""``deepspeed.comm``'s collectives, point-to-point calls and group helpers as thin pass-throughs to
``torch.distributed``, with DeepSpeed's parameter names and defaults (deepspeed/comm/comm.py, 0.19.5).

Each function imports torch.distributed when called and forwards its arguments; the return value
and the errors are torch's (a ``Work`` handle when ``async_op=True``, else ``None``; a
``ValueError`` from torch when no process group is initialised). ``group=None`` is the default group.

``prof``, ``log_name`` and ``debug`` are the keywords of DeepSpeed's comms logger: accepted and
ignored (accelops has no comms logger).

Differences from DeepSpeed, all towards torch's meaning:

- ``isend``/``irecv`` are non-blocking and return torch's ``Work``; DeepSpeed 0.19.5 routes them to
  the blocking send/recv and returns ``None``/the source rank (fixed after that release, DeepSpeed
  PR #8303).
- ``barrier`` passes ``device_ids`` on to torch; DeepSpeed drops it.
- ``get_global_rank(group=None, ...)`` means the default group; DeepSpeed passes ``None`` to torch,
  which rejects it.
"""
import enum


class ReduceOp(enum.Enum):
    """DeepSpeed's ``deepspeed.comm.ReduceOp`` (same members and values). Every function that takes
    ``op`` also accepts torch's ``torch.distributed.ReduceOp`` members."""

    SUM = 0
    PRODUCT = 1
    MIN = 2
    MAX = 3
    BAND = 4
    BOR = 5
    BXOR = 6
    AVG = 7
    UNUSED = 8


def _dist():
    import torch.distributed as dist

    return dist


def _torch_op(dist, op):
    """``op`` as a ``torch.distributed.ReduceOp``; ``ValueError`` naming it when it is neither kind."""
    if isinstance(op, dist.ReduceOp):
        return op
    if isinstance(op, ReduceOp) and op is not ReduceOp.UNUSED:
        return getattr(dist.ReduceOp, op.name)
    raise ValueError(f"op must be a ReduceOp member (accelops.comm.ReduceOp or torch.distributed.ReduceOp) "
                     f"other than UNUSED, got {op!r}")


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False, prof=False, log_name="all_reduce", debug=None):
    """Reduce ``tensor`` across the group in place: ``torch.distributed.all_reduce``."""
    dist = _dist()
    return dist.all_reduce(tensor, op=_torch_op(dist, op), group=group, async_op=async_op)


def reduce(tensor, dst, op=ReduceOp.SUM, group=None, async_op=False, prof=False, log_name="reduce", debug=None):
    """Reduce ``tensor`` into global rank ``dst`` in place: ``torch.distributed.reduce``."""
    dist = _dist()
    return dist.reduce(tensor, dst, op=_torch_op(dist, op), group=group, async_op=async_op)


def broadcast(tensor, src, group=None, async_op=False, prof=False, log_name="broadcast", debug=None):
    """Copy global rank ``src``'s ``tensor`` into every rank's ``tensor``: ``torch.distributed.broadcast``."""
    return _dist().broadcast(tensor, src, group=group, async_op=async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False, prof=False, log_name="all_gather", debug=None):
    """Fill ``tensor_list[i]`` with rank i's ``tensor``: ``torch.distributed.all_gather``."""
    return _dist().all_gather(tensor_list, tensor, group=group, async_op=async_op)


def all_gather_into_tensor(output_tensor, tensor, group=None, async_op=False, prof=False,
                           log_name="all_gather_into_tensor", debug=None):
    """Concatenate every rank's ``tensor`` into ``output_tensor`` (world size times larger):
    ``torch.distributed.all_gather_single`` where torch has it (it deprecates
    ``all_gather_into_tensor``), else ``all_gather_into_tensor``."""
    dist = _dist()
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return gather(output_tensor, tensor, group=group, async_op=async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False, prof=False,
                   log_name="reduce_scatter", debug=None):
    """Reduce ``input_list[i]`` over ranks into rank i's ``output``: ``torch.distributed.reduce_scatter``."""
    dist = _dist()
    return dist.reduce_scatter(output, input_list, op=_torch_op(dist, op), group=group, async_op=async_op)


def reduce_scatter_tensor(output_tensor, tensor, op=ReduceOp.SUM, group=None, async_op=False, prof=False,
                          log_name="reduce_scatter_tensor", debug=None):
    """Reduce ``tensor`` over ranks and give rank i the i-th chunk in ``output_tensor``:
    ``torch.distributed.reduce_scatter_single`` where torch has it (it deprecates
    ``reduce_scatter_tensor``), else ``reduce_scatter_tensor``."""
    dist = _dist()
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return scatter(output_tensor, tensor, op=_torch_op(dist, op), group=group, async_op=async_op)


def all_to_all_single(output, tensor, output_split_sizes=None, input_split_sizes=None, group=None, async_op=False,
                      prof=False, log_name="all_to_all_single", debug=None):
    """Split ``tensor`` by ``input_split_sizes`` (equal chunks when ``None``), send chunk i to rank i and
    concatenate what arrives into ``output`` by ``output_split_sizes``: ``torch.distributed.all_to_all_single``."""
    return _dist().all_to_all_single(output, tensor, output_split_sizes=output_split_sizes,
                                     input_split_sizes=input_split_sizes, group=group, async_op=async_op)


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False):
    """Send ``input_tensor_list[i]`` to rank i and receive rank i's into ``output_tensor_list[i]``:
    ``torch.distributed.all_to_all``."""
    return _dist().all_to_all(output_tensor_list, input_tensor_list, group=group, async_op=async_op)


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False, prof=False, log_name="gather", debug=None):
    """Collect every rank's ``tensor`` into ``gather_list`` on rank ``dst``: ``torch.distributed.gather``."""
    return _dist().gather(tensor, gather_list=gather_list, dst=dst, group=group, async_op=async_op)


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False, prof=False, log_name="scatter", debug=None):
    """Give rank i ``scatter_list[i]`` of rank ``src`` in ``tensor``: ``torch.distributed.scatter``."""
    return _dist().scatter(tensor, scatter_list=scatter_list, src=src, group=group, async_op=async_op)


def all_gather_object(object_list, obj, group=None, prof=False, log_name="all_gather_object", debug=None):
    """Fill ``object_list[i]`` with rank i's picklable ``obj``: ``torch.distributed.all_gather_object``."""
    return _dist().all_gather_object(object_list, obj, group=group)


def broadcast_object_list(object_list, src, group=None, device=None):
    """Replace ``object_list``'s items with rank ``src``'s: ``torch.distributed.broadcast_object_list``."""
    return _dist().broadcast_object_list(object_list, src, group=group, device=device)


def send(tensor, dst, group=None, tag=0, prof=False, log_name="send", debug=None):
    """Send ``tensor`` to global rank ``dst``; blocks until it is sent: ``torch.distributed.send``."""
    return _dist().send(tensor, dst, group=group, tag=tag)


def recv(tensor, src=None, group=None, tag=0, prof=False, log_name="recv", debug=None):
    """Receive into ``tensor`` from ``src`` (any rank when ``None``); blocks; returns the sender's rank:
    ``torch.distributed.recv``."""
    return _dist().recv(tensor, src, group=group, tag=tag)


def isend(tensor, dst, group=None, tag=0, prof=False, log_name="isend", debug=None):
    """Start sending ``tensor`` to ``dst`` and return a ``Work`` to ``wait()`` on before reusing
    ``tensor``: ``torch.distributed.isend`` (DeepSpeed 0.19.5 blocks here instead and returns None)."""
    return _dist().isend(tensor, dst, group=group, tag=tag)


def irecv(tensor, src=None, group=None, tag=0, prof=False, log_name="irecv", debug=None):
    """Start receiving into ``tensor`` and return a ``Work``; ``tensor`` is valid after ``wait()``:
    ``torch.distributed.irecv`` (DeepSpeed 0.19.5 blocks here instead and returns the source rank)."""
    return _dist().irecv(tensor, src, group=group, tag=tag)


def barrier(group=None, async_op=False, device_ids=None, prof=False, log_name="barrier", debug=None):
    """Return once every rank of the group has entered (or a ``Work`` with ``async_op=True``):
    ``torch.distributed.barrier``. ``device_ids`` is passed on (DeepSpeed drops it)."""
    return _dist().barrier(group=group, async_op=async_op, device_ids=device_ids)


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False, prof=False, log_name="monitored_barrier",
                      debug=None):
    """A barrier that names the ranks that did not arrive within ``timeout`` (gloo only):
    ``torch.distributed.monitored_barrier``."""
    return _dist().monitored_barrier(group=group, timeout=timeout, wait_all_ranks=wait_all_ranks)


def new_group(ranks):
    """A new process group of the global ``ranks``: ``torch.distributed.new_group(ranks)``. Every rank of
    the default group must call it, members or not."""
    return _dist().new_group(ranks)


def get_world_group():
    """The default group object: ``torch.distributed.group.WORLD`` (``None`` before initialisation)."""
    return _dist().group.WORLD


def get_global_rank(group=None, group_rank=0) -> int:
    """The global rank of ``group``'s rank ``group_rank``: ``torch.distributed.get_global_rank``;
    ``group=None`` is the default group."""
    dist = _dist()
    return dist.get_global_rank(dist.group.WORLD if group is None else group, group_rank)


def destroy_process_group(group=None) -> None:
    """Destroy ``group``, or every group when ``None``: ``torch.distributed.destroy_process_group``
    (torch raises when nothing is initialised; :func:`accelops.comm.destroy` does not). Destroying
    the default group also makes :func:`init_distributed` forget its cached info."""
    from . import init

    dist = _dist()
    dist.destroy_process_group(group)
    if group is None or not dist.is_initialized():
        init._forget()
