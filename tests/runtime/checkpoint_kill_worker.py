"""Worker of the kill-at-each-call test: trains a tiny engine in a world of one, saves tag ``t`` (state A),
trains one more step, then saves ``second_tag`` (state B) with every file-system call of the checkpoint's
layout and checksum modules counted, and ``os._exit(9)`` right after call number ``kill_after`` (no cleanup
runs: the file system is left as a SIGKILL at that point leaves it).

``python checkpoint_kill_worker.py SAVE_DIR OUT_DIR SECOND_TAG KILL_AFTER``; KILL_AFTER -1 kills nothing and
prints the number of calls the second save made. A.pt and B.pt in OUT_DIR hold the expected states.
"""
import os
import shutil
import sys

import torch

import accelops
import accelops.runtime.checkpoint_checksums as checksums
import accelops.runtime.checkpoint_layout as layout
from engine_workers import make_model

MUTATING = {"rename", "replace", "remove", "unlink", "rmdir", "mkdir", "makedirs", "fsync"}


class Counter:
    def __init__(self, kill_after):
        self.calls, self.kill_after = 0, kill_after

    def after_call(self):
        self.calls += 1
        if self.calls == self.kill_after:
            os._exit(9)

    def wrap(self, function):
        def counted(*args, **kwargs):
            result = function(*args, **kwargs)
            self.after_call()
            return result
        return counted


class CountingModule:
    """Stands in for ``os`` or ``shutil`` inside a module: its mutating calls are counted."""

    def __init__(self, real, names, counter):
        self._real, self._names, self._counter = real, names, counter

    def __getattr__(self, name):
        value = getattr(self._real, name)
        return self._counter.wrap(value) if name in self._names else value


def counting_open(counter):
    def opened(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        if any(flag in mode for flag in "wax+"):
            counter.after_call()
        return handle
    return opened


def snapshot(engine):
    optim = engine.optimizer.state_dict()["state"]
    return {"model": {k: v.clone() for k, v in engine.module_state_dict().items()},
            "optim": {i: {k: v.clone() for k, v in s.items()} for i, s in optim.items()}}


def step(engine, seed):
    loss = engine(torch.randn(2, 6, generator=torch.Generator().manual_seed(seed))).pow(2).mean()
    engine.backward(loss)
    engine.step()


def main():
    save_dir, out_dir, second_tag, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    config = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}}}
    engine, *_ = accelops.initialize(model=make_model(), config=config)
    for seed in range(2):
        step(engine, seed)
    engine.save_checkpoint(save_dir, tag="t")
    torch.save(snapshot(engine), os.path.join(out_dir, "A.pt"))
    step(engine, 2)
    torch.save(snapshot(engine), os.path.join(out_dir, "B.pt"))
    counter = Counter(kill_after)
    for module in (layout, checksums):
        module.os = CountingModule(os, MUTATING, counter)
        module.open = counting_open(counter)
    layout.shutil = CountingModule(shutil, {"rmtree"}, counter)
    engine.save_checkpoint(save_dir, tag=second_tag)
    print(counter.calls, flush=True)


if __name__ == "__main__":
    main()
