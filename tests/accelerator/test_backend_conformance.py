"""Every backend implements the whole contract with the contract's signatures."""
import inspect

import pytest

from accelops.accelerator import Accelerator
from accelops.accelerator.real_accelerator import _BUILTIN_BACKENDS, builtin_backend_class

CONTRACT = {
    name: member
    for name, member in inspect.getmembers(Accelerator)
    if getattr(member, "__isabstractmethod__", False)
}

# DeepSpeed's method names that downstream code calls; the contract must keep all of them.
DEEPSPEED_NAMES = """
device_name current_device_name current_device set_device device_count synchronize device is_available
Stream Event stream current_stream default_stream empty_cache memory_allocated max_memory_allocated
reset_peak_memory_stats memory_reserved max_memory_reserved memory_stats total_memory available_memory
random manual_seed manual_seed_all initial_seed get_rng_state set_rng_state default_generator
is_bf16_supported is_fp16_supported supported_dtypes pin_memory is_pinned on_accelerator create_graph
capture_to_graph replay_graph range_push range_pop communication_backend_name visible_devices_envs
set_visible_devices_envs export_envs is_synchronized_device resolves_data_dependency
handles_memory_backpressure use_host_timers is_triton_supported get_compile_backend set_compile_backend
create_op_builder get_op_builder op_builder_dir build_extension lazy_call memory_cached max_memory_cached
reset_max_memory_allocated reset_max_memory_cached FloatTensor DoubleTensor HalfTensor BFloat16Tensor ByteTensor
IntTensor LongTensor
""".split()


def _parameters(func):
    target = func.fget if isinstance(func, property) else func
    if isinstance(target, classmethod):
        target = target.__func__
    return [(p.name, p.kind, p.default) for p in inspect.signature(target).parameters.values()]


def test_contract_covers_deepspeed_names():
    missing = [name for name in DEEPSPEED_NAMES if name not in CONTRACT]
    assert missing == []


@pytest.mark.parametrize("backend", sorted(_BUILTIN_BACKENDS))
def test_backend_is_concrete_and_named(backend):
    cls = builtin_backend_class(backend)
    assert issubclass(cls, Accelerator)
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract: {cls.__abstractmethods__}"
    assert cls.name == backend
    assert isinstance(cls.priority, int)


@pytest.mark.parametrize("backend", sorted(_BUILTIN_BACKENDS))
@pytest.mark.parametrize("method", sorted(CONTRACT))
def test_signature_matches_contract(backend, method):
    cls = builtin_backend_class(backend)
    implementation = inspect.getattr_static(cls, method)
    contract = inspect.getattr_static(Accelerator, method)
    assert isinstance(implementation, property) == isinstance(contract, property), "property vs method"
    assert isinstance(implementation, classmethod) == isinstance(contract, classmethod), "classmethod vs method"
    assert _parameters(implementation) == _parameters(contract)


def test_priorities_order_cpu_last():
    priorities = {name: builtin_backend_class(name).priority for name in _BUILTIN_BACKENDS}
    assert priorities["cpu"] == 0
    assert all(value > 0 for name, value in priorities.items() if name != "cpu")
    assert len(set(priorities.values())) == len(priorities), "ties would make detection order arbitrary"
