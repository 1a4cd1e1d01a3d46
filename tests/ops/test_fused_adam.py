"""FusedAdam on CPU (the torch fallback path) against torch.optim.Adam/AdamW, plus argument errors."""
import copy
import warnings

import pytest
import torch
from helpers import fail_fused_build

from accelops.ops import fused_adam as fa
from accelops.ops.fused_adam import FusedAdam

SHAPES = [(7,), (33, 5), (1,), (3, 4, 5)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
       torch.float16: dict(rtol=1e-3, atol=1e-5)}


@pytest.fixture(autouse=True)
def quiet_fallback():
    """The CPU path warns once by design; keep the test output clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def make_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def set_grads(groups, step, skip=()):
    """Same random grads for every param list; params whose index is in skip get none."""
    gen = torch.Generator().manual_seed(1000 + step)
    grads = [torch.randn(p.shape, generator=gen) for p in groups[0]]
    for params in groups:
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if i in skip else g.to(p.dtype, copy=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_matches_torch_adam(dtype, adam_w_mode):
    ours = make_params(dtype)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, adam_w_mode=adam_w_mode)
    cls = torch.optim.AdamW if adam_w_mode else torch.optim.Adam
    ref_opt = cls(ref, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, fused=True)
    for step in range(6):
        set_grads([ours, ref], step)
        opt.step()
        ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[dtype])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt.state[p][key], ref_opt.state[r][key], **TOL[dtype])


def test_per_parameter_step_counts():
    ours = make_params(torch.float32)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.0)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.0, foreach=False)
    for step in range(5):
        set_grads([ours, ref], step, skip={1} if step % 2 else {0, 3})
        opt.step()
        ref_opt.step()
    for p, r in zip(ours, ref):
        assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
        assert float(opt.state[p]["step"]) == float(ref_opt.state[r]["step"])
        torch.testing.assert_close(p, r, **TOL[torch.float32])
    assert float(opt.state[ours[0]]["step"]) != float(opt.state[ours[1]]["step"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_state_for_16bit_params(dtype):
    """Each step equals torch AdamW on an fp32 copy of the 16-bit param, rounded back."""
    ours = make_params(dtype)
    ref16 = clone_params(ours)
    ref32 = [p.detach().float().requires_grad_() for p in ours]
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.1, state_dtype=torch.float32)
    ref_opt = torch.optim.AdamW(ref32, lr=1e-2, weight_decay=0.1, foreach=False)
    for step in range(5):
        set_grads([ours, ref16], step)
        with torch.no_grad():
            for r16, r32 in zip(ref16, ref32):
                r32.copy_(r16.float())
                r32.grad = r16.grad.float()
        opt.step()
        ref_opt.step()
        with torch.no_grad():
            for r16, r32 in zip(ref16, ref32):
                r16.copy_(r32)
    for p, r16, r32 in zip(ours, ref16, ref32):
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(p, r16, **TOL[dtype])
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_opt.state[r32]["exp_avg_sq"], rtol=1e-5, atol=1e-7)


def test_without_bias_correction_matches_float64_formula():
    ours = make_params(torch.float32)
    ref = [p.detach().double() for p in ours]
    m = [torch.zeros_like(r) for r in ref]
    v = [torch.zeros_like(r) for r in ref]
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.99, 1e-8, 0.01
    opt = FusedAdam(ours, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, bias_correction=False)
    for step in range(4):
        set_grads([ours], step)
        for i, p in enumerate(ours):
            g = p.grad.double()
            ref[i] = ref[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            ref[i] = ref[i] - lr * m[i] / (v[i].sqrt() + eps)
        opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p.double(), r, rtol=1e-5, atol=1e-6)


def test_found_inf_skips_the_step_and_grad_scale_unscales():
    ours = make_params(torch.float32)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.01, fused=True)
    set_grads([ours, ref], 0)
    before = [p.detach().clone() for p in ours]
    for flag in (1.0, 2.0):  # GradScaler sums the flags of several devices: 2.0 is still one skipped step
        opt.found_inf = torch.full((), flag)
        opt.step()
        for p, b in zip(ours, before):
            assert torch.equal(p, b)
            assert float(opt.state[p]["step"]) == 0.0
    opt.found_inf = torch.zeros(())
    opt.grad_scale = torch.full((), 64.0)
    for p in ours:
        p.grad.mul_(64.0)
    opt.step()
    ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[torch.float32])


def test_grad_scaler_matches_torch():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    ref_model = torch.nn.Linear(8, 4)
    ref_model.load_state_dict(model.state_dict())
    opt = FusedAdam(model.parameters(), lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    scaler, ref_scaler = torch.amp.GradScaler("cpu", init_scale=256.0), torch.amp.GradScaler("cpu", init_scale=256.0)
    for _ in range(3):
        x = torch.randn(16, 8)
        for mod, o, s in ((model, opt, scaler), (ref_model, ref_opt, ref_scaler)):
            o.zero_grad()
            s.scale(mod(x).square().mean()).backward()
            s.step(o)
            s.update()
    for p, r in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, r, **TOL[torch.float32])


@pytest.mark.parametrize("direction", ["fused_to_torch", "torch_to_fused"])
def test_state_dict_moves_between_fused_adam_and_torch_adamw(direction):
    """Train 3 steps with one optimizer, load its state into the other (torch's groups lack
    bias_correction), then 2 more steps of both must agree."""
    ours = make_params(torch.float32)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.01, foreach=False)
    (src, src_params), (dst, dst_params) = ((opt, ours), (ref_opt, ref))[::1 if direction == "fused_to_torch" else -1]
    for step in range(3):
        set_grads([src_params], step)
        src.step()
    with torch.no_grad():
        for d, s in zip(dst_params, src_params):
            d.copy_(s)
    dst.load_state_dict(copy.deepcopy(src.state_dict()))  # state_dict() shares the tensors
    for step in range(3, 5):
        set_grads([ours, ref], step)
        opt.step()
        ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[torch.float32])


def test_load_state_dict_keeps_fp32_state_of_16bit_params():
    ours = make_params(torch.bfloat16)
    opt = FusedAdam(ours, lr=1e-2, state_dtype=torch.float32)
    set_grads([ours], 0)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    other = FusedAdam(clone_params(ours), lr=1e-2, state_dtype=torch.float32)
    other.load_state_dict(saved)
    for p, q in zip(ours, other.param_groups[0]["params"]):
        for key in ("exp_avg", "exp_avg_sq"):
            assert other.state[q][key].dtype == torch.float32
            assert torch.equal(other.state[q][key], opt.state[p][key])
        assert other.state[q]["step"].dtype == torch.float32 and float(other.state[q]["step"]) == 1.0


def test_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(fa._STEP, "warned", set())
    params = make_params(torch.float32)
    opt = FusedAdam(params)
    set_grads([params], 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
        opt.step()
    messages = [str(w.message) for w in caught if "fallback" in str(w.message)]
    assert len(messages) == 1 and "cpu" in messages[0]


def test_cuda_module_build_failure_warns_once_and_is_not_retried(monkeypatch):
    calls = fail_fused_build(monkeypatch, fa._STEP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fa._STEP.module() is None
        assert fa._STEP.module() is None
    assert calls == ["FusedAdamBuilder"]
    assert [str(w.message) for w in caught if "unavailable" in str(w.message)] == [
        "FusedAdam: the fused_adam CUDA op is unavailable (nvcc not found); using the torch fallback"]


def test_op_traces_with_compile_fullgraph():
    gen = torch.Generator().manual_seed(3)
    tensors = [torch.randn(11, generator=gen) for _ in range(4)]

    def step(p, g, m, v, s):
        torch.ops.accelops.fused_adam_step_([p], [g], [m], [v], [s], 1e-2, 0.9, 0.999, 1e-8, 0.1, True, True,
                                            None, None)
        return p, m, v

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args_eager = [tensors[0].clone(), tensors[1], torch.zeros(11), torch.zeros(11), torch.ones(())]
    args_compiled = [t.clone() for t in args_eager]
    expected = step(*args_eager)
    got = compiled(*args_compiled)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert not torch.equal(args_compiled[0], tensors[0])  # the param was updated in place


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_sparse_grad_is_rejected():
    p = torch.zeros(5, requires_grad=True)
    p.grad = torch.sparse_coo_tensor([[1]], [1.0], (5,))
    with pytest.raises(RuntimeError, match="sparse"):
        FusedAdam([p]).step()


def test_non_contiguous_param_is_rejected():
    p = torch.randn(6, 4).t().requires_grad_()
    p.grad = torch.randn(6, 4).t()
    before = p.detach().clone()
    with pytest.raises(ValueError, match="contiguous"):
        FusedAdam([p]).step()
    assert torch.equal(p, before)


def test_unsupported_dtype_is_rejected():
    p = torch.randn(3, dtype=torch.float64, requires_grad=True)
    p.grad = torch.randn(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        FusedAdam([p]).step()


def test_mixed_devices_in_a_group_are_rejected():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, device="meta", requires_grad=True)
    a.grad = torch.randn(3)
    b.grad = torch.randn(3, device="meta")
    with pytest.raises(ValueError, match="device"):
        FusedAdam([a, b]).step()


@pytest.mark.parametrize("kwargs, match", [
    (dict(amsgrad=True), "amsgrad"), (dict(lr=-1.0), "learning rate"), (dict(betas=(1.0, 0.9)), "betas"),
    (dict(eps=-1.0), "epsilon"), (dict(weight_decay=-0.1), "weight_decay"),
    (dict(state_dtype=torch.float16), "state_dtype"),
])
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusedAdam([torch.zeros(2, requires_grad=True)], **kwargs)


def test_op_rejects_lists_of_different_lengths():
    t = torch.zeros(3)
    with pytest.raises(ValueError, match="same length"):
        fa.fused_adam_step_([t], [t], [t.clone()], [t.clone()], [], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True)


# --- Bad input: every case raises a Python error before any kernel runs (the C++ checks of the CUDA
# op are a last line with constant messages). The validation is device-independent, so it is checked
# here with CPU and meta tensors; tests/ops/test_fused_adam_gpu.py repeats it with CUDA tensors.

def _good_args(device="cpu", dtype=torch.float32, n=3):
    ps = [torch.randn(5, 2, device=device).to(dtype) for _ in range(n)]
    return dict(params=ps, grads=[torch.randn_like(p) for p in ps], exp_avgs=[torch.zeros_like(p) for p in ps],
                exp_avg_sqs=[torch.zeros_like(p) for p in ps],
                steps=[torch.ones((), device=device) for _ in ps])


def _strided(t):
    """A non-contiguous tensor of t's shape with defined values (uninitialised memory may hold NaNs, and a
    NaN is not equal to itself in the "nothing was updated" checks)."""
    return torch.zeros(t.shape[::-1], dtype=t.dtype, device=t.device).t()


BAD_OP_INPUTS = {
    # name: (edit of the args, expected exception, message pattern)
    "lengths": (lambda a: a["steps"].pop(), ValueError, "same length"),
    "mixed devices": (lambda a: a["grads"].__setitem__(1, a["grads"][1].to("meta")), ValueError, "device"),
    "state on another device": (lambda a: a["exp_avgs"].__setitem__(2, a["exp_avgs"][2].to("meta")), ValueError,
                                "device"),
    "sparse grad": (lambda a: a["grads"].__setitem__(0, a["grads"][0].to_sparse()), RuntimeError, "dense"),
    "non-contiguous param": (lambda a: a["params"].__setitem__(1, _strided(a["params"][1])), ValueError,
                             "contiguous"),
    "non-contiguous grad": (lambda a: a["grads"].__setitem__(1, _strided(a["grads"][1])), ValueError, "contiguous"),
    "non-contiguous state": (lambda a: a["exp_avg_sqs"].__setitem__(0, _strided(a["exp_avg_sqs"][0])), ValueError,
                             "contiguous"),
    "float64 params": (lambda a: [a[k].__setitem__(0, a[k][0].double()) for k in
                                  ("params", "grads", "exp_avgs", "exp_avg_sqs")], TypeError, "float64"),
    "grad dtype": (lambda a: a["grads"].__setitem__(0, a["grads"][0].half()), TypeError, "grads\\[0\\] has dtype"),
    "state dtype": (lambda a: [a[k].__setitem__(1, a[k][1].half()) for k in ("exp_avgs", "exp_avg_sqs")],
                    TypeError, "float32 or the param dtype"),
    "state dtypes differ": (lambda a: a["exp_avg_sqs"].__setitem__(1, a["exp_avg_sqs"][1].half()), TypeError,
                            "the same for both"),
    "grad shape": (lambda a: a["grads"].__setitem__(2, a["grads"][2].new_zeros(7)), ValueError, "shape"),
    "state shape": (lambda a: a["exp_avgs"].__setitem__(2, a["exp_avgs"][2].new_zeros(2, 5)), ValueError, "shape"),
    "step numel": (lambda a: a["steps"].__setitem__(0, torch.ones(2)), ValueError, "one-element float32"),
    "step dtype": (lambda a: a["steps"].__setitem__(0, torch.ones((), dtype=torch.float64)), ValueError,
                   "one-element float32"),
    "step device": (lambda a: a["steps"].__setitem__(0, torch.ones((), device="meta")), ValueError,
                    "one-element float32"),
    "grad_scale numel": (lambda a: a.__setitem__("grad_scale", torch.ones(3)), ValueError, "grad_scale"),
    "found_inf dtype": (lambda a: a.__setitem__("found_inf", torch.zeros((), dtype=torch.int32)), ValueError,
                        "found_inf"),
}


def _call_op(a, op=None):
    op = op or fa.fused_adam_step_
    op(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["steps"], 1e-3, 0.9, 0.999, 1e-8, 0.0, True,
       True, a.get("grad_scale"), a.get("found_inf"))


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("case", sorted(BAD_OP_INPUTS))
def test_validation_rejects_bad_op_input(case):
    edit, exc, match = BAD_OP_INPUTS[case]
    a = _good_args()
    edit(a)
    with pytest.raises(exc, match=match):
        fa.check_step(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["steps"],
                               a.get("grad_scale"), a.get("found_inf"))


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("case", ["lengths", "non-contiguous param", "float64 params", "state dtype", "grad shape",
                                  "step numel", "grad_scale numel"])
def test_op_rejects_bad_input_and_updates_nothing(case):
    edit, exc, match = BAD_OP_INPUTS[case]
    a = _good_args()
    edit(a)
    before = [p.clone() for p in a["params"]]
    with pytest.raises(exc, match=match):
        _call_op(a)
    for p, b in zip(a["params"], before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("case", ["float64 params", "state dtype", "grad shape", "step numel", "non-contiguous grad"])
def test_fake_impl_rejects_bad_input(case):
    """Meta tensors run the op's fake implementation: the same checks, before any device is involved."""
    edit, exc, match = BAD_OP_INPUTS[case]
    a = _good_args(device="meta")
    edit(a)
    with pytest.raises(exc, match=match):
        _call_op(a, torch.ops.accelops.fused_adam_step_)
    _call_op(_good_args(device="meta"), torch.ops.accelops.fused_adam_step_)  # good input passes


def test_valid_op_input_passes_validation():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        a = _good_args(dtype=dtype)
        fa.check_step(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["steps"],
                               torch.ones(1), torch.zeros(()))
    fa.check_step([], [], [], [], [])


def _stepped_optimizer(dtype=torch.float32, **kwargs):
    params = make_params(dtype)
    opt = FusedAdam(params, **kwargs)
    set_grads([params], 0)
    opt.step()
    set_grads([params], 1)
    return params, opt


@pytest.mark.parametrize("key, value, exc, match", [
    ("exp_avg", lambda p: torch.zeros(p.numel() + 1), ValueError, "shape"),
    ("exp_avg_sq", lambda p: torch.zeros_like(p, device="meta"), ValueError, "device"),
    ("exp_avg", lambda p: torch.zeros_like(p, dtype=torch.float16), TypeError, "float32 or the param dtype"),
    ("exp_avg_sq", lambda p: _strided(torch.zeros_like(p)), ValueError, "contiguous"),
    ("step", lambda p: torch.ones(2), ValueError, "one-element float32"),
    ("exp_avg", lambda p: None, TypeError, "dense tensor"),
])
def test_step_rejects_state_replaced_by_bad_tensors(key, value, exc, match):
    params, opt = _stepped_optimizer()
    p = params[1]
    opt.state[p][key] = value(p)
    before = [q.detach().clone() for q in params]
    steps_before = [float(opt.state[q]["step"]) for q in params if q is not p or key != "step"]
    with pytest.raises(exc, match=match if key == "step" else f"param 1 of its group.*{match}"):
        opt.step()
    assert getattr(fa._STEP.tls, "fast_path", False) is False
    for q, b in zip(params, before):  # nothing was updated, step counts are as before
        assert torch.equal(q, b)
    assert [float(opt.state[q]["step"]) for q in params if q is not p or key != "step"] == steps_before


def test_step_rejects_state_left_behind_when_the_param_changes():
    params, opt = _stepped_optimizer()
    with torch.no_grad():
        params[0].data = torch.randn(9)  # same object, new size: the state and the grad no longer fit
    params[0].grad = torch.randn(9)
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    params, opt = _stepped_optimizer()
    params[0].grad = None
    with torch.no_grad():
        params[0].data = torch.randn(9)
    params[0].grad = torch.randn(9)
    opt.state[params[0]]["exp_avg"] = torch.zeros(9)  # one state tensor replaced, the other still stale
    with pytest.raises(ValueError, match="exp_avg_sq has shape"):
        opt.step()


def test_step_rejects_grad_of_another_size():
    params, opt = _stepped_optimizer()
    with torch.no_grad():
        params[1].data = torch.randn(4)  # torch keeps the old grad of the old size
    with pytest.raises(ValueError, match="gradient of shape"):
        opt.step()


def test_load_state_dict_of_another_model_is_rejected_before_anything_changes():
    params, opt = _stepped_optimizer()
    other = FusedAdam([torch.zeros(s[::-1] + (2,), requires_grad=True) for s in SHAPES], lr=0.5)
    with pytest.raises(ValueError, match="has shape .*a state_dict of another model"):
        other.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert other.param_groups[0]["lr"] == 0.5 and not other.state


@pytest.mark.parametrize("option", ["amsgrad", "maximize"])
def test_state_dict_with_options_fused_adam_lacks_is_refused(option):
    ref = make_params(torch.float32)
    ref_opt = torch.optim.Adam(ref, **{option: True})
    with pytest.raises(ValueError, match=f"{option}=True, which FusedAdam does not support"):
        FusedAdam(clone_params(ref)).load_state_dict(ref_opt.state_dict())


@pytest.mark.parametrize("attr, value", [("grad_scale", torch.ones(2)), ("found_inf", torch.zeros(3))])
def test_step_rejects_amp_scalars_of_several_elements(attr, value):
    params, opt = _stepped_optimizer()
    setattr(opt, attr, value)
    with pytest.raises(ValueError, match=attr):
        opt.step()


def test_step_runs_no_per_tensor_checks_when_the_op_succeeds(monkeypatch):
    params, opt = _stepped_optimizer()
    calls = []
    monkeypatch.setattr(FusedAdam, "_explain_bad_group", lambda self, group: calls.append(group))
    opt.step()
    opt.step()
    assert calls == [] and getattr(fa._STEP.tls, "fast_path", False) is False


class _RejectingModule:
    """Stands in for the CUDA extension: rejects everything with a constant message, as its checks do."""

    def __init__(self):
        self.calls = 0

    def fused_adam_step(self, *args):
        self.calls += 1
        raise RuntimeError("fused_adam: tensors must be contiguous")


@pytest.mark.parametrize("fast", [False, True])
def test_cuda_kernel_validates_direct_calls_first_and_explains_extension_errors(monkeypatch, fast):
    """Direct op calls are checked in Python before the extension runs; FusedAdam.step's calls (fast
    path) go to the extension first and, when it rejects them, get the Python error that names the tensor."""
    module = _RejectingModule()
    monkeypatch.setattr(fa._STEP, "module", lambda: module)
    monkeypatch.setattr(fa._STEP.tls, "fast_path", fast, raising=False)
    a = _good_args()
    a["grads"][1] = _strided(a["grads"][1])
    with pytest.raises(ValueError, match="grads\\[1\\] \\(shape \\(5, 2\\)\\) must be contiguous"):
        fa._STEP.cuda(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["steps"], 1e-3, 0.9,
                      0.999, 1e-8, 0.0, True, True)
    assert module.calls == (1 if fast else 0)
    # an extension error that Python cannot explain (say, a failed launch) comes through as it is
    a = _good_args()
    with pytest.raises(RuntimeError, match="tensors must be contiguous"):
        fa._STEP.cuda(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["steps"], 1e-3, 0.9,
                      0.999, 1e-8, 0.0, True, True)


@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.99, 0.999), 0.9])
def test_betas_that_are_not_a_pair_are_a_clear_error(betas):
    with pytest.raises(ValueError, match="FusedAdam: betas must be a pair of numbers"):
        FusedAdam([torch.zeros(2, requires_grad=True)], betas=betas)


def test_a_state_dict_with_lists_for_tensors_is_refused_clearly():
    params, opt = _stepped_optimizer()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["exp_avg_sq"] = sd["state"][0]["exp_avg_sq"].tolist()
    with pytest.raises(ValueError, match="state 'exp_avg_sq' of param 0 is a list, expected a tensor"):
        FusedAdam(make_params(torch.float32)).load_state_dict(sd)
