"""The host-emulated CUDA kernels, built once per test session (g++ only; no CUDA needed)."""
import pytest

from emu_build import build
from emulated_kernels import EmulatedFusedAdam, EmulatedFusedLion, EmulatedLayerNorm, EmulatedMoEDispatch


@pytest.fixture(scope="session", params=["cuda", "rocm"])
def emulated_library(request, tmp_path_factory):
    """The shared library of every emulated kernel source (see emu_build.KERNEL_SOURCES), built from
    the sources' CUDA branches and then from their ROCm branches (64-lane wavefronts)."""
    return build(tmp_path_factory.mktemp(f"{request.param}_emu"), rocm=request.param == "rocm")


@pytest.fixture(scope="session")
def emulated_layer_norm(emulated_library):
    return EmulatedLayerNorm(emulated_library)


@pytest.fixture(scope="session")
def emulated_fused_adam(emulated_library):
    return EmulatedFusedAdam(emulated_library)


@pytest.fixture(scope="session")
def emulated_fused_lion(emulated_library):
    return EmulatedFusedLion(emulated_library)


@pytest.fixture(scope="session")
def emulated_moe_dispatch(emulated_library):
    return EmulatedMoEDispatch(emulated_library)


@pytest.fixture(params=["forward order", "reverse order"])
def thread_order(request, emulated_library):
    """Blocks, warps and lanes run in index order, then (second parametrisation) in reverse order."""
    emulated_library.emu_set_reverse_order(int(request.param == "reverse order"))
    yield request.param
    emulated_library.emu_set_reverse_order(0)
