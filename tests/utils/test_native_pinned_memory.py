"""DeepSpeed's ``deepspeed.utils.pin_memory`` and the accelerator's pinning with ``DS_PIN_MEMORY_BACKEND``:
the backend switch, the native manager's pin/is_pinned/unpin, and the CPU accelerator dispatching to it."""
import gc
import sys

import pytest
import torch

import accelops.op_builder
import accelops.utils.pin_memory as pin_memory
from accelops.accelerator import get_accelerator
from accelops.ops.pin_memory.verify import locked_kib

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only (mmap, mlock)")


@pytest.fixture
def native(monkeypatch):
    monkeypatch.setenv("DS_PIN_MEMORY_BACKEND", "native")
    return pin_memory.get_active_native_pinned_memory()


def test_the_backend_switch(monkeypatch):
    monkeypatch.delenv("DS_PIN_MEMORY_BACKEND", raising=False)
    assert pin_memory.get_active_native_pinned_memory() is None
    monkeypatch.setenv("DS_PIN_MEMORY_BACKEND", " Torch ")
    assert pin_memory.get_active_native_pinned_memory() is None
    monkeypatch.setenv("DS_PIN_MEMORY_BACKEND", "natvie")
    with pytest.raises(ValueError, match="DS_PIN_MEMORY_BACKEND='natvie': expected one of torch, native"):
        pin_memory.get_active_native_pinned_memory()
    monkeypatch.setenv("DS_PIN_MEMORY_BACKEND", "NATIVE")
    manager = pin_memory.get_active_native_pinned_memory()
    assert isinstance(manager, pin_memory.NativePinnedMemory) and pin_memory.get_native_pinned_memory() is manager


def test_pin_copies_shapes_and_tags(native):
    source = torch.arange(32, dtype=torch.float32).reshape(4, 8)
    pinned = native.pin(source)
    assert pinned.shape == (4, 8) and torch.equal(pinned, source) and pinned.data_ptr() != source.data_ptr()
    assert pinned.ds_pinned is True and pinned.ds_pin_base == pinned.data_ptr() in native._ranges
    assert native.is_pinned(pinned) and native.is_pinned(pinned.reshape(-1)[8:16]) and native.is_pinned(pinned[1])
    buffer = native.pin(source, make_copy=False)
    assert buffer.shape == (4, 8) and not buffer.any()
    flat = native.pin(source.to(torch.bfloat16), match_shape=False)
    assert flat.shape == (32,) and flat.dtype == torch.bfloat16 and torch.equal(flat, source.reshape(-1).bfloat16())
    assert not native.is_pinned(source) and not native.is_pinned(torch.zeros(2, device="meta"))
    with pytest.raises(TypeError, match="pin\\(\\) expects a torch.Tensor, got list"):
        native.pin([1.0])


def test_unpin_releases_the_allocation_recorded_at_pin_time(native):
    pinned = native.pin(torch.ones(1024))
    base = pinned.ds_pin_base
    view = pinned[10:20]
    pinned.data = torch.zeros(1024)  # ZeRO rebinds .data; unpin still finds the pinned allocation
    assert native.unpin(pinned) is True and base not in native._ranges
    assert pinned.ds_pinned is False and not native.is_pinned(view) and view.sum().item() == 10.0
    assert native.unpin(pinned) is False


@pytest.mark.skipif(locked_kib() < 0, reason="needs VmLck in /proc/self/status")
def test_dropping_the_pinned_tensor_unlocks_its_pages(native):
    before = locked_kib()
    pinned = native.pin(torch.randn(1 << 18))
    base = pinned.ds_pin_base
    assert locked_kib() - before >= 1024
    del pinned
    gc.collect()
    assert locked_kib() == before and base not in native._ranges


def test_native_fails_early_when_the_op_cannot_load(monkeypatch):
    class Failing:
        def load(self, verbose=False):
            raise RuntimeError("simulated build failure")

    monkeypatch.setenv("DS_PIN_MEMORY_BACKEND", "native")
    monkeypatch.setattr(pin_memory, "_shared_native_pins", None)
    monkeypatch.setattr(accelops.op_builder, "PinMemoryBuilder", Failing, raising=False)
    with pytest.raises(RuntimeError, match="needs the pin_memory op.*simulated build failure"):
        pin_memory.get_active_native_pinned_memory()
    with pytest.raises(RuntimeError, match="needs the pin_memory op"):
        get_accelerator().pin_memory(torch.ones(2))


def test_cpu_accelerator_pins_natively_only_when_asked(monkeypatch):
    accel = get_accelerator()
    source = torch.arange(6.0).reshape(2, 3)
    monkeypatch.delenv("DS_PIN_MEMORY_BACKEND", raising=False)
    assert accel.pin_memory(source) is source and not accel.is_pinned(source)
    assert accel.unpin_memory(source) is None

    monkeypatch.setenv("DS_PIN_MEMORY_BACKEND", "native")
    pinned = accel.pin_memory(source)
    assert torch.equal(pinned, source) and accel.is_pinned(pinned) and accel.is_pinned(pinned[1])
    assert accel.pin_memory(source, make_copy=False, match_shape=False).shape == (6,)
    assert accel.unpin_memory(pinned) is True and not accel.is_pinned(pinned)
    with pytest.raises(ValueError, match="takes a CPU tensor"):
        accel.pin_memory(torch.ones(2, device="meta"))
    with pytest.raises(TypeError, match="unpin_memory\\(\\) expects a torch.Tensor"):
        accel.unpin_memory("x")
    assert accel.is_pinned(torch.ones(2, device="meta")) is False
