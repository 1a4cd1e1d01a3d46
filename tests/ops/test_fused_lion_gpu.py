"""The fused_lion CUDA kernel against the op's pure-torch path on the same CUDA tensors; skipped without CUDA.

Both round every multiply and add in fp32 separately (the kernel is built without FMA), so they agree
bitwise; the CPU and emulation tests check the same formula against an independent reference.
"""
import pytest
import torch

from accelops.ops import fused_lion as fl
from accelops.ops.fused_lion import FusedLion

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SHAPES = [(1,), (7,), (1023,), (4096, 33), (65536 + 3,), (300_001,)] + [(97,)] * 40


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("state_dtype", [None, torch.float32])
def test_kernel_matches_the_torch_path_bitwise(dtype, state_dtype):
    assert fl._STEP.module() is not None, "the fused_lion CUDA op did not build or load"
    gen = torch.Generator(device="cuda").manual_seed(0)
    params = [torch.randn(s, generator=gen, device="cuda").to(dtype) for s in SHAPES]
    ref = [p.clone() for p in params]
    ours = FusedLion(params, lr=1e-3, weight_decay=0.1, state_dtype=state_dtype)
    assert ours.backend == "kernel"
    ref_m = [torch.zeros_like(p, dtype=state_dtype or dtype) for p in ref]
    for step in range(3):
        grads = [torch.randn(p.shape, generator=gen, device="cuda").to(dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        ours.step()
        fl._lion_torch_(ref, grads, ref_m, 1e-3, 0.9, 0.999, 0.1)
    for p, r in zip(params, ref):
        assert torch.equal(p, r)
