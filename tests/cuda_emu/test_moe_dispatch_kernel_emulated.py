"""The CUDA MoE dispatch/combine kernels (csrc/cuda/moe_dispatch) run on the CPU under the host emulation
against the op's torch reference: the route -> buffer-row table, weighted and unweighted dispatch, the
combine's ordered float32 sums and the backward's block-summed gate gradients, under both thread orders and
on the CUDA and ROCm branches. The forward and the gathered gradients do the reference's float32 operations
in its order, so they are compared exactly; the gate gradients are dot products (block sums): 1e-6 relative
plus sqrt(M) ulps absolute."""
import pytest
import torch

from accelops.ops.moe_dispatch.reference import combine_bwd_torch, combine_torch, dispatch_torch

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def kernels(thread_order, emulated_moe_dispatch):
    """The emulated kernels, under both thread orders."""
    return emulated_moe_dispatch


def routes(tokens, experts, capacity, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(experts * capacity, generator=gen)[:k * tokens]
    expert = (rows // capacity).int().reshape(k, tokens)
    slot = (rows % capacity).int().reshape(k, tokens)
    expert[k - 1, ::3] = -1  # dropped routes
    return expert, slot, torch.rand(k, tokens, generator=gen)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 37, 300])  # 300: more elements than threads in a block
@pytest.mark.parametrize("k", [1, 2])
def test_kernels_equal_the_torch_reference(kernels, dtype, m, k):
    tokens, experts, capacity = 12, 3, 10
    expert, slot, gate = routes(tokens, experts, capacity, k, seed=m)
    gen = torch.Generator().manual_seed(k)
    x, y, g = (torch.randn(*shape, generator=gen).to(dtype) for shape in
               ((tokens, m), (experts, capacity, m), (tokens, m)))
    for weight in (None, gate):
        assert torch.equal(kernels.dispatch(x, expert, slot, weight, experts, capacity),
                           dispatch_torch(x, expert, slot, weight, experts, capacity))
        assert torch.equal(kernels.combine(y, expert, slot, weight), combine_torch(y, expert, slot, weight))
    grad_y, grad_gate = kernels.combine_bwd(g, y, expert, slot, gate)
    ref_y, ref_gate = combine_bwd_torch(g, y, expert, slot, gate)
    assert torch.equal(grad_y, ref_y)
    torch.testing.assert_close(grad_gate, ref_gate, rtol=1e-6, atol=1e-6 * m ** 0.5)
    assert torch.all(grad_gate[expert < 0] == 0)

