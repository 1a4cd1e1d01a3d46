"""The CPU backend, method by method, against what torch and the OS report."""
import mmap
import os
import time

import pytest
import torch

from accelops.accelerator.cpu_accelerator import CpuAccelerator


@pytest.fixture
def cpu(monkeypatch):
    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return CpuAccelerator()


def test_identity_and_semantics(cpu):
    assert cpu.name == "cpu"
    assert cpu.is_synchronized_device() is True
    assert cpu.use_host_timers() is True
    assert cpu.resolves_data_dependency() is True
    assert cpu.handles_memory_backpressure() is True
    assert cpu.is_available() is True
    assert cpu.is_triton_supported() is False


def test_device_names_and_indices(cpu):
    assert cpu.device_count() == 1
    assert cpu.current_device() == 0 and isinstance(cpu.current_device(), int)
    assert cpu.device_name() == "cpu"
    assert cpu.device_name(0) == "cpu"
    assert cpu.current_device_name() == "cpu"
    assert cpu.device() == torch.device("cpu")
    assert torch.ones(2, device=cpu.device(0)).device.type == "cpu"


@pytest.mark.parametrize("bad", [-1, 1, 7])
def test_out_of_range_index_is_a_clear_error(cpu, bad):
    with pytest.raises(ValueError, match=r"cpu device index .* out of range \(valid: 0\.\.0\)"):
        cpu.device_name(bad)
    with pytest.raises(ValueError, match="out of range"):
        cpu.set_device(bad)


@pytest.mark.parametrize("bad", ["0", 1.0, True])
def test_non_integer_index_is_a_type_error(cpu, bad):
    with pytest.raises(TypeError, match="must be an int"):
        cpu.device_name(bad)


def test_local_size_and_rank_drive_device_count(monkeypatch):
    monkeypatch.setenv("LOCAL_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    cpu = CpuAccelerator()
    assert cpu.device_count() == 4
    assert cpu.current_device() == 3
    cpu.set_device(1)
    assert cpu.current_device() == 1
    monkeypatch.setenv("LOCAL_SIZE", "zero")
    with pytest.raises(ValueError, match="LOCAL_SIZE must be a positive integer"):
        cpu.device_count()
    monkeypatch.setenv("LOCAL_RANK", "abc")
    with pytest.raises(ValueError, match="LOCAL_RANK must be a non-negative integer, got 'abc'"):
        CpuAccelerator()


def test_rng_uses_the_global_generator(cpu):
    cpu.manual_seed(1234)
    assert cpu.initial_seed() == 1234
    state = cpu.get_rng_state()
    first = torch.rand(5)
    cpu.set_rng_state(state)
    torch.testing.assert_close(torch.rand(5), first, rtol=0, atol=0)
    cpu.manual_seed_all(1234)
    torch.testing.assert_close(torch.rand(5), first, rtol=0, atol=0)
    assert cpu.default_generator(0) is torch.default_generator
    assert cpu.random() is torch.random


def test_streams_and_events(cpu):
    stream = cpu.current_stream()
    assert isinstance(stream, cpu.Stream)
    with cpu.stream(cpu.default_stream()):
        x = torch.ones(3) * 2
    assert x.sum().item() == 6
    start, end = cpu.Event(enable_timing=True), cpu.Event(enable_timing=True)
    start.record()
    time.sleep(0.02)
    end.record()
    end.synchronize()
    assert start.query() is True
    assert 15.0 <= start.elapsed_time(end) < 5000.0
    with pytest.raises(RuntimeError, match="recorded"):
        cpu.Event().elapsed_time(end)


def test_memory_figures_follow_the_process(cpu):
    before = cpu.memory_allocated()
    assert isinstance(before, int) and before > 0
    cpu.reset_peak_memory_stats()
    # 64 MiB of fresh pages, touched: a tensor could be served from heap memory that earlier tests freed
    # but the allocator kept resident, and then the resident set would not grow.
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    block.write(b"\x01" * len(block))
    after = cpu.memory_allocated()
    assert after - before > 48 * 1024 * 1024
    assert cpu.max_memory_allocated() >= after
    assert cpu.memory_reserved() > 0 and cpu.max_memory_reserved() >= cpu.memory_reserved() - 4096 * 1024
    block.close()
    total, available = cpu.total_memory(), cpu.available_memory()
    assert 0 < available <= total
    stats = cpu.memory_stats()
    assert stats["host_total_bytes"] == total
    cpu.empty_cache()


def test_dtypes(cpu):
    native_fp16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
    assert cpu.is_bf16_supported() is True
    assert cpu.is_fp16_supported() is native_fp16  # oneDNN's answer for this CPU
    assert cpu.supported_dtypes() == [torch.float32, torch.bfloat16] + ([torch.float16] if native_fp16 else [])


def test_host_memory_helpers(cpu):
    tensor = torch.arange(4.0)
    assert cpu.pin_memory(tensor) is tensor
    assert cpu.is_pinned(tensor) is False
    assert cpu.on_accelerator(tensor) is True
    assert cpu.on_accelerator(torch.empty(1, device="meta")) is False


def test_graphs_are_refused_clearly(cpu):
    with pytest.raises(NotImplementedError, match="graph"):
        cpu.create_graph()
    with pytest.raises(NotImplementedError, match="graph"):
        cpu.capture_to_graph(None)
    with pytest.raises(NotImplementedError, match="graph"):
        cpu.replay_graph(None)


def test_ranges_show_up_in_the_profiler(cpu):
    with torch.profiler.profile() as prof:
        cpu.range_push("accelops-range")
        torch.ones(8).sum()
        cpu.range_pop()
    assert "accelops-range" in {event.name for event in prof.events()}
    with pytest.raises(RuntimeError, match="without a matching range_push"):
        cpu.range_pop()


def test_distributed_settings(cpu):
    assert cpu.communication_backend_name() in ("gloo", "ccl")
    try:
        import oneccl_bindings_for_pytorch  # noqa: F401
    except ImportError:
        assert cpu.communication_backend_name() == "gloo"
    assert cpu.visible_devices_envs() == []
    env = {}
    cpu.set_visible_devices_envs(env, [0, 1])
    assert env == {}
    assert "OMP" in cpu.export_envs()


def test_compile_backend(cpu):
    assert cpu.get_compile_backend() == "inductor"
    cpu.set_compile_backend("eager")
    assert cpu.get_compile_backend() == "eager"
    with pytest.raises(ValueError, match="unknown torch.compile backend 'nope'"):
        cpu.set_compile_backend("nope")
    assert cpu.get_compile_backend() == "eager"
    compiled = torch.compile(lambda t: t * 2 + 1, backend=cpu.get_compile_backend())
    torch.testing.assert_close(compiled(torch.arange(3.0)), torch.tensor([1.0, 3.0, 5.0]))


def test_fork_safety(cpu):
    """Using the CPU backend before fork must not break the child."""
    cpu.manual_seed(7)
    cpu.memory_allocated()
    pid = os.fork()
    if pid == 0:  # child
        ok = False
        try:
            ok = CpuAccelerator().device_count() == 1 and torch.ones(2).sum().item() == 2
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


INDEXED = ["synchronize", "get_rng_state", "current_stream", "default_stream", "memory_allocated",
           "max_memory_allocated", "reset_peak_memory_stats", "memory_reserved", "max_memory_reserved",
           "memory_stats", "total_memory", "available_memory"]


@pytest.mark.parametrize("method", INDEXED)
def test_every_method_with_a_device_index_checks_it(cpu, method):
    getattr(cpu, method)(0)  # the one CPU device
    getattr(cpu, method)()
    with pytest.raises(ValueError, match=r"cpu device index 3 is out of range \(valid: 0\.\.0\)"):
        getattr(cpu, method)(3)
    with pytest.raises(TypeError, match="must be an int"):
        getattr(cpu, method)("0")


def test_set_rng_state_checks_the_index(cpu):
    state = cpu.get_rng_state()
    cpu.set_rng_state(state, 0)
    with pytest.raises(ValueError, match="out of range"):
        cpu.set_rng_state(state, 1)
