"""``deepspeed_io``: the engine's training DataLoader.

DeepSpeed facts (deepspeed/runtime/engine.py ``deepspeed_io``, deepspeed/runtime/dataloader.py
``DeepSpeedDataLoader``): the batch size defaults to ``train_micro_batch_size_per_gpu``; the sampler is a
``DistributedSampler`` over the data-parallel ranks (shuffling, seed 0, for the "train" route; not
shuffling for "eval" and "predict"); ``drop_last`` is the config's ``dataloader_drop_last``; anything that
is not a torch ``Dataset`` is refused.

Differences, on purpose: accelops returns a plain ``torch.utils.data.DataLoader`` (DeepSpeed's wrapper
adds throughput timers) with DeepSpeed's ``data_sampler`` attribute (the sampler, for scripts that call
``loader.data_sampler.set_epoch(epoch)``), loads in the main process unless ``num_local_io_workers`` is given (DeepSpeed
starts two workers per rank), and pins memory only on accelerators (not for CPU training). An
``IterableDataset`` gets no sampler: it must shard itself across ranks.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

ROUTES = ("train", "eval", "predict")


def make_dataloader(dataset: Any, batch_size: int, world_size: int, rank: int, drop_last: bool, device_type: str,
                    route: str = "train", pin_memory: bool = True, data_sampler: Any = None,
                    collate_fn: Optional[Callable] = None, num_local_io_workers: Optional[int] = None) -> DataLoader:
    """A DataLoader for this rank's part of ``dataset`` (module docstring). Bad arguments raise
    ValueError / TypeError naming them."""
    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise ValueError(f"Training data must be a torch Dataset (torch.utils.data.Dataset or IterableDataset), "
                         f"got a {type(dataset).__name__}")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    workers = 0 if num_local_io_workers is None else num_local_io_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"num_local_io_workers must be an integer >= 0, got {num_local_io_workers!r}")
    sampler = data_sampler
    if sampler is None and not isinstance(dataset, IterableDataset):
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=route == "train")
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, num_workers=workers,
                        pin_memory=pin_memory and device_type != "cpu", drop_last=drop_last)
    loader.data_sampler = sampler  # DeepSpeedDataLoader's name for it
    return loader


class RepeatingLoader:
    """DeepSpeed's ``RepeatingLoader`` (``deepspeed.utils`` / ``deepspeed.runtime.dataloader``): iterates
    ``loader`` (any iterable, typically a DataLoader) forever, starting a new pass with ``iter(loader)`` each
    time one ends. It starts the first pass at construction and never calls ``set_epoch`` on a sampler, as in
    DeepSpeed: a shuffling ``DistributedSampler`` gives the same order every pass unless the caller sets the
    epoch. A loader that yields nothing in a fresh pass is a ValueError (DeepSpeed's ends the iteration)."""

    def __init__(self, loader: Any) -> None:
        try:
            self.data_iter = iter(loader)
        except TypeError:
            raise TypeError(f"RepeatingLoader needs an iterable loader, got a {type(loader).__name__}") from None
        self.loader = loader

    def __iter__(self) -> "RepeatingLoader":
        return self

    def __next__(self) -> Any:
        try:
            return next(self.data_iter)
        except StopIteration:
            self.data_iter = iter(self.loader)
        try:
            return next(self.data_iter)
        except StopIteration:
            raise ValueError(f"RepeatingLoader: the loader ({type(self.loader).__name__}) yielded nothing in a new "
                             f"pass, so there is nothing to repeat") from None
