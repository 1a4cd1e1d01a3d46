"""FusedLion on CPU (the op's torch path) against an independent float64 reference of the Lion update,
DeepSpeed's signature and state dicts, and argument errors."""
import copy
import inspect
import warnings

import pytest
import torch
from helpers import fail_fused_build

from accelops.ops import fused_lion as fl
from accelops.ops.fused_lion import FusedLion

SHAPES = [(7,), (33, 5), (1,), (3, 4, 5)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def lion_reference(p, g, m, lr, beta1, beta2, weight_decay):
    """The Lion update from the paper (Chen et al. 2023, Algorithm 2):
    c = b1*m + (1-b1)*g; p = p*(1 - lr*wd) - lr*sign(c); m = b2*m + (1-b2)*g,
    in float32 with each operation rounded on its own (the op's contract; in float64 the sign of a c that
    cancels exactly, frequent with 16-bit values, could differ). Returns the new (p, m), each rounded to its
    input's dtype."""
    p32, g32, m32 = p.float(), g.float(), m.float()
    c = beta1 * m32 + (1 - beta1) * g32
    new_p = p32 * (1 - lr * weight_decay) - lr * torch.sign(c)
    new_m = beta2 * m32 + (1 - beta2) * g32
    return new_p.to(p.dtype), new_m.to(m.dtype)


def assert_same(actual, expected, what=""):
    """Bitwise equal (the torch path does the reference's fp32 operations), NaN equal to NaN."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


class Reference:
    """Per-param reference state (``exp_avg`` in ``state_dtype`` or the param dtype) stepped with lion_reference."""

    def __init__(self, groups, state_dtype=None):
        self.groups = [dict(g, params=[p.detach().clone() for p in g["params"]]) for g in groups]
        self.m = [[torch.zeros_like(p, dtype=state_dtype or p.dtype) for p in g["params"]] for g in self.groups]

    def step(self, grads):
        """grads: per group, per param, a gradient or None (no step for that param)."""
        for g, group in enumerate(self.groups):
            b1, b2 = group["betas"]
            for i, grad in enumerate(grads[g]):
                if grad is not None:
                    group["params"][i], self.m[g][i] = lion_reference(group["params"][i], grad, self.m[g][i],
                                                                      group["lr"], b1, b2, group["weight_decay"])


@pytest.fixture(autouse=True)
def quiet_fallback():
    """The CPU path warns once by design; keep the test output clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def make_params(dtype, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]


def random_grads(params, step, skip=()):
    """Grads in the params' dtypes (None for the indexes in skip), the same for every call with ``step``."""
    gen = torch.Generator().manual_seed(1000 + step)
    grads = [torch.randn(p.shape, generator=gen).to(p.dtype) for p in params]
    return [None if i in skip else g for i, g in enumerate(grads)]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("state_dtype", [None, torch.float32])
def test_matches_the_reference_over_groups_and_skipped_params(dtype, state_dtype):
    """Two groups with their own hyperparameters; some params have no grad in some steps."""
    a, b = make_params(dtype, seed=0), make_params(dtype, seed=1, shapes=[(65,), (2, 9)])
    groups = [dict(params=a, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1),
              dict(params=b, lr=3e-3, betas=(0.8, 0.95), weight_decay=0.0)]
    ref = Reference(groups, state_dtype)
    opt = FusedLion([dict(g) for g in groups], state_dtype=state_dtype)
    for step in range(6):
        grads = [random_grads(a, step, skip={1} if step % 2 else ()),
                 random_grads(b, 50 + step, skip={0} if step == 3 else ())]
        set_grads(a, grads[0])
        set_grads(b, grads[1])
        opt.step()
        ref.step(grads)
    for g, params in enumerate((a, b)):
        for i, p in enumerate(params):
            assert_same(p.detach(), ref.groups[g]["params"][i], f"param {i} of group {g}")
            m = opt.state[p]["exp_avg"]
            assert m.dtype == (state_dtype or dtype)
            assert_same(m, ref.m[g][i], f"exp_avg {i} of group {g}")
    assert float(opt.state[a[1]]["step"]) == 3.0 and float(opt.state[a[0]]["step"]) == 6.0
    assert float(opt.state[b[0]]["step"]) == 5.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_many_16bit_values_with_exact_cancellations(dtype):
    """With 16-bit values, beta1*m + (1-beta1)*g cancels exactly about once in 65K elements per step; the fp32
    rounding then decides the sign, and the torch path rounds as the reference does."""
    p = torch.randn(3, 70_000).to(dtype).requires_grad_()
    opt = FusedLion([p], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    ref_p, ref_m = p.detach().clone(), torch.zeros_like(p)
    for step in range(3):
        g = torch.randn(p.shape, generator=torch.Generator().manual_seed(step)).to(dtype)
        p.grad = g
        opt.step()
        ref_p, ref_m = lion_reference(ref_p, g, ref_m, 1e-2, 0.9, 0.99, 0.1)
    assert_same(p.detach(), ref_p, "param")
    assert_same(opt.state[p]["exp_avg"], ref_m, "exp_avg")


def test_sign_of_zero_and_nan_is_zero():
    """A zero momentum and a zero or NaN grad give no sign step (torch.sign's 0), only the decay."""
    p = torch.ones(4, requires_grad=True)
    opt = FusedLion([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([0.0, float("nan"), 1.0, -1.0])
    opt.step()
    decayed = torch.tensor(1 - 0.1 * 0.5)
    assert p[0] == decayed and p[1] == decayed and p[2] < decayed < p[3]
    assert_same(p.detach(), lion_reference(torch.ones(4), p.grad, torch.zeros(4), 0.1, 0.9, 0.999, 0.5)[0])


def test_state_layout_is_torch_style():
    params = make_params(torch.float32)
    opt = FusedLion(params)
    set_grads(params, random_grads(params, 0))
    opt.step()
    for p in params:
        state = opt.state[p]
        assert set(state) == {"step", "exp_avg"}
        assert state["step"].dtype == torch.float32 and state["step"].shape == () and float(state["step"]) == 1.0
        assert state["exp_avg"].dtype == p.dtype and state["exp_avg"].shape == p.shape
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("set_grad_none", [True, False])
def test_zero_grad_honours_set_grad_none(set_grad_none):
    p = torch.zeros(3, requires_grad=True)
    opt = FusedLion([p], set_grad_none=set_grad_none)
    p.grad = torch.ones(3)
    opt.zero_grad()
    assert (p.grad is None) if set_grad_none else torch.equal(p.grad, torch.zeros(3))
    p.grad = torch.ones(3)
    opt.zero_grad(set_to_none=not set_grad_none)  # torch's argument still wins when given
    assert (p.grad is None) if not set_grad_none else torch.equal(p.grad, torch.zeros(3))


@pytest.mark.parametrize("dtype,state_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                               (torch.float16, torch.float32)])
def test_state_dict_round_trip_continues_exactly(dtype, state_dtype):
    params = make_params(dtype)
    opt = FusedLion(params, lr=1e-2, betas=(0.85, 0.98), weight_decay=0.05, state_dtype=state_dtype)
    for step in range(3):
        set_grads(params, random_grads(params, step))
        opt.step()
    twins = [p.detach().clone().requires_grad_() for p in params]
    other = FusedLion(twins, lr=0.5, state_dtype=state_dtype)  # the loaded groups replace lr, betas, decay
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert other.param_groups[0]["lr"] == 1e-2 and other.param_groups[0]["betas"] == (0.85, 0.98)
    for step in range(3, 5):
        grads = random_grads(params, step)
        set_grads(params, grads)
        set_grads(twins, grads)
        opt.step()
        other.step()
    for p, q in zip(params, twins):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg"], other.state[q]["exp_avg"])
        assert other.state[q]["exp_avg"].dtype == (state_dtype or dtype)
        assert float(other.state[q]["step"]) == 5.0


def test_deepspeed_signature_and_module_paths():
    names = inspect.signature(FusedLion.__init__).parameters
    assert list(names)[:6] == ["self", "params", "lr", "betas", "weight_decay", "set_grad_none"]
    assert (names["lr"].default, names["betas"].default, names["weight_decay"].default,
            names["set_grad_none"].default) == (1e-3, (0.9, 0.999), 0.0, True)
    import accelops.ops
    from accelops.ops.lion import DeepSpeedCPULion, FusedLion as from_lion

    assert accelops.ops.FusedLion is FusedLion and from_lion is FusedLion
    assert "FusedLion" in accelops.ops.__all__ and DeepSpeedCPULion is accelops.ops.DeepSpeedCPULion


def _deepspeed_state(p, step, where="param", extra=None):
    """A state_dict as DeepSpeed's FusedLion saves it (int ``step``, ``exp_avg`` in the param dtype); with
    where="group", an old-style one whose step lives in the group."""
    m = torch.randn(p.shape, generator=torch.Generator().manual_seed(7)).to(p.dtype) * 0.1
    state = {"exp_avg": m, **(extra or {})}
    group = {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1, "params": [0]}
    if where == "param":
        state["step"] = step
    else:
        group["step"] = step
    return {"state": {0: state}, "param_groups": [group]}


@pytest.mark.parametrize("where", ["param", "group"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deepspeed_state_dicts_load_and_continue_like_the_reference(where, dtype):
    p = torch.randn(40).to(dtype).requires_grad_()
    sd = _deepspeed_state(p, 4, where)
    opt = FusedLion([p])
    opt.load_state_dict(copy.deepcopy(sd))
    state = opt.state[p]
    assert state["step"].dtype == torch.float32 and float(state["step"]) == 4.0
    assert state["exp_avg"].dtype == dtype and torch.equal(state["exp_avg"], sd["state"][0]["exp_avg"])
    ref_p, ref_m = p.detach().clone(), sd["state"][0]["exp_avg"].clone()
    g = torch.randn(40).to(dtype)
    p.grad = g.clone()
    opt.step()
    ref_p, ref_m = lion_reference(ref_p, g, ref_m, 1e-2, 0.9, 0.99, 0.1)
    assert_same(p.detach(), ref_p)
    assert_same(opt.state[p]["exp_avg"], ref_m)
    assert float(opt.state[p]["step"]) == 5.0


def test_a_deepspeed_cpu_lion_state_loads_without_its_unused_exp_avg_sq():
    p = torch.randn(10, requires_grad=True)
    sd = _deepspeed_state(p, 2, extra={"exp_avg_sq": torch.zeros(10)})
    opt = FusedLion([p])
    opt.load_state_dict(sd)
    assert set(opt.state[p]) == {"step", "exp_avg"}


def test_fp32_state_dtype_keeps_the_loaded_precision():
    p = torch.randn(10).to(torch.bfloat16).requires_grad_()
    sd = _deepspeed_state(torch.zeros(10), 1)  # fp32 exp_avg
    opt = FusedLion([p], state_dtype=torch.float32)
    opt.load_state_dict(copy.deepcopy(sd))
    assert opt.state[p]["exp_avg"].dtype == torch.float32
    assert torch.equal(opt.state[p]["exp_avg"], sd["state"][0]["exp_avg"])


def test_grad_scaler_unscales_before_the_step():
    torch.manual_seed(0)
    model, twin = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    twin.load_state_dict(model.state_dict())
    opt, twin_opt = FusedLion(model.parameters(), lr=1e-2), FusedLion(twin.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    for _ in range(3):
        x = torch.randn(16, 8)
        opt.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        scaler.step(opt)
        scaler.update()
        twin_opt.zero_grad()
        twin(x).square().mean().backward()
        twin_opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_backend_on_cpu_is_torch_and_says_why():
    opt = FusedLion(make_params(torch.float32))
    assert opt.backend == "torch" and opt.backend_reason == "no fused kernel for device cpu"


def test_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(fl._STEP, "warned", set())
    params = make_params(torch.float32)
    opt = FusedLion(params)
    set_grads(params, random_grads(params, 0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
        opt.step()
    messages = [str(w.message) for w in caught if "fallback" in str(w.message)]
    assert messages == ["FusedLion: no fused kernel for device 'cpu'; using the torch fallback"]


def test_cuda_module_build_failure_warns_once_and_is_not_retried(monkeypatch):
    calls = fail_fused_build(monkeypatch, fl._STEP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fl._STEP.module() is None
        assert fl._STEP.module() is None
    assert calls == ["FusedLionBuilder"]
    assert [str(w.message) for w in caught if "unavailable" in str(w.message)] == [
        "FusedLion: the fused_lion CUDA op is unavailable (nvcc not found); using the torch fallback"]


def test_op_traces_with_compile_fullgraph():
    gen = torch.Generator().manual_seed(3)
    p0, g = torch.randn(11, generator=gen), torch.randn(11, generator=gen)

    def step(p, g, m):
        torch.ops.accelops.fused_lion_step_([p], [g], [m], 1e-2, 0.9, 0.99, 0.1)
        return p, m

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    expected = step(p0.clone(), g, torch.zeros(11))
    got = compiled(p0.clone(), g, torch.zeros(11))
    for e, r in zip(expected, got):
        torch.testing.assert_close(r, e, rtol=0, atol=0)
    assert not torch.equal(got[0], p0)


# --- Bad input: a Python error before anything is updated.

@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), "learning rate"), (dict(betas=(1.5, 0.9)), "betas"), (dict(betas=(0.9, -0.1)), "betas"),
    (dict(betas=(0.9,)), "FusedLion: betas must be a pair"), (dict(weight_decay=-0.1), "weight_decay"),
    (dict(state_dtype=torch.float16), "state_dtype"), (dict(lr=float("nan")), "learning rate"),
])
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusedLion([torch.zeros(2, requires_grad=True)], **kwargs)


def test_betas_of_one_are_allowed():
    """Lion's betas are in the closed interval [0, 1] (beta1 = 1 steps by the momentum's sign alone)."""
    assert FusedLion([torch.zeros(2, requires_grad=True)], betas=(1.0, 1.0)).param_groups[0]["betas"] == (1.0, 1.0)


def test_a_param_listed_twice_is_refused():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="same tensor"):
        FusedLion([p, p])


def _good_args(device="cpu", dtype=torch.float32, n=3):
    ps = [torch.randn(5, 2, device=device).to(dtype) for _ in range(n)]
    return dict(params=ps, grads=[torch.randn_like(p) for p in ps], exp_avgs=[torch.zeros_like(p) for p in ps])


def _strided(t):
    return torch.zeros(t.shape[::-1], dtype=t.dtype, device=t.device).t()


BAD_OP_INPUTS = {
    # name: (edit of the args, expected exception, message pattern)
    "lengths": (lambda a: a["exp_avgs"].pop(), ValueError, "same length"),
    "mixed devices": (lambda a: a["grads"].__setitem__(1, a["grads"][1].to("meta")), ValueError, "device"),
    "state on another device": (lambda a: a["exp_avgs"].__setitem__(2, a["exp_avgs"][2].to("meta")), ValueError,
                                "exp_avgs\\[2\\] is on meta"),
    "sparse grad": (lambda a: a["grads"].__setitem__(0, a["grads"][0].to_sparse()), RuntimeError, "dense"),
    "non-contiguous param": (lambda a: a["params"].__setitem__(1, _strided(a["params"][1])), ValueError,
                             "params\\[1\\] .*contiguous"),
    "non-contiguous state": (lambda a: a["exp_avgs"].__setitem__(0, _strided(a["exp_avgs"][0])), ValueError,
                             "exp_avgs\\[0\\] .*contiguous"),
    "float64 params": (lambda a: [a[k].__setitem__(0, a[k][0].double()) for k in a], TypeError, "float64"),
    "grad dtype": (lambda a: a["grads"].__setitem__(0, a["grads"][0].half()), TypeError, "grads\\[0\\] has dtype"),
    "state dtype": (lambda a: a["exp_avgs"].__setitem__(1, a["exp_avgs"][1].half()), TypeError,
                    "float32 or the param dtype"),
    "grad shape": (lambda a: a["grads"].__setitem__(2, a["grads"][2].new_zeros(7)), ValueError, "shape"),
    "state shape": (lambda a: a["exp_avgs"].__setitem__(2, a["exp_avgs"][2].new_zeros(2, 5)), ValueError,
                    "exp_avgs\\[2\\] has shape"),
    "state not a tensor": (lambda a: a["exp_avgs"].__setitem__(1, None), TypeError, "dense tensor"),
}


def _call_op(a, op=None):
    (op or fl.fused_lion_step_)(a["params"], a["grads"], a["exp_avgs"], 1e-3, 0.9, 0.99, 0.1)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("case", sorted(BAD_OP_INPUTS))
def test_op_rejects_bad_input_and_updates_nothing(case):
    edit, exc, match = BAD_OP_INPUTS[case]
    a = _good_args()
    edit(a)
    before = [p.clone() for p in a["params"]]
    with pytest.raises(exc, match=match):
        if case == "state not a tensor":  # torch.library refuses None in a Tensor list before our check
            fl.check_step(a["params"], a["grads"], a["exp_avgs"])
        else:
            _call_op(a)
    for p, b in zip(a["params"], before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("case", ["float64 params", "state dtype", "grad shape", "state shape"])
def test_fake_impl_rejects_bad_input(case):
    """Meta tensors run the op's fake implementation: the same checks, before any device is involved."""
    edit, exc, match = BAD_OP_INPUTS[case]
    a = _good_args(device="meta")
    edit(a)
    with pytest.raises(exc, match=match):
        _call_op(a, torch.ops.accelops.fused_lion_step_)
    _call_op(_good_args(device="meta"), torch.ops.accelops.fused_lion_step_)  # good input passes


def test_valid_op_input_passes_validation():
    for dtype in DTYPES:
        a = _good_args(dtype=dtype)
        fl.check_step(a["params"], a["grads"], a["exp_avgs"])
        a["exp_avgs"] = [m.float() for m in a["exp_avgs"]]
        fl.check_step(a["params"], a["grads"], a["exp_avgs"])
    fl.check_step([], [], [])


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_sparse_grad_is_rejected():
    p = torch.zeros(5, requires_grad=True)
    p.grad = torch.sparse_coo_tensor([[1]], [1.0], (5,))
    with pytest.raises(RuntimeError, match="sparse"):
        FusedLion([p]).step()


def _stepped_optimizer(dtype=torch.float32, **kwargs):
    params = make_params(dtype)
    opt = FusedLion(params, **kwargs)
    set_grads(params, random_grads(params, 0))
    opt.step()
    set_grads(params, random_grads(params, 1))
    return params, opt


@pytest.mark.parametrize("value, exc, match", [
    (lambda p: torch.zeros(p.numel() + 1), ValueError, "shape"),
    (lambda p: torch.zeros_like(p, device="meta"), ValueError, "device"),
    (lambda p: torch.zeros_like(p, dtype=torch.float16), TypeError, "float32 or the param dtype"),
    (lambda p: _strided(torch.zeros_like(p)), ValueError, "contiguous"),
    (lambda p: None, TypeError, "dense tensor"),
])
def test_step_rejects_state_replaced_by_bad_tensors(value, exc, match):
    params, opt = _stepped_optimizer()
    opt.state[params[1]]["exp_avg"] = value(params[1])
    before = [q.detach().clone() for q in params]
    steps_before = [float(opt.state[q]["step"]) for q in params]
    with pytest.raises(exc, match=f"FusedLion: the state of param 1 of its group: exp_avg.*{match}"):
        opt.step()
    assert getattr(fl._STEP.tls, "fast_path", False) is False
    for q, b in zip(params, before):
        assert torch.equal(q, b)
    assert [float(opt.state[q]["step"]) for q in params] == steps_before


def test_step_rejects_grad_of_another_size_naming_the_param():
    params, opt = _stepped_optimizer()
    params[2].grad = None
    with torch.no_grad():
        params[3].data = torch.randn(4)  # torch keeps the old grad of the old size
    with pytest.raises(ValueError, match="FusedLion: param 3 of its group .* has a gradient of shape"):
        opt.step()


@pytest.mark.parametrize("edit, match", [
    (lambda sd: sd["state"][0].__setitem__("exp_avg", torch.zeros(3)), "has shape .*a state_dict of another model"),
    (lambda sd: sd["state"][0].pop("exp_avg"), "lacks \\['exp_avg'\\]"),
    (lambda sd: sd["state"][0].__setitem__("exp_avg", sd["state"][0]["exp_avg"].tolist()),
     "state 'exp_avg' of param 0 is a list, expected a tensor"),
    (lambda sd: sd["param_groups"][0].__setitem__("maximize", True), "maximize=True"),
])
def test_a_foreign_state_dict_is_refused_before_anything_changes(edit, match):
    params, opt = _stepped_optimizer()
    sd = copy.deepcopy(opt.state_dict())
    edit(sd)
    other = FusedLion(make_params(torch.float32), lr=0.5)
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.5 and not other.state


class _RejectingModule:
    """Stands in for the CUDA extension: rejects everything with a constant message, as its checks do."""

    def __init__(self):
        self.calls = 0

    def fused_lion_step(self, *args):
        self.calls += 1
        raise RuntimeError("fused_lion: tensors must be contiguous")


@pytest.mark.parametrize("fast", [False, True])
def test_cuda_kernel_validates_direct_calls_first_and_explains_extension_errors(monkeypatch, fast):
    module = _RejectingModule()
    monkeypatch.setattr(fl._STEP, "module", lambda: module)
    monkeypatch.setattr(fl._STEP.tls, "fast_path", fast, raising=False)
    a = _good_args()
    a["grads"][1] = _strided(a["grads"][1])
    with pytest.raises(ValueError, match="grads\\[1\\] \\(shape \\(5, 2\\)\\) must be contiguous"):
        fl._STEP.cuda(a["params"], a["grads"], a["exp_avgs"], 1e-3, 0.9, 0.99, 0.0)
    assert module.calls == (1 if fast else 0)
    a = _good_args()  # an error Python cannot explain (say, a failed launch) comes through as it is
    with pytest.raises(RuntimeError, match="tensors must be contiguous"):
        fl._STEP.cuda(a["params"], a["grads"], a["exp_avgs"], 1e-3, 0.9, 0.99, 0.0)


def test_cuda_kernel_passes_the_arguments_to_the_extension(monkeypatch):
    seen = []

    class Module:
        def fused_lion_step(self, *args):
            seen.append(args)

    monkeypatch.setattr(fl._STEP, "module", Module)
    a = _good_args()
    fl._STEP.cuda(a["params"], a["grads"], a["exp_avgs"], 1e-3, 0.9, 0.99, 0.1)
    assert seen == [(a["params"], a["grads"], a["exp_avgs"], 1e-3, 0.9, 0.99, 0.1)]
