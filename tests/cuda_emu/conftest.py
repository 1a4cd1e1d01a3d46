"""The host-emulated CUDA kernels, built once per test session (g++ only; no CUDA needed)."""
import pytest

from emu_build import build
from emulated_kernels import EmulatedLayerNorm


@pytest.fixture(scope="session")
def emulated_layer_norm(tmp_path_factory):
    kernels = EmulatedLayerNorm(build(tmp_path_factory.mktemp("cuda_emu")))
    yield kernels
    kernels.set_reverse_order(False)
