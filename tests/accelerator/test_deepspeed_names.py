"""DeepSpeed's accelerator names (0.19.x), called the way DeepSpeed code calls them, on every backend.

Signatures below are written out from DeepSpeed 0.19.8's ``accelerator/abstract_accelerator.py``.
CPU behaviour is checked for real; device backends run against fake ``torch.<device>`` modules.
"""
import importlib
import inspect
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import accelops.accelerator as accelerator_package
from accelops.accelerator import Accelerator, get_accelerator, is_current_accelerator_supported, set_accelerator
from accelops.accelerator import cuda_accelerator
from accelops.accelerator.cpu_accelerator import CpuAccelerator
from accelops.accelerator.real_accelerator import _BUILTIN_BACKENDS, builtin_backend_class
from accelops.accelerator.torch_device import TorchDeviceAccelerator

from test_device_backends import FakeDeviceModule, with_fake_module

BACKENDS = sorted(_BUILTIN_BACKENDS)
FAKED = ["hpu", "npu", "xpu"]  # backends driven through FakeDeviceModule

# name -> DeepSpeed's parameters after self as (name, default); "property" for the tensor types.
DEEPSPEED_SIGNATURES = {
    "FloatTensor": "property", "DoubleTensor": "property", "HalfTensor": "property",
    "BFloat16Tensor": "property", "ByteTensor": "property", "IntTensor": "property", "LongTensor": "property",
    "lazy_call": [("callback", inspect.Parameter.empty)],
    "memory_cached": [("device_index", None)],
    "max_memory_cached": [("device_index", None)],
    "reset_max_memory_allocated": [("device_index", None)],
    "reset_max_memory_cached": [("device_index", None)],
    "op_builder_dir": [],
    "build_extension": [],
    "unpin_memory": [("tensor", inspect.Parameter.empty)],
    "prefer_triton_grouped_mm": [],
    "pin_memory": [("tensor", inspect.Parameter.empty), ("make_copy", True), ("match_shape", True)],
    "is_pinned": [("tensor", inspect.Parameter.empty)],
    "range_push": [("msg", inspect.Parameter.empty), ("domain", None), ("category", None)],
    "range_pop": [("domain", None)],
}

TENSOR_DTYPES = {
    "FloatTensor": torch.float32, "DoubleTensor": torch.float64, "HalfTensor": torch.float16,
    "BFloat16Tensor": torch.bfloat16, "ByteTensor": torch.uint8, "IntTensor": torch.int32, "LongTensor": torch.int64,
}


@pytest.fixture
def cpu(monkeypatch):
    for env in ("LOCAL_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(env, raising=False)
    return CpuAccelerator()


def _parameters(member):
    params = list(inspect.signature(member).parameters.values())
    assert params[0].name == "self"
    return [(p.name, p.default) for p in params[1:]]


# ---------------------------------------------------------------------------------------------- signatures
@pytest.mark.parametrize("cls", [Accelerator] + [builtin_backend_class(name) for name in BACKENDS],
                         ids=["contract"] + BACKENDS)
@pytest.mark.parametrize("name", sorted(DEEPSPEED_SIGNATURES))
def test_signature_is_deepspeeds(cls, name):
    member = inspect.getattr_static(cls, name)
    expected = DEEPSPEED_SIGNATURES[name]
    if expected == "property":
        assert isinstance(member, property), f"{cls.__name__}.{name} must be a property, as in DeepSpeed"
    else:
        assert inspect.isfunction(member), f"{cls.__name__}.{name} must be a plain method"
        assert _parameters(member) == expected


def test_the_contract_requires_deepspeeds_abstract_names():
    abstract = Accelerator.__abstractmethods__
    for name in ["lazy_call", "memory_cached", "max_memory_cached", "reset_max_memory_allocated",
                 "reset_max_memory_cached", "op_builder_dir", "build_extension", *TENSOR_DTYPES]:
        assert name in abstract, name
    # Concrete in DeepSpeed too: a backend inherits them.
    assert "unpin_memory" not in abstract and "prefer_triton_grouped_mm" not in abstract


# ---------------------------------------------------------------------------------------------- class names
@pytest.mark.parametrize("backend, alias", [("cuda", "CUDA_Accelerator"), ("cpu", "CPU_Accelerator"),
                                            ("xpu", "XPU_Accelerator"), ("hpu", "HPU_Accelerator"),
                                            ("npu", "NPU_Accelerator"), ("mps", "MPS_Accelerator")])
def test_deepspeed_class_names_are_the_same_classes(backend, alias):
    module = importlib.import_module(f"accelops.accelerator.{backend}_accelerator")
    assert getattr(module, alias) is builtin_backend_class(backend)


def test_each_accelerator_file_is_one_backend_with_one_deepspeed_class_name():
    """DeepSpeed's layout, which its tests and tools rely on: every ``*_accelerator.py`` of the package but
    ``abstract_accelerator.py`` and ``real_accelerator.py`` is a backend defining exactly one ``*_Accelerator``."""
    folder = os.path.dirname(accelerator_package.__file__)
    files = sorted(f for f in os.listdir(folder)
                   if f.endswith("_accelerator.py") and f not in ("abstract_accelerator.py", "real_accelerator.py"))
    assert {f[:-len("_accelerator.py")] for f in files} == set(BACKENDS)
    for f in files:
        module = importlib.import_module(f"accelops.accelerator.{f[:-len('.py')]}")
        names = [n for n in dir(module) if n.endswith("_Accelerator")]
        assert len(names) == 1, (f, names)


def test_is_current_accelerator_supported():
    assert accelerator_package.is_current_accelerator_supported is is_current_accelerator_supported
    assert is_current_accelerator_supported() is True  # selects: here the CPU (or a real device)
    assert get_accelerator().device_name() in _BUILTIN_BACKENDS

    class OddAccelerator(CpuAccelerator):
        name = "odd"

        def device_name(self, device_index=None):
            return "odd"

    set_accelerator(OddAccelerator())
    assert is_current_accelerator_supported() is False
    set_accelerator(CpuAccelerator())
    assert is_current_accelerator_supported() is True


# ---------------------------------------------------------------------------------------------- tensor types
@pytest.mark.parametrize("name", sorted(TENSOR_DTYPES))
def test_cpu_tensor_types_make_data_tensors(cpu, name):
    made = getattr(cpu, name)([1, 2])
    assert made.dtype == TENSOR_DTYPES[name] and made.device.type == "cpu"
    assert made.tolist() == [1, 2]
    assert isinstance(made, getattr(cpu, name))
    assert not isinstance(made.to(torch.int8), getattr(cpu, name))
    assert not isinstance([1, 2], getattr(cpu, name))


def test_cpu_tensor_types_follow_the_legacy_call_shapes(cpu):
    assert cpu.FloatTensor(3).shape == (3,)  # a size, uninitialised, as torch.FloatTensor(3)
    assert cpu.FloatTensor(2, 3).shape == (2, 3)
    assert cpu.FloatTensor(torch.Size([4, 1])).shape == (4, 1)
    assert cpu.FloatTensor().shape == (0,)
    assert cpu.LongTensor((5, 6)).tolist() == [5, 6]  # a tuple is data, as for torch.LongTensor
    scalar = cpu.FloatTensor(2.5)
    assert scalar.dim() == 0 and scalar.item() == 2.5
    # What DeepSpeed's engine passes: a one-element list of a float, a bool, an int.
    assert cpu.FloatTensor([float(1.5)]).tolist() == [1.5]
    overflow = cpu.ByteTensor([True])
    assert overflow.dtype == torch.uint8 and overflow.tolist() == [1]
    assert cpu.IntTensor([0]).dtype == torch.int32


def test_cpu_tensor_types_copy_tensors_and_take_requires_grad(cpu):
    source = torch.tensor([1, 2, 3])
    made = cpu.DoubleTensor(source)
    source[0] = 100
    assert made.dtype == torch.float64 and made.tolist() == [1.0, 2.0, 3.0]
    assert cpu.FloatTensor([1.0], requires_grad=True).requires_grad is True
    assert cpu.FloatTensor(2, requires_grad=True).requires_grad is True


def test_cpu_tensor_types_reject_bad_arguments(cpu):
    with pytest.raises(TypeError, match=r"FloatTensor takes int sizes"):
        cpu.FloatTensor(2, "3")
    with pytest.raises(TypeError, match=r"FloatTensor takes int sizes"):
        cpu.FloatTensor([1.0], [2.0])
    with pytest.raises(ValueError, match=r"sizes must be non-negative, got \(2, -1\)"):
        cpu.FloatTensor(2, -1)
    with pytest.raises(TypeError):
        cpu.FloatTensor([1.0], device="meta")  # only requires_grad is a keyword


@pytest.mark.parametrize("backend", FAKED + ["cuda"])
def test_device_tensor_types_make_tensors_on_the_device(backend, monkeypatch):
    accelerator, _fake = with_fake_module(backend)
    calls = []
    monkeypatch.setattr(torch, "tensor", lambda data, **kwargs: calls.append((data, kwargs)) or "tensor")
    monkeypatch.setattr(torch, "empty", lambda shape, **kwargs: calls.append((shape, kwargs)) or "empty")
    for name, dtype in TENSOR_DTYPES.items():
        factory = getattr(accelerator, name)
        assert (factory.dtype, factory.device) == (dtype, backend)
        assert factory([1]) == "tensor"
        assert calls[-1] == ([1], {"dtype": dtype, "device": backend, "requires_grad": False})
        assert factory(2, 3) == "empty"
        assert calls[-1] == ((2, 3), {"dtype": dtype, "device": backend, "requires_grad": False})


def test_cuda_tensor_types_without_a_device_give_the_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present")
    cuda = builtin_backend_class("cuda")()
    factory = cuda.FloatTensor  # naming it is fine (DeepSpeed code does at import)
    with pytest.raises(RuntimeError, match="the cuda accelerator has no usable device here"):
        factory([1.0])


# ---------------------------------------------------------------------------------------------- memory
def test_cpu_cached_names_are_the_reserved_figures(cpu, monkeypatch):
    from accelops.accelerator import host_memory

    monkeypatch.setattr(host_memory, "resident_bytes", lambda: 123 * 4096)
    monkeypatch.setattr(host_memory, "peak_resident_bytes", lambda: 456 * 4096)
    assert cpu.memory_cached() == cpu.memory_reserved() == cpu.memory_allocated() == 123 * 4096
    assert cpu.max_memory_cached() == cpu.max_memory_reserved() == 456 * 4096
    assert type(cpu.memory_cached()) is int and type(cpu.max_memory_cached(0)) is int
    resets = []
    monkeypatch.setattr(host_memory, "reset_peak_resident", lambda: resets.append(1) or True)
    cpu.reset_max_memory_allocated()
    cpu.reset_max_memory_cached(0)
    assert resets == [1, 1]
    with pytest.raises(ValueError, match=r"cpu device index 1 is out of range \(valid: 0\.\.0\)"):
        cpu.memory_cached(1)
    with pytest.raises(ValueError, match="out of range"):
        cpu.reset_max_memory_cached(1)


def test_cpu_memory_cached_follows_the_process(cpu):
    import mmap

    before = cpu.memory_cached()
    assert isinstance(before, int) and before > 0
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    block.write(b"\x01" * len(block))
    after = cpu.memory_cached()
    assert after - before > 48 * 1024 * 1024
    assert abs(cpu.memory_allocated() - after) < 16 * 1024 * 1024
    assert cpu.max_memory_cached() >= after - 4096 * 1024
    block.close()


@pytest.mark.parametrize("backend", FAKED)
def test_device_cached_names_delegate_to_reserved_and_peak_reset(backend):
    accelerator, fake = with_fake_module(backend)
    assert accelerator.memory_cached(1) == 3001 == accelerator.memory_reserved(1)
    assert accelerator.max_memory_cached(0) == 4000
    assert accelerator.memory_cached() == 3000  # current device 0
    accelerator.reset_max_memory_allocated(1)
    assert fake.calls[-1] == ("reset_peak_memory_stats", 1)
    accelerator.reset_max_memory_cached(0)
    assert fake.calls[-1] == ("reset_peak_memory_stats", 0)
    with pytest.raises(ValueError, match=rf"{backend} device index 2 is out of range"):
        accelerator.max_memory_cached(2)


# ---------------------------------------------------------------------------------------------- lazy_call
def test_cpu_lazy_call_runs_now(cpu):
    ran = []
    assert cpu.lazy_call(lambda: ran.append("now")) is None
    assert ran == ["now"]
    with pytest.raises(TypeError, match="lazy_call\\(\\) expects a callable, got int"):
        cpu.lazy_call(3)


@pytest.mark.parametrize("backend", FAKED)
def test_device_lazy_call_queues_with_the_device_module(backend):
    accelerator, fake = with_fake_module(backend)
    ran = []
    accelerator.lazy_call(lambda: ran.append(1))  # no _lazy_call on the module: run now
    assert ran == [1]
    fake._lazy_call = lambda callback: fake.calls.append(("queued", callback))
    callback = lambda: ran.append(2)  # noqa: E731
    accelerator.lazy_call(callback)
    assert fake.calls[-1] == ("queued", callback) and ran == [1]


def test_mps_lazy_call_runs_the_callback(monkeypatch):
    """DeepSpeed's MPS backend drops the callback; here it runs (MPS needs no lazy initialisation)."""
    mps = builtin_backend_class("mps")()
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    mps.__dict__["_module"] = types.SimpleNamespace()
    ran = []
    mps.lazy_call(lambda: ran.append(1))
    assert ran == [1]


# ---------------------------------------------------------------------------------------------- host memory
def test_cpu_pin_memory_keeps_deepspeeds_meaning(cpu):
    tensor = torch.arange(6.0).reshape(2, 3)
    assert cpu.pin_memory(tensor) is tensor  # nothing to page-lock for the CPU
    assert cpu.pin_memory(tensor, make_copy=True, match_shape=False) is tensor
    scratch = cpu.pin_memory(tensor, make_copy=False)
    assert scratch.shape == (2, 3) and scratch.dtype == tensor.dtype
    assert scratch.data_ptr() != tensor.data_ptr()  # a new buffer: writing it leaves the template alone
    flat = cpu.pin_memory(tensor, make_copy=False, match_shape=False)
    assert flat.shape == (6,) and flat.dtype == tensor.dtype
    assert cpu.is_pinned(tensor) is False
    assert cpu.unpin_memory(tensor) is None
    with pytest.raises(TypeError, match="pin_memory\\(\\) expects a torch.Tensor, got list"):
        cpu.pin_memory([1.0])
    with pytest.raises(ValueError, match="takes a CPU tensor .* on meta"):
        cpu.pin_memory(torch.empty(2, device="meta"))
    with pytest.raises(TypeError, match="unpin_memory\\(\\) expects a torch.Tensor"):
        cpu.unpin_memory("x")


@pytest.mark.parametrize("backend", FAKED)
def test_device_pin_memory_page_locks(backend, monkeypatch):
    accelerator, _fake = with_fake_module(backend)
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(("copy", self.shape)) or self.clone())
    real_new_empty = torch.Tensor.new_empty

    def new_empty(self, shape, pin_memory=False):
        pinned.append(("empty", tuple(shape), pin_memory))
        return real_new_empty(self, shape)

    monkeypatch.setattr(torch.Tensor, "new_empty", new_empty)
    tensor = torch.ones(2, 3)
    copy = accelerator.pin_memory(tensor)
    assert copy is not tensor and copy.tolist() == tensor.tolist()
    assert pinned[-1] == ("copy", (2, 3))
    assert accelerator.pin_memory(tensor, make_copy=False).shape == (2, 3)
    assert pinned[-1] == ("empty", (2, 3), True)
    assert accelerator.pin_memory(tensor, make_copy=False, match_shape=False).shape == (6,)
    assert pinned[-1] == ("empty", (6,), True)
    assert accelerator.unpin_memory(tensor) is None


def test_mps_pinning_is_moot_with_unified_memory(monkeypatch):
    mps = builtin_backend_class("mps")()
    tensor = torch.ones(4)
    assert mps.pin_memory(tensor) is tensor
    assert mps.pin_memory(tensor, make_copy=False, match_shape=False).shape == (4,)
    assert mps.is_pinned(tensor) is True
    assert mps.is_pinned(torch.empty(1, device="meta")) is False


def test_cuda_pin_memory_without_a_device_gives_the_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present")
    cuda = builtin_backend_class("cuda")()
    with pytest.raises(RuntimeError, match="the cuda accelerator has no usable device here"):
        cuda.pin_memory(torch.ones(2))


# ---------------------------------------------------------------------------------------------- ranges
def test_cpu_ranges_take_a_domain(cpu):
    with torch.profiler.profile() as prof:
        cpu.range_push("outer-range", domain="accelops-test", category="cat")
        cpu.range_push("inner-range")
        torch.ones(8).sum()
        cpu.range_pop(domain="accelops-test")  # closes outer-range: domains keep separate stacks
        cpu.range_pop()
    names = {event.name for event in prof.events()}
    assert {"outer-range", "inner-range"} <= names
    with pytest.raises(RuntimeError, match="without a matching range_push\\(\\) in domain 'accelops-test'"):
        cpu.range_pop("accelops-test")
    cpu.range_push("lonely-range", domain="accelops-test")
    with pytest.raises(RuntimeError, match="without a matching range_push\\(\\)$"):
        cpu.range_pop()  # nothing open in the default domain
    cpu.range_pop(domain="accelops-test")
    assert cpu.supports_nvtx_domain is False


def test_cuda_ranges_use_nvtx_domains(monkeypatch):
    cuda = builtin_backend_class("cuda")()
    fake = FakeDeviceModule()
    fake.nvtx = types.SimpleNamespace(range_push=lambda msg: fake.calls.append(("push", msg)),
                                      range_pop=lambda: fake.calls.append(("pop",)))
    cuda.__dict__["_module"] = fake
    assert cuda.supports_nvtx_domain is True
    monkeypatch.setitem(sys.modules, "nvtx", None)  # nvtx package missing: torch's NVTX stack
    cuda.range_push("a", domain="deepspeed")
    cuda.range_pop(domain="deepspeed")
    assert fake.calls[-2:] == [("push", "a"), ("pop",)]

    domain_calls = []
    domain = types.SimpleNamespace(push_range=lambda **kw: domain_calls.append(("push", kw)),
                                   pop_range=lambda: domain_calls.append(("pop",)))
    nvtx = types.SimpleNamespace(get_domain=lambda name: domain_calls.append(("domain", name)) or domain)
    monkeypatch.setitem(sys.modules, "nvtx", nvtx)
    cuda = builtin_backend_class("cuda")()
    cuda.__dict__["_module"] = fake
    cuda.range_push("b", domain="deepspeed", category=3)
    cuda.range_pop(domain="deepspeed")
    cuda.range_push("c")
    assert domain_calls == [("domain", "deepspeed"), ("push", {"message": "b", "category": 3}), ("pop",)]
    assert fake.calls[-1] == ("push", "c")


# ---------------------------------------------------------------------------------------------- op builders
@pytest.mark.parametrize("backend", BACKENDS)
def test_op_builder_dir_names_an_importable_module_of_builders(backend):
    accelerator = builtin_backend_class(backend)()
    module = importlib.import_module(accelerator.op_builder_dir())
    assert module.__name__ == "accelops.op_builder"
    assert getattr(module, "CPUAdamBuilder") is accelerator.get_op_builder("CPUAdamBuilder")
    assert getattr(module, "CPUAdamBuilder").NAME == "cpu_adam"


@pytest.mark.parametrize("backend", BACKENDS)
def test_build_extension_is_torchs_build_ext_command(backend):
    from torch.utils.cpp_extension import BuildExtension

    command = builtin_backend_class(backend)().build_extension()
    assert command is BuildExtension
    assert issubclass(command.with_options(use_ninja=False), BuildExtension)  # what DeepSpeed's setup.py does


# ---------------------------------------------------------------------------------------------- triton
def test_prefer_triton_grouped_mm(cpu, monkeypatch):
    assert cpu.prefer_triton_grouped_mm() is False
    cuda = builtin_backend_class("cuda")()
    fake = FakeDeviceModule()
    cuda.__dict__["_module"] = fake
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(cuda_accelerator, "triton_installed", lambda: True)
    for capability, expected in [((8, 0), True), ((8, 9), True), ((7, 0), True), ((9, 0), False), ((6, 1), False)]:
        fake.get_device_capability = lambda index=None, capability=capability: capability
        assert cuda.prefer_triton_grouped_mm() is expected, capability
    fake.get_device_capability = lambda index=None: (9, 0)
    monkeypatch.delattr(torch, "_grouped_mm", raising=False)
    assert cuda.prefer_triton_grouped_mm() is True  # no native grouped GEMM at all
    monkeypatch.setattr(cuda_accelerator, "triton_installed", lambda: False)
    assert cuda.prefer_triton_grouped_mm() is False
    monkeypatch.setattr(cuda_accelerator, "triton_installed", lambda: True)
    monkeypatch.setattr(torch.version, "hip", "6.2.0")
    assert cuda.prefer_triton_grouped_mm() is False


# ---------------------------------------------------------------------------------------------- CPU ranks
def test_local_world_size_gives_each_torchrun_rank_a_device(cpu, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu.device_count() == 2
    cpu.set_device(1)
    assert cpu.current_device() == 1
    with pytest.raises(ValueError, match=r"cpu device index 2 is out of range \(valid: 0\.\.1\)"):
        cpu.set_device(2)
    monkeypatch.setenv("LOCAL_SIZE", "4")  # DeepSpeed's variable wins when both are set
    assert cpu.device_count() == 4
    monkeypatch.delenv("LOCAL_SIZE")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE must be a positive integer, got 'two'"):
        cpu.device_count()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "0")
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE must be a positive integer"):
        cpu.device_count()


@pytest.mark.slow
def test_set_device_local_rank_under_torchrun(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent("""
        import os
        from accelops.accelerator import get_accelerator
        acc = get_accelerator()
        rank = int(os.environ["LOCAL_RANK"])
        acc.set_device(rank)
        assert acc.current_device() == rank and acc.device_count() == 2, (rank, acc.device_count())
        with open(os.path.join(os.path.dirname(__file__), f"rank{rank}.ok"), "w") as handle:
            handle.write(acc.current_device_name())
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_SIZE", "DS_ACCELERATOR")}
    env["DS_ACCELERATOR"] = "cpu"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script)], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in tmp_path.glob("*.ok")) == ["rank0.ok", "rank1.ok"]
    assert {path.read_text() for path in tmp_path.glob("*.ok")} == {"cpu"}


# ---------------------------------------------------------------------------------------------- dtypes
def test_cpu_fp16_is_onednns_answer(cpu, monkeypatch):
    native = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
    assert cpu.is_fp16_supported() is native
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert cpu.is_fp16_supported() is True
    assert cpu.supported_dtypes() == [torch.float32, torch.bfloat16, torch.float16]
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: False)
    assert cpu.is_fp16_supported() is False
    assert cpu.supported_dtypes() == [torch.float32, torch.bfloat16]

    def broken():
        raise RuntimeError("no such op")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", broken)
    assert cpu.is_fp16_supported() is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)  # torch without oneDNN
    assert cpu.is_fp16_supported() is False


def test_every_backend_is_a_torch_device_backend():
    """The shared behaviour above lives in one base class; a backend that left it would skip it."""
    for backend in BACKENDS:
        assert issubclass(builtin_backend_class(backend), TorchDeviceAccelerator)
