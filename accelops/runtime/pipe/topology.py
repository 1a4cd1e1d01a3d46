"""DeepSpeed's process topologies (``deepspeed.runtime.pipe.topology``): named axes laid out row-major over
the global ranks, so that with ``PipeDataParallelTopology(num_pp, num_dp)`` (axes ``pipe``, ``data``) the
ranks of one stage are neighbours and gradient reductions stay on fast links.

Pure Python (no torch): ranks <-> coordinates, and the rank lists for process groups along an axis.
"""
from __future__ import annotations

import itertools
from collections import namedtuple
from typing import Dict, Iterable, List, Sequence


class ProcessTopology:
    """A grid of ``dims[i]`` processes along each axis ``axes[i]``; the last axis varies fastest
    (DeepSpeed's layout). ``ProcessCoord`` is the namedtuple type of a coordinate."""

    def __init__(self, axes: Sequence[str], dims: Sequence[int]) -> None:
        axes, dims = list(axes), [int(d) for d in dims]
        if len(axes) != len(dims) or len(set(axes)) != len(axes) or any(d < 1 for d in dims):
            raise ValueError(f"ProcessTopology(axes={axes}, dims={dims}): expected distinct axis names and one "
                             f"positive size per axis")
        self.axes, self.dims = axes, dims
        self.ProcessCoord = namedtuple("ProcessCoord", axes)
        self.mapping: Dict[tuple, int] = {
            self.ProcessCoord(*coord): rank
            for rank, coord in enumerate(itertools.product(*(range(d) for d in dims)))}
        self._coords = {rank: coord for coord, rank in self.mapping.items()}

    def get_rank(self, **coord: int) -> int:
        """The global rank at ``coord`` (every axis named). ValueError for a partial or unknown coordinate."""
        if set(coord) != set(self.axes):
            raise ValueError(f"get_rank() needs a value for each axis {self.axes}, got {sorted(coord)}; use "
                             f"filter_match() for a slice")
        key = self.ProcessCoord(**coord)
        if key not in self.mapping:
            raise ValueError(f"get_rank(): {coord} is outside the topology {dict(zip(self.axes, self.dims))}")
        return self.mapping[key]

    def get_axis_names(self) -> List[str]:
        return self.axes

    def get_dim(self, axis: str) -> int:
        """The number of processes along ``axis`` (0 when the topology has no such axis, as DeepSpeed)."""
        return self.dims[self.axes.index(axis)] if axis in self.axes else 0

    def get_coord(self, rank: int):
        """The coordinate of global ``rank``. ValueError when the rank is not in the topology."""
        if rank not in self._coords:
            raise ValueError(f"rank {rank} is not in the topology (world size {self.world_size()})")
        return self._coords[rank]

    def get_rank_repr(self, rank: int, omit_axes: Iterable[str] = ("data", "pipe"), inner_sep: str = "_",
                      outer_sep: str = "-") -> str:
        """``rank``'s coordinate on the axes not omitted, e.g. ``model_01`` (checkpoint file names)."""
        coord = self.get_coord(rank)
        omitted = frozenset(omit_axes)
        return outer_sep.join(f"{axis}{inner_sep}{getattr(coord, axis):02d}" for axis in self.axes
                              if axis not in omitted)

    def get_axis_comm_lists(self, axis: str) -> List[List[int]]:
        """One rank list per combination of the other axes' values: the ranks that differ only along
        ``axis`` (a process group each). Empty when there is no such axis."""
        if axis not in self.axes:
            return []
        others = [a for a in self.axes if a != axis]
        lists = []
        for values in itertools.product(*(range(self.get_dim(a)) for a in others)):
            fixed = dict(zip(others, values))
            lists.append([self.get_rank(**fixed, **{axis: i}) for i in range(self.get_dim(axis))])
        return lists

    def filter_match(self, **criteria: int) -> List[int]:
        """The ranks whose coordinate matches every ``axis=value`` given, in rank order."""
        return [rank for rank, coord in sorted(self._coords.items())
                if all(getattr(coord, axis) == value for axis, value in criteria.items())]

    def get_axis_list(self, axis: str, idx: int) -> List[int]:
        """The ranks whose coordinate along ``axis`` is ``idx``."""
        return self.filter_match(**{axis: idx})

    def world_size(self) -> int:
        return len(self.mapping)

    def __str__(self) -> str:
        return str(self.mapping)


class PipeDataParallelTopology(ProcessTopology):
    """Pipeline x data parallelism: axes ``pipe``, ``data``."""

    def __init__(self, num_pp: int, num_dp: int) -> None:
        super().__init__(axes=["pipe", "data"], dims=[num_pp, num_dp])


class PipeModelDataParallelTopology(ProcessTopology):
    """Pipeline x data x model parallelism: axes ``pipe``, ``data``, ``model`` (accelops has no model
    parallelism: the engine needs ``num_mp`` 1)."""

    def __init__(self, num_pp: int, num_mp: int, num_dp: int) -> None:
        super().__init__(axes=["pipe", "data", "model"], dims=[num_pp, num_dp, num_mp])
