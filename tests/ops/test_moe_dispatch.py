"""MoE dispatch/combine from routing indices: the CPU kernel and the forced torch fallback against the torch
reference, both against the dense einsum path MOELayer used before, the gating functions' routes, MOELayer end
to end, and the validator's errors.

Tolerances, per element: the kernel and the reference do the same float32 operations in the same order (one
rounding to the dtype), so outputs and the tokens'/expert outputs' gradients are equal exactly in every dtype;
the gates' gradients are float32 dot products over M (summation order: 1e-6 relative, plus sqrt(M) ulps
absolute). Against the dense einsum: float32 within 1e-6; bfloat16/float16 rounded the gate to the dtype and
summed in it there, so 2**-7 (bf16) / 2**-10 (fp16) relative plus the same absolute.
"""
import warnings

import pytest
import torch

from accelops.moe.experts import Experts
from accelops.moe.sharded_moe import MOELayer, TopKGate, routes_from_masks, top1gating, top2gating
from accelops.ops.moe_dispatch import MoEDispatcher, moe_combine, moe_dispatch
from accelops.ops.moe_dispatch.ops import CPU_LOADER, moe_combine_bwd_op, moe_combine_op, moe_dispatch_op
from accelops.ops.moe_dispatch.reference import combine_bwd_torch, combine_torch, dispatch_torch
from helpers import kernel_or_fallback

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DENSE_TOL = {torch.float32: dict(rtol=1e-6, atol=1e-6), torch.bfloat16: dict(rtol=2**-7, atol=2**-7),
             torch.float16: dict(rtol=2**-10, atol=2**-10)}


@pytest.fixture(scope="session")
def moe_kernel():
    """Build (or load from the JIT cache) the cpu_moe_dispatch op once per session."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed build must fail the test, not fall back silently
        module = CPU_LOADER.module()
    assert module is not None
    return module


@pytest.fixture(params=["kernel", "torch"])
def path(request, monkeypatch):
    """Run a test once on the compiled kernel and once on the forced torch fallback."""
    return kernel_or_fallback(request, monkeypatch, "moe_kernel")


def _routes(tokens, experts, capacity, k, seed=0, drop_every=3):
    """Random routes: distinct (expert, slot) rows, every ``drop_every``-th token dropped from its last route
    and token 1 dropped from all."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(experts * capacity, generator=gen)[:k * tokens]
    expert = (rows // capacity).int().reshape(k, tokens)
    slot = (rows % capacity).int().reshape(k, tokens)
    expert[k - 1, ::drop_every] = -1
    if tokens > 1:
        expert[:, 1] = -1
    gate = torch.rand(k, tokens, generator=gen)
    return expert, slot, gate


def _dense(expert, slot, gate, experts, capacity):
    """The (S, E, C) combine weights of the routes (what the gating functions returned before)."""
    k, tokens = expert.shape
    combine = torch.zeros(tokens, experts, capacity)
    for j in range(k):
        for s in range(tokens):
            if expert[j, s] >= 0:
                combine[s, expert[j, s], slot[j, s]] = gate[j, s]
    return combine


def _data(tokens, experts, capacity, m, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen).to(dtype) for shape in
            ((tokens, m), (experts, capacity, m), (tokens, m), (experts, capacity, m))]


def _run(dispatch, combine, x, y, gate, expert, slot, experts, capacity, grad_out, grad_buf):
    xs, ys, gs = (t.clone().requires_grad_() for t in (x, y, gate))
    buffer = dispatch(xs, expert, slot, experts, capacity)
    out = combine(ys, expert, slot, gs)
    (buffer.float() * grad_buf.float()).sum().backward()
    out.backward(grad_out)
    return [buffer.detach(), out.detach(), xs.grad, ys.grad, gs.grad]


def _reference(x, y, gate, expert, slot, experts, capacity, grad_out, grad_buf):
    return _run(lambda t, e, s, ne, c: dispatch_torch(t, e, s, None, ne, c), combine_torch, x, y, gate, expert, slot,
                experts, capacity, grad_out, grad_buf)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 7, 64, 1031])  # 1031: not a multiple of any vector width
@pytest.mark.parametrize("k", [1, 2])
def test_op_equals_the_torch_reference(path, dtype, m, k):
    tokens, experts, capacity = 40, 4, 24
    expert, slot, gate = _routes(tokens, experts, capacity, k)
    x, y, grad_out, grad_buf = _data(tokens, experts, capacity, m, dtype)
    ours = _run(moe_dispatch, moe_combine, x, y, gate, expert, slot, experts, capacity, grad_out, grad_buf)
    ref = _reference(x, y, gate, expert, slot, experts, capacity, grad_out, grad_buf)
    for name, a, b in zip(("buffer", "out", "grad tokens", "grad expert_output"), ours, ref):
        assert a.dtype == b.dtype == dtype, name
        assert torch.equal(a, b), (name, (a.float() - b.float()).abs().max())
    torch.testing.assert_close(ours[4], ref[4], rtol=1e-6, atol=1e-6 * m ** 0.5)
    assert ours[4].dtype == torch.float32
    dropped = expert < 0
    assert torch.all(ours[4][dropped] == 0)  # a dropped route's gate has no gradient
    assert torch.all(ours[1][1] == 0)  # token 1 has no route: zeros


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k", [1, 2])
def test_op_equals_the_dense_einsum_path(path, dtype, k):
    tokens, experts, capacity, m = 48, 6, 20, 33
    expert, slot, gate = _routes(tokens, experts, capacity, k, seed=5)
    x, y, grad_out, grad_buf = _data(tokens, experts, capacity, m, dtype, seed=2)
    ours = _run(moe_dispatch, moe_combine, x, y, gate, expert, slot, experts, capacity, grad_out, grad_buf)
    combine = _dense(expert, slot, gate, experts, capacity).requires_grad_()
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    buffer = torch.einsum("sec,sm->ecm", combine.bool().type_as(xs), xs)
    out = torch.einsum("sec,ecm->sm", combine.type_as(xs), ys)
    (buffer.float() * grad_buf.float()).sum().backward()
    out.backward(grad_out)
    assert torch.equal(ours[0], buffer.detach())  # a copy of each row in both
    for a, b in ((ours[1], out.detach()), (ours[2], xs.grad), (ours[3], ys.grad)):
        torch.testing.assert_close(a.float(), b.float(), **DENSE_TOL[dtype])
    dense_gate_grad = torch.stack([combine.grad[torch.arange(tokens), expert[j].clamp(min=0).long(), slot[j].long()]
                                   for j in range(k)]) * (expert >= 0)
    tol = DENSE_TOL[dtype]
    torch.testing.assert_close(ours[4], dense_gate_grad, rtol=tol["rtol"], atol=tol["atol"] * m ** 0.5)


def test_every_route_dropped_and_empty_shapes(path):
    expert = torch.full((2, 5), -1, dtype=torch.int32)
    slot = torch.zeros((2, 5), dtype=torch.int32)
    x = torch.randn(5, 3, requires_grad=True)
    buffer = moe_dispatch(x, expert, slot, 2, 4)
    assert buffer.shape == (2, 4, 3) and torch.all(buffer == 0)
    y = torch.randn(2, 4, 3, requires_grad=True)
    gate = torch.rand(2, 5, requires_grad=True)
    out = moe_combine(y, expert, slot, gate)
    (out.sum() + buffer.sum()).backward()
    assert torch.all(out == 0) and torch.all(x.grad == 0) and torch.all(y.grad == 0) and torch.all(gate.grad == 0)
    # no buffer rows at all (E * C == 0), and no tokens
    assert moe_dispatch(torch.randn(5, 3), expert, slot, 0, 0).shape == (0, 0, 3)
    assert moe_combine(torch.randn(0, 0, 3), expert, slot).shape == (5, 3)
    none = torch.zeros((1, 0), dtype=torch.int32)
    assert moe_dispatch(torch.randn(0, 3), none, none, 2, 2).shape == (2, 2, 3)


def test_combine_without_gate_weighs_routes_one(path):
    expert, slot, _gate = _routes(30, 3, 25, 2)
    x, y, _g, _b = _data(30, 3, 25, 9, torch.float32)
    ones = torch.ones(2, 30)
    assert torch.equal(moe_combine(y, expert, slot), moe_combine(y, expert, slot, ones))


def test_the_ops_pass_torch_library_opcheck(moe_kernel):
    expert, slot, gate = _routes(12, 3, 10, 2)
    x, y, g, _b = _data(12, 3, 10, 5, torch.float32)
    for op, args in ((moe_dispatch_op, (x.requires_grad_(), expert, slot, None, 3, 10)),
                     (moe_combine_op, (y.requires_grad_(), expert, slot, gate.requires_grad_())),
                     (moe_combine_bwd_op, (g, y.detach(), expert, slot, gate.detach()))):
        torch.library.opcheck(op, args)


def test_the_front_end_names_its_path(moe_kernel, monkeypatch):
    monkeypatch.delenv("ACCELOPS_CPU_OPS_FALLBACK", raising=False)
    front = MoEDispatcher("cpu")
    assert front.backend == "kernel"
    assert front.backend_reason.startswith("the compiled cpu_moe_dispatch op runs (CPU tier ")
    monkeypatch.setenv("ACCELOPS_CPU_OPS_FALLBACK", "1")
    assert front.backend == "torch" and front.backend_reason == "ACCELOPS_CPU_OPS_FALLBACK is set"
    assert MoEDispatcher("meta").backend_reason == "no MoE dispatch kernel for device meta"


# ---- the validator: clear Python errors, never a crash ----

def _good():
    expert, slot, gate = _routes(6, 2, 8, 2)
    return torch.randn(6, 4), expert, slot, gate, torch.randn(2, 8, 4)


@pytest.mark.parametrize("case, error, words", [
    ("tokens_dtype", TypeError, "tokens must be float32, bfloat16 or float16"),
    ("tokens_3d", ValueError, "tokens must have shape [S, M]"),
    ("expert_int64", TypeError, "expert must be int32"),
    ("slot_shape", ValueError, "slot must have expert's shape"),
    ("columns", ValueError, "expert has shape (2, 6), expected [k, 7] (one column per token)"),
    ("expert_high", ValueError, "expected expert in [-1, 2)"),
    ("expert_low", ValueError, "expected expert in [-1, 2)"),
    ("slot_high", ValueError, "slot in [0, 8)"),
    ("shared_row", ValueError, "each (expert, slot) buffer row takes one token"),
    ("capacity", ValueError, "capacity must be an int >= 0"),
])
def test_dispatch_rejects_bad_input_with_a_clear_error(path, case, error, words):
    x, expert, slot, _gate, _y = _good()
    e, c = 2, 8
    if case == "tokens_dtype":
        x = x.double()
    elif case == "tokens_3d":
        x = x.reshape(6, 2, 2)
    elif case == "expert_int64":
        expert = expert.long()
    elif case == "slot_shape":
        slot = slot[:1]
    elif case == "columns":
        x = torch.randn(7, 4)
    elif case == "expert_high":
        expert[0, 2] = 2
    elif case == "expert_low":
        expert[1, 0] = -2
    elif case == "slot_high":
        expert[0, 3], slot[0, 3] = 1, 8
    elif case == "shared_row":
        expert[0, 0], slot[0, 0], expert[1, 4], slot[1, 4] = 1, 3, 1, 3
    elif case == "capacity":
        c = -1
    with pytest.raises(error) as info:
        moe_dispatch(x, expert, slot, e, c)
    assert words in str(info.value)


def test_combine_rejects_bad_input_with_a_clear_error(path):
    _x, expert, slot, gate, y = _good()
    with pytest.raises(TypeError, match="gate must be float32"):
        moe_combine(y, expert, slot, gate.double())
    with pytest.raises(ValueError, match=r"expert_output must have shape \[E, C, M\]"):
        moe_combine(y[0], expert, slot, gate)
    with pytest.raises(ValueError, match=r"gate must have expert's shape"):
        moe_combine(y, expert, slot, gate[:1])
    bad = expert.clone()
    bad[1, 5] = 7
    with pytest.raises(ValueError, match=r"route \[1, 5\] has expert 7"):
        moe_combine(y, bad, slot, gate)
    with pytest.raises(ValueError, match="expected cpu"):
        moe_combine(y, expert, slot, gate.to("meta"))


def test_the_kernel_checks_indices_itself(moe_kernel, monkeypatch):
    """Routes that skip the Python value check (check_routes=False) still end as errors, not crashes."""
    monkeypatch.delenv("ACCELOPS_CPU_OPS_FALLBACK", raising=False)
    x, expert, slot, gate, y = _good()
    bad = expert.clone()
    bad[0, 0] = 99
    with pytest.raises(RuntimeError, match="out of range"):
        moe_dispatch(x, bad, slot, 2, 8, check_routes=False)
    with pytest.raises(RuntimeError, match="out of range"):
        moe_combine(y, bad, slot, gate, check_routes=False)
    shared = expert.clone()
    shared[0, 0], slot[0, 0], shared[1, 4], slot[1, 4] = 1, 3, 1, 3
    with pytest.raises(RuntimeError, match="another route already owns"):
        moe_dispatch(x, shared, slot, 2, 8, check_routes=False)


# ---- the gating functions' routes and MOELayer ----

def _gate_both(fn, seed, *args, **kwargs):
    torch.manual_seed(seed)
    dense = fn(*args, **kwargs)
    torch.manual_seed(seed)
    routed = fn(*args, **kwargs, return_routes=True)
    return dense, routed


@pytest.mark.parametrize("gating", ["top1", "top1_used", "top1_rsample", "top1_nodrop", "top2", "top2_nodrop"])
def test_gating_routes_are_the_dense_masks(gating):
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    if gating.startswith("top1"):
        used = (torch.arange(64) % 4 != 0).float() if gating == "top1_used" else None
        kwargs = dict(used_token=used, noisy_gate_policy="RSample" if gating == "top1_rsample" else None,
                      drop_tokens=gating != "top1_nodrop")
        (l_aux, combine, dispatch, counts), (l_aux2, routes, counts2) = _gate_both(top1gating, 0, logits, 1.0, 4, **kwargs)
        assert routes.expert.shape == (1, 64)
    else:
        kwargs = dict(drop_tokens=gating != "top2_nodrop")
        (l_aux, combine, dispatch, counts), (l_aux2, routes, counts2) = _gate_both(top2gating, 0, logits, 0.5, 4, **kwargs)
        assert routes.expert.shape == (2, 64)
    assert torch.equal(l_aux, l_aux2) and torch.equal(counts, counts2)
    assert (routes.num_experts, routes.capacity) == combine.shape[1:]
    assert routes.expert.dtype == routes.slot.dtype == torch.int32 and routes.gate.dtype == torch.float32
    rebuilt = _dense(routes.expert, routes.slot, routes.gate.detach(), *combine.shape[1:])
    assert torch.equal(rebuilt, combine.detach())
    assert torch.equal(rebuilt.bool(), dispatch)
    if "nodrop" not in gating:
        assert (routes.expert < 0).any()  # capacity dropped some tokens
    from_masks = routes_from_masks(combine)
    assert torch.equal(_dense(from_masks.expert, from_masks.slot, from_masks.gate.detach(), *combine.shape[1:]),
                       combine.detach())
    # gradients reach the logits the same way
    grad_dense = torch.autograd.grad((combine * torch.arange(combine.numel()).reshape(combine.shape)).sum(), logits)[0]
    weights = torch.stack([torch.where(routes.expert[j] >= 0, routes.expert[j] * combine.shape[2] + routes.slot[j], 0)
                           for j in range(routes.expert.shape[0])]).long()
    index_weight = torch.arange(64).unsqueeze(0) * combine.shape[1] * combine.shape[2] + weights
    grad_routes = torch.autograd.grad((routes.gate * index_weight * (routes.expert >= 0)).sum(), logits)[0]
    torch.testing.assert_close(grad_routes, grad_dense, rtol=1e-6, atol=1e-6)


def _dense_layer_forward(layer, x):
    """MOELayer's forward as it was: dense masks and einsum."""
    d_model = x.shape[-1]
    tokens = x.reshape(-1, d_model)
    _l_aux, combine, dispatch, _counts = layer.gate(tokens)
    dispatched = torch.einsum("sec,sm->ecm", dispatch.type_as(tokens), tokens)
    out = layer.experts(dispatched.reshape(1, layer.num_local_experts, -1, d_model))
    out = out.reshape(layer.num_local_experts, -1, d_model)
    return torch.einsum("sec,ecm->sm", combine.type_as(tokens), out).reshape(x.shape)


class _FourResultGate(torch.nn.Module):
    """A gate with DeepSpeed's four results only (no ``routes``): MOELayer uses routes_from_masks."""

    def __init__(self, gate):
        super().__init__()
        self.inner = gate

    def forward(self, *args):
        return self.inner(*args)

    def _set_ep_group(self, group):
        pass


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("gate_kind", ["topk", "four_results"])
def test_moe_layer_equals_the_dense_einsum_layer(path, k, gate_kind):
    torch.manual_seed(0)
    d_model, experts = 16, 4
    expert = torch.nn.Sequential(torch.nn.Linear(d_model, 32), torch.nn.ReLU(), torch.nn.Linear(32, d_model))
    gate = TopKGate(d_model, experts, k=k, capacity_factor=0.75, min_capacity=2, noisy_gate_policy="RSample" if k == 1
                    else None)
    if gate_kind == "four_results":
        gate = _FourResultGate(gate)
    layer = MOELayer(gate, Experts(expert, experts), "ep_size_1", 1, experts)
    x = torch.randn(2, 20, d_model)
    results = []
    for forward in (layer, lambda t: _dense_layer_forward(layer, t)):
        layer.zero_grad()
        xs = x.clone().requires_grad_()
        torch.manual_seed(7)  # the same gate noise and random token selection
        out = forward(xs)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append([out.detach(), xs.grad] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert MOELayer.dispatcher("cpu").backend == ("kernel" if path == "kernel" else "torch")
