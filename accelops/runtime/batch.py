"""The batch triple: ``train_batch_size = train_micro_batch_size_per_gpu * gradient_accumulation_steps *
world_size`` (world_size: the data-parallel size).

DeepSpeed's rules (deepspeed/runtime/config.py ``_set_batch_related_parameters`` and
``_batch_assertion``): all three given are checked; from two the third is derived with floor division
(train and micro: accumulation = train // micro // world; train and accumulation: micro = train // world
// accumulation); only train: accumulation 1, micro = train // world; only micro: accumulation 1, train =
micro * world; neither train nor micro: an error. Every value must be > 0 and the product must hold.
"""
from __future__ import annotations

from typing import Optional, Tuple

from .errors import ConfigError

TRAIN, MICRO, ACCUM = "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"


def resolve_batch(train: Optional[int], micro: Optional[int], accum: Optional[int],
                  world_size: int) -> Tuple[int, int, int]:
    """``(train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps)`` from the given
    ones (None: not given; given ones are positive ints). A triple that does not multiply out raises
    :class:`ConfigError` showing the numbers and which of them were derived."""
    given = {TRAIN: train, MICRO: micro, ACCUM: accum}
    if train is None and micro is None:
        raise ConfigError("", f"the config needs {TRAIN} or {MICRO} (or both); "
                          f"{'only ' + ACCUM + ' was given' if accum is not None else 'neither was given'}")
    if train is not None and micro is not None and accum is None:
        accum = train // micro // world_size
    elif train is not None and accum is not None and micro is None:
        micro = train // world_size // accum
    elif micro is not None and train is None:
        accum = 1 if accum is None else accum
        train = micro * accum * world_size
    elif micro is None and accum is None:
        accum, micro = 1, train // world_size
    if micro > 0 and accum > 0 and train == micro * accum * world_size:
        return train, micro, accum
    parts = [f"{name} {value}{'' if given[name] is not None else ' (derived)'}"
             for name, value in ((TRAIN, train), (MICRO, micro), (ACCUM, accum))]
    raise ConfigError("", f"the batch sizes do not multiply out: {TRAIN} must equal {MICRO} x {ACCUM} x world_size, "
                      f"but {train} != {micro} x {accum} x {world_size} (= {micro * accum * world_size}); "
                      f"{', '.join(parts)}, world_size {world_size}")
