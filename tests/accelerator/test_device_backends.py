"""Device backends for absent hardware, driven through fake torch device modules."""
import types

import pytest
import torch

from accelops.accelerator.real_accelerator import builtin_backend_class


class FakeDeviceModule(types.SimpleNamespace):
    """Stands in for ``torch.<device>`` with two devices and call recording."""

    def __init__(self):
        super().__init__(calls=[], current=0, seeds=[])

    def device_count(self):
        return 2

    def is_available(self):
        return True

    def current_device(self):
        return self.current

    def set_device(self, index):
        self.calls.append(("set_device", index))
        self.current = index

    def synchronize(self, index=None):
        self.calls.append(("synchronize", index))

    def memory_allocated(self, index):
        return 1000 + index

    def max_memory_allocated(self, index):
        return 2000 + index

    def memory_reserved(self, index):
        return 3000 + index

    def max_memory_reserved(self, index):
        return 4000 + index

    def reset_peak_memory_stats(self, index):
        self.calls.append(("reset_peak_memory_stats", index))

    def memory_stats(self, index):
        return {"allocated": 1000 + index}

    def mem_get_info(self, index):
        return (500 + index, 9000 + index)

    def get_device_properties(self, index):
        return types.SimpleNamespace(total_memory=9000 + index)

    def manual_seed(self, seed):
        self.seeds.append(("one", seed))

    def manual_seed_all(self, seed):
        self.seeds.append(("all", seed))

    def get_rng_state(self, index):
        return torch.tensor([index], dtype=torch.uint8)

    def is_bf16_supported(self):
        return True


VENDOR_BACKENDS = {"xpu": "xccl", "hpu": "hccl", "npu": "hccl"}
VISIBLE = {"xpu": "ZE_AFFINITY_MASK", "hpu": "HABANA_VISIBLE_MODULES", "npu": "ASCEND_RT_VISIBLE_DEVICES"}


def with_fake_module(name):
    accelerator = builtin_backend_class(name)()
    fake = FakeDeviceModule()
    accelerator.__dict__["_module"] = fake  # what the cached_property would hold
    return accelerator, fake


@pytest.mark.parametrize("name", sorted(VENDOR_BACKENDS))
def test_generic_delegation(name, monkeypatch):
    accelerator, fake = with_fake_module(name)
    assert accelerator.device_count() == 2
    assert accelerator.device_name() == name
    assert accelerator.device_name(1) == f"{name}:1"
    accelerator.set_device(1)
    assert fake.calls[-1] == ("set_device", 1)
    assert accelerator.current_device() == 1 and isinstance(accelerator.current_device(), int)
    assert accelerator.current_device_name() == f"{name}:1"
    if name != "npu":  # torch learns the 'npu' device type only from torch_npu
        assert accelerator.device() == torch.device(name, 1)
    accelerator.synchronize(0)
    assert fake.calls[-1] == ("synchronize", 0)
    assert accelerator.memory_allocated() == 1001
    assert accelerator.max_memory_allocated(0) == 2000
    assert accelerator.memory_reserved(1) == 3001
    assert accelerator.max_memory_reserved(1) == 4001
    assert accelerator.total_memory(0) == 9000
    assert accelerator.available_memory(1) == 501
    assert accelerator.memory_stats(0) == {"allocated": 1000}
    accelerator.reset_peak_memory_stats(0)
    assert fake.calls[-1] == ("reset_peak_memory_stats", 0)
    accelerator.manual_seed(3)
    accelerator.manual_seed_all(4)
    assert fake.seeds == [("one", 3), ("all", 4)]
    assert accelerator.get_rng_state(1).tolist() == [1]
    assert accelerator.is_bf16_supported() is True
    assert accelerator.is_fp16_supported() is True
    assert accelerator.supported_dtypes() == [torch.float32, torch.bfloat16, torch.float16]
    with pytest.raises(ValueError, match=rf"{name} device index 2 is out of range \(valid: 0\.\.1\)"):
        accelerator.set_device(2)
    with pytest.raises(ValueError, match="out of range"):
        accelerator.device_name(-1)
    env = {}
    accelerator.set_visible_devices_envs(env, [2, 3])
    assert env == {VISIBLE[name]: "2,3"}


@pytest.mark.parametrize("name", ["hpu", "npu"])
def test_vendor_backends_name_their_comm_backend(name):
    assert builtin_backend_class(name)().communication_backend_name() == VENDOR_BACKENDS[name]


def test_xpu_comm_backend(monkeypatch):
    import torch.distributed as dist

    xpu = builtin_backend_class("xpu")()
    monkeypatch.setattr(dist, "is_xccl_available", lambda: True, raising=False)
    assert xpu.communication_backend_name() == "xccl"


def test_vendor_module_is_imported_on_first_use_only(monkeypatch):
    """hpu's torch module comes from habana_frameworks, imported when first needed."""
    import sys

    hpu = builtin_backend_class("hpu")()
    assert "habana_frameworks" not in sys.modules
    assert hpu.device_count() == 0  # vendor package missing here: no device, no crash
    assert hpu.is_available() is False


def test_cuda_backend_with_fake_devices(monkeypatch):
    cuda = builtin_backend_class("cuda")()
    fake = FakeDeviceModule()
    fake.get_device_capability = lambda index=None: (8, 0)
    cuda.__dict__["_module"] = fake
    monkeypatch.setattr(torch.version, "hip", None)
    assert cuda.device_name(1) == "cuda:1"
    assert cuda.communication_backend_name() == "nccl"
    assert cuda.visible_devices_envs() == ["CUDA_VISIBLE_DEVICES"]
    assert cuda.is_fp16_supported() is True
    assert cuda.is_bf16_supported() is True
    assert cuda.is_triton_supported() is True
    assert cuda.is_rocm is False
    fake.get_device_capability = lambda index=None: (5, 2)
    assert cuda.is_fp16_supported() is False


def test_rocm_is_the_cuda_backend_with_hip_details(monkeypatch):
    cuda = builtin_backend_class("cuda")()
    cuda.__dict__["_module"] = FakeDeviceModule()
    monkeypatch.setattr(torch.version, "hip", "6.2.0")
    assert cuda.is_rocm is True
    assert cuda.name == "cuda"
    assert cuda.communication_backend_name() == "nccl"
    assert cuda.visible_devices_envs() == ["HIP_VISIBLE_DEVICES"]
    env = {}
    cuda.set_visible_devices_envs(env, [1])
    assert env == {"HIP_VISIBLE_DEVICES": "1"}


def test_cuda_without_devices_is_honest():
    """On this CPU-only torch the CUDA backend exists but reports nothing usable."""
    cuda = builtin_backend_class("cuda")()
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present")
    assert cuda.device_count() == 0
    assert cuda.is_available() is False
    assert cuda.is_bf16_supported() is False
    assert cuda.is_fp16_supported() is False
    assert cuda.device_name() == "cuda"
    with pytest.raises(ValueError, match="no device is visible"):
        cuda.device_name(0)


def test_mps_backend_with_fake_module(monkeypatch):
    mps = builtin_backend_class("mps")()
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    fake = types.SimpleNamespace(
        current_allocated_memory=lambda: 10,
        driver_allocated_memory=lambda: 30,
        recommended_max_memory=lambda: 100,
    )
    mps.__dict__["_module"] = fake
    assert mps.device_count() == 1
    assert mps.device_name(0) == "mps:0"
    assert mps.current_device() == 0
    assert mps.memory_allocated() == 10
    assert mps.available_memory() == 70
    assert mps.communication_backend_name() == "gloo"
    with pytest.raises(ValueError, match="out of range"):
        mps.set_device(1)


DEVICE_CALLS = {
    "current_device": (), "set_device": (0,), "synchronize": (), "device": (), "current_device_name": (),
    "get_rng_state": (), "initial_seed": (), "default_generator": (0,), "current_stream": (), "default_stream": (),
    "empty_cache": (), "memory_allocated": (), "memory_stats": (), "total_memory": (), "available_memory": (),
}


@pytest.mark.parametrize("method", sorted(DEVICE_CALLS))
def test_cuda_chosen_without_devices_gives_the_contracts_clear_error(method):
    """DS_ACCELERATOR=cuda on a build host: device calls say what this mode serves, instead of torch's
    "Torch not compiled with CUDA enabled" AssertionError (or a device index error)."""
    cuda = builtin_backend_class("cuda")()
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present")
    with pytest.raises(RuntimeError, match="the cuda accelerator has no usable device here .* serves only the op "
                                           "builders"):
        getattr(cuda, method)(*DEVICE_CALLS[method])
    assert cuda.create_op_builder("CPUAdamBuilder").NAME == "cpu_adam"  # what the mode is for
    assert cuda.communication_backend_name() == "nccl" and cuda.device_name() == "cuda"
