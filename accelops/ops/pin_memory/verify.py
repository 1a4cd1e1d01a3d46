"""``ds_report --verify``: the pin_memory op pins a copy exactly, in locked pages, and unlocks them again."""
from ..registry import Check

SIZE = 3 * 4096 + 7  # float32 elements: whole pages plus a tail


def locked_kib() -> int:
    """This process's ``VmLck`` in KiB from /proc/self/status; -1 where there is no such file (not Linux)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmLck:"))
    except (OSError, StopIteration):
        return -1


def check() -> str:
    import torch

    from .build import PinMemoryBuilder

    handle = PinMemoryBuilder().load(verbose=False).pin_handle()
    source = torch.randn(SIZE, generator=torch.Generator().manual_seed(0))
    before = locked_kib()
    pinned = handle.new_cpu_locked_tensor(SIZE, source)
    pinned.copy_(source)
    locked = locked_kib()
    worst = (pinned - source).abs().max().item()
    if not torch.equal(pinned, source) or not handle.is_pinned(pinned[1:]):
        raise AssertionError(f"pin_memory: the pinned copy differs from its source (max abs diff {worst:.1e}) or is "
                             f"not reported pinned")
    kib = -(-SIZE * 4 // 4096) * 4
    if before >= 0 and locked - before < kib:
        raise AssertionError(f"pin_memory: VmLck grew by {locked - before} KiB for {kib} KiB of pinned memory")
    if not handle.free_cpu_locked_tensor(pinned) or handle.is_pinned(pinned):
        raise AssertionError("pin_memory: freeing the pinned tensor did not unlock it")
    after = locked_kib()
    if before >= 0 and after != before:
        raise AssertionError(f"pin_memory: VmLck is {after} KiB after the free, {before} KiB before the pin")
    seen = f", VmLck {before} -> {locked} -> {after} KiB" if before >= 0 else ""
    return f"pin_memory: {SIZE} float32 pinned and unlocked{seen}; copy vs source: max abs diff {worst:.1e}"


CHECKS = {"pin_memory": Check(check)}
