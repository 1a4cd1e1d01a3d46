"""The fused_moe_dispatch CUDA kernels against the op's torch reference on the same CUDA tensors, and MOELayer on
CUDA against the dense einsum layer; skipped without CUDA.

The kernels round every multiply and add in fp32 separately, in the reference's order, so outputs and the
gathered gradients agree bitwise; gate gradients are block-summed dot products (1e-6 relative plus sqrt(M) ulps).
"""
import pytest
import torch

from accelops.ops.moe_dispatch import MoEDispatcher, moe_combine, moe_dispatch
from accelops.ops.moe_dispatch.reference import combine_bwd_torch, combine_torch, dispatch_torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _routes(tokens, experts, capacity, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(experts * capacity, generator=gen)[:k * tokens]
    expert = (rows // capacity).int().reshape(k, tokens)
    slot = (rows % capacity).int().reshape(k, tokens)
    expert[k - 1, ::3] = -1
    return expert.cuda(), slot.cuda(), torch.rand(k, tokens, generator=gen).cuda()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 37, 1024, 4099])
@pytest.mark.parametrize("k", [1, 2])
def test_kernels_match_the_torch_reference_on_cuda(dtype, m, k):
    assert MoEDispatcher("cuda").backend == "kernel", MoEDispatcher("cuda").backend_reason
    tokens, experts, capacity = 300, 8, 80
    expert, slot, gate = _routes(tokens, experts, capacity, k, seed=m)
    gen = torch.Generator(device="cuda").manual_seed(k)
    x, y, g = (torch.randn(*shape, generator=gen, device="cuda").to(dtype) for shape in
               ((tokens, m), (experts, capacity, m), (tokens, m)))
    assert torch.equal(moe_dispatch(x, expert, slot, experts, capacity),
                       dispatch_torch(x, expert, slot, None, experts, capacity))
    assert torch.equal(moe_combine(y, expert, slot, gate), combine_torch(y, expert, slot, gate))
    grad_y, grad_gate = torch.ops.accelops.moe_combine_bwd(g, y, expert, slot, gate)
    ref_y, ref_gate = combine_bwd_torch(g, y, expert, slot, gate)
    assert torch.equal(grad_y, ref_y)
    torch.testing.assert_close(grad_gate, ref_gate, rtol=1e-6, atol=1e-6 * m ** 0.5)


def test_bad_routes_are_python_errors_on_cuda():
    expert, slot, gate = _routes(10, 2, 10, 2)
    x = torch.randn(10, 4, device="cuda")
    bad = expert.clone()
    bad[0, 3] = 5
    with pytest.raises(ValueError, match=r"route \[0, 3\] has expert 5"):
        torch.ops.accelops.moe_dispatch(x, bad, slot, None, 2, 10)
    with pytest.raises(ValueError, match="is on cpu"):
        moe_dispatch(x, expert.cpu(), slot, 2, 10)


@pytest.mark.parametrize("k", [1, 2])
def test_moe_layer_on_cuda_equals_the_dense_einsum_layer(k):
    from accelops.moe.experts import Experts
    from accelops.moe.sharded_moe import MOELayer, TopKGate

    torch.manual_seed(0)
    d_model, experts = 64, 4
    expert = torch.nn.Sequential(torch.nn.Linear(d_model, 128), torch.nn.ReLU(), torch.nn.Linear(128, d_model))
    layer = MOELayer(TopKGate(d_model, experts, k=k, capacity_factor=0.75, min_capacity=2),
                     Experts(expert, experts), "ep_size_1", 1, experts).cuda()
    x = torch.randn(4, 100, d_model, device="cuda")

    def dense(t):
        tokens = t.reshape(-1, d_model)
        _l, combine, dispatch, _c = layer.gate(tokens)
        out = layer.experts(torch.einsum("sec,sm->ecm", dispatch.type_as(tokens), tokens).reshape(1, experts, -1, d_model))
        return torch.einsum("sec,ecm->sm", combine.type_as(tokens), out.reshape(experts, -1, d_model)).reshape(t.shape)

    results = []
    for forward in (layer, dense):
        layer.zero_grad()
        xs = x.clone().requires_grad_()
        torch.manual_seed(7)
        out = forward(xs)
        out.square().sum().backward()
        results.append([out.detach(), xs.grad] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # TF32 is off by default for matmuls
