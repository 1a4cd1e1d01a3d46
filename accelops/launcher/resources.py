"""Which slots of which hosts the job uses: ``--include``/``--exclude``, ``--num_nodes``, ``--num_gpus``.

Filter syntax (DeepSpeed's): ``NODE_SPEC[@NODE_SPEC ...]`` where ``NODE_SPEC = HOST[:SLOT[,SLOT ...]]``;
a host without ``:SLOT`` means all of its slots. ``-i worker-0@worker-1:0,2`` uses every slot of
worker-0 and slots 0 and 2 of worker-1; ``-e worker-1:0`` uses everything but slot 0 of worker-1;
``-i localhost:1`` picks the second device of this host when there is no hostfile.

Slot numbers are positions ``0 .. slots-1`` on a host. The result of :func:`select` is an ordered
``{host: [slot, ...]}`` in pool (hostfile) order with sorted slots: node ranks follow that order.
"""
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional

from .errors import LaunchError


def parse_filter(spec: str, flag: str = "--include") -> Dict[str, List[int]]:
    """Parse a filter string into ``{host: sorted slots}``; an empty list means every slot.

    A host given twice has its slot lists merged (``a:0@a:1`` is ``a:0,1``); a host given once bare
    and once with slots means every slot. Raises :class:`LaunchError` naming ``flag`` and the bad
    part for an empty spec or host, a slot that is not a non-negative integer, or a dangling ``:``.
    """
    if not spec.strip():
        raise LaunchError(f"{flag} is empty; expected HOST[:SLOT[,SLOT...]][@HOST...]")
    result: Dict[str, Optional[set]] = {}
    for part in spec.split("@"):
        host, colon, slots_text = part.strip().partition(":")
        if not host:
            raise LaunchError(f"{flag} {spec!r}: {part!r} names no host; expected HOST[:SLOT[,SLOT...]]")
        if not colon:
            result[host] = None  # every slot
            continue
        slots = set()
        for item in slots_text.split(","):
            item = item.strip()
            if not (item.isascii() and item.isdigit()):
                raise LaunchError(f"{flag} {spec!r}: slot {item!r} of host {host!r} is not a non-negative integer")
            slots.add(int(item))
        if host in result and result[host] is None:
            continue
        result[host] = (result.get(host) or set()) | slots
    return {host: sorted(slots) if slots is not None else [] for host, slots in result.items()}


def _check_known(pool: Mapping[str, int], wanted: Dict[str, List[int]], flag: str) -> None:
    for host, slots in wanted.items():
        if host not in pool:
            raise LaunchError(f"{flag}: host {host!r} is not in the resource pool (hosts: {', '.join(pool)})")
        for slot in slots:
            if slot >= pool[host]:
                raise LaunchError(f"{flag}: host {host!r} has no slot {slot} (it has {pool[host]} slots: "
                                  f"0..{pool[host] - 1})")


def select(pool: Mapping[str, int], include: str = "", exclude: str = "", num_nodes: Optional[int] = None,
           num_gpus: Optional[int] = None, allow_oversubscribe: bool = False) -> "OrderedDict[str, List[int]]":
    """The slots the job uses, as ``{host: [slot, ...]}`` in pool order.

    ``pool`` is ``{host: slot count}`` (from the hostfile or this host). ``include`` and ``exclude``
    are filter strings (see the module docstring) and exclude each other; ``num_nodes`` keeps the
    first N hosts; ``num_gpus`` uses slots ``0..N-1`` of every kept host. As in DeepSpeed,
    ``num_nodes``/``num_gpus`` cannot be combined with a filter.

    ``-1`` for ``num_nodes``/``num_gpus`` means unset (DeepSpeed's default value), like ``None``.
    ``allow_oversubscribe`` lets ``num_gpus`` exceed a host's slots (a CPU host with no hostfile,
    where ranks share the host rather than own a device).

    Raises :class:`LaunchError` for both filters given, a filter naming an unknown host or slot,
    ``num_nodes``/``num_gpus`` below 1 or combined with a filter, ``num_nodes`` larger than the pool,
    ``num_gpus`` larger than a host's slots, and a selection left with no slot.
    """
    num_nodes = None if num_nodes == -1 else num_nodes
    num_gpus = None if num_gpus == -1 else num_gpus
    if include and exclude:
        raise LaunchError("--include and --exclude exclude each other; give one of them")
    if (include or exclude) and (num_nodes is not None or num_gpus is not None):
        flag = "--include" if include else "--exclude"
        raise LaunchError(f"{flag} cannot be combined with --num_nodes/--num_gpus; the filter already picks "
                          "the hosts and slots")
    selection: "OrderedDict[str, List[int]]" = OrderedDict((h, list(range(n))) for h, n in pool.items())
    if include:
        wanted = parse_filter(include, "--include")
        _check_known(pool, wanted, "--include")
        selection = OrderedDict((h, wanted[h] or list(range(pool[h]))) for h in pool if h in wanted)
    elif exclude:
        unwanted = parse_filter(exclude, "--exclude")
        _check_known(pool, unwanted, "--exclude")
        for host, slots in unwanted.items():
            selection[host] = [s for s in selection[host] if slots and s not in slots]
        selection = OrderedDict((h, s) for h, s in selection.items() if s)
    if num_nodes is not None:
        if num_nodes < 1:
            raise LaunchError(f"--num_nodes must be at least 1, got {num_nodes}")
        if num_nodes > len(pool):
            raise LaunchError(f"--num_nodes {num_nodes} is larger than the resource pool: {len(pool)} "
                              f"host(s) ({', '.join(pool)})")
        selection = OrderedDict(list(selection.items())[:num_nodes])
    if num_gpus is not None:
        if num_gpus < 1:
            raise LaunchError(f"--num_gpus must be at least 1, got {num_gpus}")
        for host in selection:
            if num_gpus > pool[host] and not allow_oversubscribe:
                raise LaunchError(f"--num_gpus {num_gpus} is more than host {host!r} has: {pool[host]} slot(s)")
            selection[host] = list(range(num_gpus))
    if not selection:
        raise LaunchError(f"--exclude {exclude!r} leaves no slot to run on")
    return selection
