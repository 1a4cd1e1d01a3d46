"""The cost of checkpoint checksums: ``save_checkpoint`` and ``load_checkpoint`` of a ~100M-parameter model with
Adam state (1.2 GB of fp32 on disk), with the CRC-32 of every file recorded and checked vs the same calls with
the checksum steps replaced by no-ops, side by side in one run (world of one, CPU, gloo).

Rounds alternate (with, without, with, without, ...), each into a fresh save dir; the median of each is
reported, plus the ratio. The save includes DCP's writes with fsync, whose time varies a lot on a shared
disk; so the time spent in the checksum steps inside the very saves and loads that ran with them is also
reported, as a share of their median (the steadier number). The load reads from the page cache (just
written), the harder case for the checksum (no disk time to hide in). Also printed: the checksum's own
throughput on the same files. Target (issue 21): at most 5% on save and on load.

    python benchmarks/bench_checkpoint_checksums.py [--params 100e6] [--rounds 5] [--dir /tmp]
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch

import accelops
import accelops.comm
import accelops.runtime.checkpoint as ckpt
import accelops.runtime.checkpoint_checksums as checksums


def model_of(params: float) -> torch.nn.Module:
    width = 4096
    layers = max(1, round(params / (width * width + width)))
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])


def engine_with_state(params: float):
    config = {"train_batch_size": 1, "optimizer": {"type": "Adam", "params": {"lr": 1e-4}}}
    engine, *_ = accelops.initialize(model=model_of(params), config=config)
    engine.backward(engine(torch.randn(1, 4096)).pow(2).mean())
    engine.step()  # Adam's exp_avg and exp_avg_sq exist now
    return engine


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


class Stopwatch:
    """Adds up the time spent in ``module.name`` while installed."""

    def __init__(self, *targets):
        self.targets, self.seconds = targets, 0.0

    def __enter__(self):
        self.saved = [getattr(module, name) for module, name in self.targets]
        for (module, name), function in zip(self.targets, self.saved):
            setattr(module, name, self._timed(function))
        return self

    def _timed(self, function):
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed_call

    def __exit__(self, *exc):
        for (module, name), function in zip(self.targets, self.saved):
            setattr(module, name, function)


class ChecksumsOff:
    """Within the block the save writes an empty checksum record and the load checks nothing."""

    def __enter__(self):
        self.saved = checksums.compute, ckpt.verify_folder
        checksums.compute = lambda folder, names: {}
        ckpt.verify_folder = lambda folder, rank=0, world_size=1: None

    def __exit__(self, *exc):
        checksums.compute, ckpt.verify_folder = self.saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=100e6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    engine = engine_with_state(args.params)
    count = sum(p.numel() for p in engine.module.parameters())
    times = {(kind, what): [] for kind in ("with", "without") for what in ("save", "load")}
    spent = {"save": [], "load": []}
    root = tempfile.mkdtemp(prefix="accelops-bench-ckpt-", dir=args.dir)
    try:
        for round_ in range(args.rounds):
            for kind in ("with", "without"):
                save_dir = os.path.join(root, f"{kind}{round_}")
                if kind == "without":
                    with ChecksumsOff():
                        times[kind, "save"].append(timed(lambda: engine.save_checkpoint(save_dir)))
                        times[kind, "load"].append(timed(lambda: engine.load_checkpoint(save_dir)))
                else:
                    with Stopwatch((checksums, "compute"), (checksums, "write")) as inside:
                        times[kind, "save"].append(timed(lambda: engine.save_checkpoint(save_dir)))
                    spent["save"].append(inside.seconds)
                    with Stopwatch((ckpt, "verify_folder")) as inside:
                        times[kind, "load"].append(timed(lambda: engine.load_checkpoint(save_dir)))
                    spent["load"].append(inside.seconds)
                shutil.rmtree(save_dir)
        folder = os.path.join(root, "probe")
        engine.save_checkpoint(folder, tag="t")
        names = sorted(n for n in os.listdir(os.path.join(folder, "t")) if n != checksums.CHECKSUMS)
        size = sum(os.path.getsize(os.path.join(folder, "t", n)) for n in names)
        crc_s = min(timed(lambda: checksums.compute(os.path.join(folder, "t"), names)) for _ in range(3))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; {count / 1e6:.1f}M parameters, "
          f"{size / 1e9:.2f} GB on disk; {args.rounds} rounds, medians")
    print(f"checksum alone: {crc_s:.3f} s ({size / crc_s / 1e9:.1f} GB/s, {checksums._THREADS} threads, from the page "
          f"cache)")
    print(f"{'':6} {'with checksums':>15} {'without':>10} {'ratio':>7} {'checksum steps':>15} {'share':>7}")
    for what in ("save", "load"):
        with_, without = statistics.median(times["with", what]), statistics.median(times["without", what])
        inside = statistics.median(spent[what])
        print(f"{what:6} {with_:14.3f}s {without:9.3f}s {with_ / without:7.3f} {inside:14.3f}s {inside / with_:6.1%}")
    accelops.comm.destroy()


if __name__ == "__main__":
    main()
