"""CPUAdam / CPUAdagrad / CPULion against torch.optim (and a torch Lion), kernel and fallback paths.

References run in float32 on a copy of the params; for 16-bit params the reference param is rounded to
the param dtype after every step, which is exactly what a 16-bit param with float32 state sees.
Tolerances (per element, never a norm):
* float32: rtol 1e-5 / atol 1e-6. Both sides do the same fp32 operations; only fused multiply-adds and
  the order of the bias-correction factors differ, a few ulps per step over 10 steps.
* bfloat16 / float16: 2 ulps of the param dtype (rtol 2**-6 / 2**-9). The fp32 results differ by a few
  fp32 ulps, which flips a round-to-nearest decision now and then (1 ulp); that param then feeds the
  next steps (decay, L2 term), which can add at most another ulp within 10 steps at lr 1e-2.
  Plus an absolute term of 2 ulps at magnitude 0.1 (bf16 2**-10, fp16 2**-13): a param close to zero
  now was within lr * steps = 0.1 of it during the run, so an earlier flip is at most an ulp there.
"""
import copy
import warnings

import pytest
import torch

from accelops.ops.loader import CPU_FALLBACK_ENV, KernelLoader, kernel_loader
from accelops.ops.cpu_adagrad import CPUAdagrad
from accelops.ops.cpu_adam import CPUAdam, cpu_adam_step_
from accelops.ops.cpu_lion import CPULion
from helpers import kernel_or_fallback

SIZES = [1, 7, 63, 1025]
DTYPE_PAIRS = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
               (torch.float16, torch.float16), (torch.float16, torch.float32)]
STEPS = 10
_TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2**-6, atol=2**-10),
        torch.float16: dict(rtol=2**-9, atol=2**-13)}
_BUILDERS = ("CPUAdamBuilder", "CPUAdagradBuilder", "CPULionBuilder")


@pytest.fixture(scope="session")
def kernels():
    """Build (or load from the JIT cache) the three optimizer ops once per session."""
    pytest.importorskip("accelops.op_builder.builder", reason="the op build engine is not in this tree")
    from accelops.op_builder import get_builder_class

    mods = {}
    for name in _BUILDERS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a failed build must fail the test, not fall back silently
            mods[name] = kernel_loader(get_builder_class(name), fallback_env=CPU_FALLBACK_ENV).module()
        assert mods[name] is not None, f"{name} did not load"
    return mods


@pytest.fixture(params=["kernel", "torch"])
def path(request, monkeypatch):
    """Run a test once on the compiled kernels and once on the forced pure-torch fallback."""
    return kernel_or_fallback(request, monkeypatch, "kernels")


class TorchLion(torch.optim.Optimizer):
    """Reference Lion in plain torch (float32 params only)."""

    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m.mul(beta1).add_(p.grad, alpha=1 - beta1)), alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)


def _make(kind, params, wd):
    """(ours, reference factory) for an optimizer kind."""
    if kind == "adam":
        return CPUAdam(params, lr=1e-2, weight_decay=wd, adamw_mode=False), \
            lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=wd)
    if kind == "adamw":
        return CPUAdam(params, lr=1e-2, weight_decay=wd, adamw_mode=True), \
            lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=wd)
    if kind == "adagrad":
        return CPUAdagrad(params, lr=1e-2, lr_decay=0.01, weight_decay=wd, initial_accumulator_value=0.1), \
            lambda ps: torch.optim.Adagrad(ps, lr=1e-2, lr_decay=0.01, weight_decay=wd, initial_accumulator_value=0.1)
    return CPULion(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=wd), \
        lambda ps: TorchLion(ps, lr=1e-3, betas=(0.9, 0.99), weight_decay=wd)


def _run_and_compare(kind, n, pdtype, gdtype, wd, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=gen).to(pdtype)
    ref_p = p.float().clone()
    ours, ref_factory = _make(kind, [p], wd)
    ref = ref_factory([ref_p])
    for _ in range(STEPS):
        g = torch.randn(n, generator=gen).to(gdtype)
        ours.step(grads=[g])
        ref_p.grad = g.float()
        ref.step()
        with torch.no_grad():
            ref_p.copy_(ref_p.to(pdtype).float())  # what a pdtype param holds after the step
    assert p.dtype == pdtype
    torch.testing.assert_close(p.float(), ref_p, **_TOL[pdtype])
    return ours


@pytest.mark.parametrize("kind", ["adam", "adamw", "adagrad", "lion"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("pdtype,gdtype", DTYPE_PAIRS)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_matches_torch(path, kind, n, pdtype, gdtype, wd):
    ours = _run_and_compare(kind, n, pdtype, gdtype, wd)
    assert ours.backend == path


@pytest.mark.parametrize("kind", ["adamw", "adagrad", "lion"])
@pytest.mark.parametrize("pdtype", [torch.float32, torch.bfloat16])
def test_matches_torch_large(kernels, kind, pdtype):
    _run_and_compare(kind, 1_000_003, pdtype, pdtype, 0.1, seed=1)


@pytest.mark.parametrize("kind", ["adam", "adamw", "adagrad", "lion"])
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("gdtype_is_low", [True, False])
def test_master_weight_step_writes_copy(path, kind, low, gdtype_is_low):
    """fp32 master params + state updated, the 16-bit copy written in the same pass (= master rounded)."""
    gen = torch.Generator().manual_seed(3)
    n = 1025
    master = torch.randn(n, generator=gen)
    ref_p = master.clone()
    copy = torch.empty(n, dtype=low)
    ours, ref_factory = _make(kind, [master], 0.1)
    ref = ref_factory([ref_p])
    for _ in range(STEPS):
        g = torch.randn(n, generator=gen).to(low if gdtype_is_low else torch.float32)
        ours.step(grads=[g], param_copies=[copy])
        ref_p.grad = g.float()
        ref.step()
    torch.testing.assert_close(master, ref_p, **_TOL[torch.float32])
    assert torch.equal(copy, master.to(low)), "the copy must be the updated master rounded to nearest even"


def test_param_groups_zero_grad_and_scheduler(path):
    a, b = torch.randn(5, requires_grad=True), torch.randn(9, requires_grad=True)
    ra, rb = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ours = CPUAdam([{"params": [a]}, {"params": [b], "lr": 1e-1}], lr=1e-2, adamw_mode=True, weight_decay=0.1)
    ref = torch.optim.AdamW([{"params": [ra]}, {"params": [rb], "lr": 1e-1}], lr=1e-2, weight_decay=0.1)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (ours, ref)]
    for i in range(6):
        for opt, (x, y) in ((ours, (a, b)), (ref, (ra, rb))):
            opt.zero_grad()
            ((x * x).sum() + (y.sin()).sum() * (i + 1)).backward()
            opt.step()
        for s in scheds:
            s.step()
    assert a.grad is not None and b.grad is not None
    ours.zero_grad()
    assert a.grad is None, "zero_grad sets grads to None by default, as torch does"
    # grads depend on the params here, and m / sqrt(v) amplifies fp32-ulp differences where a grad is
    # near zero (early steps, lr 0.1): atol 1e-5 (still 4 orders below one step's size)
    torch.testing.assert_close(a, ra, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b, rb, rtol=1e-5, atol=1e-5)


def _grad_steps(opt, params, seed, steps=3):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()


@pytest.mark.parametrize("ours_cls,torch_cls,kwargs", [
    (CPUAdam, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    (CPUAdagrad, torch.optim.Adagrad, dict(lr=1e-2, weight_decay=0.1)),
])
@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
def test_state_dict_round_trip_with_torch(path, ours_cls, torch_cls, kwargs, direction):
    p1 = torch.randn(63)
    p2 = p1.clone()
    first, second = (ours_cls, torch_cls) if direction == "ours_to_torch" else (torch_cls, ours_cls)
    opt1 = first([p1], **kwargs)
    _grad_steps(opt1, [p1], seed=0)
    p2.copy_(p1)
    opt2 = second([p2], **kwargs)
    opt2.load_state_dict(copy.deepcopy(opt1.state_dict()))  # as saved to disk: torch would alias the tensors
    for key, value in opt1.state[p1].items():
        torch.testing.assert_close(opt2.state[p2][key], value)
    _grad_steps(opt1, [p1], seed=1)
    _grad_steps(opt2, [p2], seed=1)
    torch.testing.assert_close(p1, p2, **_TOL[torch.float32])


def test_state_is_float32_after_loading_a_bf16_state(path):
    p = torch.randn(7, dtype=torch.bfloat16)
    ref = torch.optim.AdamW([p.clone()])
    ref.param_groups[0]["params"][0].grad = torch.randn(7, dtype=torch.bfloat16)
    ref.step()
    ours = CPUAdam([p])
    ours.load_state_dict(ref.state_dict())
    assert ours.state[p]["exp_avg"].dtype == torch.float32
    assert ours.state[p]["step"].item() == 1.0
    ours.step(grads=[torch.randn(7, dtype=torch.bfloat16)])
    assert ours.state[p]["step"].item() == 2.0


def test_lion_state_dict_round_trip(path):
    p1 = torch.randn(33)
    opt1 = CPULion([p1], lr=1e-3, weight_decay=0.1)
    _grad_steps(opt1, [p1], seed=0)
    p2 = p1.clone()
    opt2 = CPULion([p2], lr=1e-3, weight_decay=0.1)
    opt2.load_state_dict(copy.deepcopy(opt1.state_dict()))
    _grad_steps(opt1, [p1], seed=1)
    _grad_steps(opt2, [p2], seed=1)
    assert torch.equal(p1, p2)


@pytest.mark.parametrize("kind", ["adam", "adamw", "adagrad", "lion"])
def test_nan_inf_grads_like_torch(path, kind):
    """nan/inf in a grad propagate exactly as in torch (no skipping, no clamping)."""
    g = torch.randn(40)
    g[3], g[17], g[18] = float("nan"), float("inf"), -float("inf")
    p = torch.randn(40)
    ref_p = p.clone()
    ours, ref_factory = _make(kind, [p], 0.1)
    ref = ref_factory([ref_p])
    for _ in range(2):
        ours.step(grads=[g])
        ref_p.grad = g.clone()
        ref.step()
    torch.testing.assert_close(p, ref_p, equal_nan=True, **_TOL[torch.float32])


def test_kernels_agree_with_fallback(kernels, monkeypatch):
    """The same run through the kernel and through the forced fallback gives the same numbers."""
    results = []
    for forced in ("0", "1"):
        monkeypatch.setenv("ACCELOPS_CPU_OPS_FALLBACK", forced)
        p = torch.linspace(-2, 2, 1025).to(torch.bfloat16)
        master = torch.linspace(-2, 2, 1025)
        opt = CPUAdam([{"params": [p]}, {"params": [master]}], lr=1e-2, weight_decay=0.1)
        copy = torch.empty(1025, dtype=torch.float16)
        for i in range(STEPS):
            g = torch.cos(torch.arange(1025.0) * (i + 1))
            opt.step(grads=[g.bfloat16(), g])
        opt2 = CPULion([master.clone()])
        opt2.step(grads=[g], param_copies=[copy])
        results.append((p.float(), master, copy.float(), opt.backend))
    (pk, mk, ck, bk), (pt, mt, ct, bt) = results
    assert (bk, bt) == ("kernel", "torch")
    torch.testing.assert_close(pk, pt, **_TOL[torch.bfloat16])
    torch.testing.assert_close(mk, mt, **_TOL[torch.float32])
    torch.testing.assert_close(ck, ct, **_TOL[torch.float16])


# ---------------------------------------------------------------- bad input
def test_rejects_non_cpu_params():
    p = torch.empty(8, device="meta")
    with pytest.raises(ValueError, match="CPU tensors only"):
        CPUAdam([p]).step(grads=[torch.empty(8, device="meta")])


@pytest.mark.parametrize("cls", [CPUAdam, CPULion])  # CPUAdagrad takes sparse grads (test_deepspeed_optimizers)
def test_rejects_sparse_grad(cls):
    p = torch.randn(4, 3)
    g = torch.randn(4, 3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        cls([p]).step(grads=[g])


@pytest.mark.parametrize("pdtype,gdtype", [(torch.float32, torch.float16), (torch.bfloat16, torch.float16),
                                           (torch.float64, torch.float64)])
def test_rejects_mismatched_or_unsupported_dtypes(pdtype, gdtype):
    p = torch.randn(5).to(pdtype)
    before = p.clone()
    opt = CPUAdam([p])
    with pytest.raises(TypeError, match="dtype"):
        opt.step(grads=[torch.randn(5).to(gdtype)])
    assert torch.equal(p, before) and not opt.state, "nothing may change on a rejected step"


def test_rejects_non_contiguous_param_and_updates_nothing():
    base = torch.randn(6, 4)
    p = base.t()  # a view: updating a contiguous copy would silently lose the update
    ok = torch.randn(3)
    ok_before = ok.clone()
    opt = CPUAdam([ok, p])
    with pytest.raises(ValueError, match="not contiguous"):
        opt.step(grads=[torch.randn(3), torch.randn(4, 6)])
    assert torch.equal(ok, ok_before), "a bad param later in the list must not leave earlier ones updated"


def test_non_contiguous_grad_is_read_correctly(path):
    p = torch.randn(4, 6)
    ref_p = p.clone()
    g = torch.randn(6, 4).t()
    CPUAdam([p]).step(grads=[g])
    ref = torch.optim.AdamW([ref_p])
    ref_p.grad = g.contiguous()
    ref.step()
    torch.testing.assert_close(p, ref_p, **_TOL[torch.float32])


def test_rejects_bad_shapes_and_copies():
    p = torch.randn(5)
    with pytest.raises(ValueError, match="shape"):
        CPUAdam([p]).step(grads=[torch.randn(6)])
    with pytest.raises(ValueError, match="one entry per param"):
        CPUAdam([p]).step(grads=[torch.randn(5), torch.randn(5)])
    with pytest.raises(ValueError, match="copy"):
        CPUAdam([p]).step(grads=[torch.randn(5)], param_copies=[torch.empty(5, dtype=torch.float32)])
    with pytest.raises(ValueError, match="amsgrad"):
        CPUAdam([p], amsgrad=True)


def test_rejects_bad_grads_argument_types():
    p = torch.randn(3)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a tensor or None, got float"):
        CPUAdam([p]).step(grads=[1.0])
    with pytest.raises(TypeError, match="grads must be a list or tuple"):
        CPUAdam([p]).step(grads=torch.randn(3))


def test_bad_state_is_refused_before_anything_changes(path):
    """A wrong-shaped state in the second group: nothing in either group is updated, no step is counted."""
    a, b = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))
    opt = CPUAdam([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = torch.randn(4), torch.randn(3)
    opt.step()
    opt.state[b]["exp_avg"] = torch.zeros(5)
    before = [a.detach().clone(), b.detach().clone(), opt.state[a]["step"].clone(), opt.state[a]["exp_avg"].clone()]
    with pytest.raises(ValueError, match="state 'exp_avg' of param 0 of group 1 .* got torch.float32 \\(5,\\)"):
        opt.step()
    after = [a.detach(), b.detach(), opt.state[a]["step"], opt.state[a]["exp_avg"]]
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_state_dict_of_another_optimizer_or_model_is_refused():
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.randn(3)
    adagrad = torch.optim.Adagrad([p])
    adagrad.step()
    with pytest.raises(ValueError, match="keys \\['step', 'sum'\\].*another optimizer"):
        CPUAdam([p]).load_state_dict(adagrad.state_dict())
    other = torch.nn.Parameter(torch.randn(5))
    other.grad = torch.randn(5)
    adam = torch.optim.Adam([other])
    adam.step()
    ours = CPUAdam([p])
    with pytest.raises(ValueError, match="shape \\(5,\\), the param \\(3,\\)"):
        ours.load_state_dict(adam.state_dict())
    assert not ours.state  # nothing was loaded


def test_kernel_refuses_what_python_would(kernels):
    """The C++ side checks too: a direct call with a non-contiguous state raises, it does not crash."""
    p, g = torch.randn(8), torch.randn(8)
    bad_state = torch.zeros(16)[::2]
    with pytest.raises(RuntimeError, match="contiguous"):
        kernels["CPUAdamBuilder"].adam_step([p], [g], [bad_state], [torch.zeros(8)], [], [1.0], 1e-3, 0.9, 0.999,
                                            1e-8, 0.0, True, True, False)



def test_kernel_refuses_bad_lists_and_dtype_combinations(kernels):
    """Direct calls that skip the Python validator: a RuntimeError naming the problem, nothing updated. The kernels
    compile only the (param, grad, copy) dtype combinations the validator admits and refuse the others."""
    adam, adagrad, lion = (kernels[name] for name in _BUILDERS)
    p, g, s = torch.zeros(8), torch.ones(8), torch.zeros(8)
    bf, hf = torch.bfloat16, torch.float16
    with pytest.raises(RuntimeError, match="cpu_adagrad: got 1 params but 2 grads"):
        adagrad.adagrad_step([p], [g, g], [s], [], [1.0], 1e-2, 0.0, 1e-10, 0.0, False)
    with pytest.raises(RuntimeError, match="cpu_adagrad: need one step count per param"):
        adagrad.adagrad_step([p], [g], [s], [], [], 1e-2, 0.0, 1e-10, 0.0, False)
    with pytest.raises(RuntimeError, match="cpu_lion: got 1 params but 2 state tensors"):
        lion.lion_step([p], [g], [s, s], [], 1e-3, 0.9, 0.99, 0.0, False)
    with pytest.raises(RuntimeError, match="cpu_lion: param_copies must be empty or one per param, got 2 for 1"):
        lion.lion_step([p], [g], [s], [torch.zeros(8, dtype=bf)] * 2, 1e-3, 0.9, 0.99, 0.0, False)
    with pytest.raises(RuntimeError, match="cpu_adam: step counts must be >= 1, got 0.5"):
        adam.adam_step([p], [g], [s], [s.clone()], [], [0.5], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True, False)
    with pytest.raises(RuntimeError, match="cpu_adam: grad 0 must have the param's dtype \\(BFloat16\\) or float32"):
        adam.adam_step([p.to(bf)], [g.to(hf)], [s], [s.clone()], [], [1.0], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True,
                       False)
    with pytest.raises(RuntimeError, match="cpu_lion: param copy 0 must be bfloat16 or float16 with a float32 param"):
        lion.lion_step([p.to(bf)], [g.to(bf)], [s], [torch.zeros(8, dtype=hf)], 1e-3, 0.9, 0.99, 0.0, False)
    with pytest.raises(RuntimeError, match="cpu_adagrad: grad 0 must be float32 or the param copy's dtype \\(Half\\)"):
        adagrad.adagrad_step([p], [g.to(bf)], [s], [torch.zeros(8, dtype=hf)], [1.0], 1e-2, 0.0, 1e-10, 0.0, False)
    assert torch.equal(p, torch.zeros(8)) and torch.equal(s, torch.zeros(8))


@pytest.mark.parametrize("name", _BUILDERS)
def test_kernel_reports_its_simd_width(kernels, name):
    """``simd_width`` (a module attribute under pybind) is an op of each kernel: floats per vector of its CPU tier."""
    width = kernels[name].simd_width()
    assert isinstance(width, int) and width in (1, 4, 8, 16)

def test_failed_load_warns_once_and_falls_back(monkeypatch):
    monkeypatch.delenv("ACCELOPS_CPU_OPS_FALLBACK", raising=False)
    class NoSuchBuilder:
        def load_with_origin(self, verbose=True):
            raise ValueError("unknown op builder 'NoSuchBuilder'")

    loader = KernelLoader(NoSuchBuilder, "accelops: NoSuchBuilder op unavailable ({reason})", CPU_FALLBACK_ENV)
    with pytest.warns(RuntimeWarning, match="NoSuchBuilder"):
        assert loader.module() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loader.module() is None
        assert loader.backend == "torch"


def test_step_op_runs_under_torch_compile_fullgraph(path):
    """The custom op traces without graph breaks (fullgraph=True raises on one) and updates in place."""
    p, m, v = torch.randn(100), torch.zeros(100), torch.zeros(100)
    g = torch.randn(100)
    ref = (p.clone(), m.clone(), v.clone())

    def step(p, g, m, v):
        cpu_adam_step_([p], [g], [m], [v], [], [1.0], 1e-2, 0.9, 0.999, 1e-8, 0.1, True, True, False)

    torch.compile(step, fullgraph=True, backend="aot_eager")(p, g, m, v)
    step(*ref[:1], g, *ref[1:])
    for got, want in zip((p, m, v), ref):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_op_validates_direct_calls_on_every_path(path, device):
    """A direct op call gets the optimizers' clear errors before the kernel, the pure-torch path or the fake
    implementation (meta tensors) sees the input; nothing is updated."""
    p, g = torch.zeros(8, device=device), torch.ones(8, device=device)
    m, v = torch.zeros(8, device=device), torch.zeros(8, device=device)
    before = p.clone()
    with pytest.raises(ValueError, match="state 'exp_avg_sqs' of params\\[0\\] \\(shape \\(8,\\)\\) must be a contiguous"):
        cpu_adam_step_([p], [g], [m], [v[:4]], [], [1.0], 1e-2, 0.9, 0.999, 1e-8, 0.0, True, True, False)
    with pytest.raises(ValueError, match="got 1 params but grads has 2"):
        cpu_adam_step_([p], [g, g], [m], [v], [], [1.0], 1e-2, 0.9, 0.999, 1e-8, 0.0, True, True, False)
    with pytest.raises(TypeError, match="has dtype torch.float64"):
        cpu_adam_step_([p.double()], [g.double()], [m], [v], [], [1.0], 1e-2, 0.9, 0.999, 1e-8, 0.0, True, True,
                       False)
    with pytest.raises(ValueError, match="step counts must be >= 1"):
        cpu_adam_step_([p], [g], [m], [v], [], [0.0], 1e-2, 0.9, 0.999, 1e-8, 0.0, True, True, False)
    if device == "cpu":
        assert torch.equal(p, before)


@pytest.mark.parametrize("make", [lambda b: CPUAdam([torch.zeros(2, requires_grad=True)], betas=b),
                                  lambda b: CPULion([torch.zeros(2, requires_grad=True)], betas=b)])
@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.99, 0.999), 0.9, ("a", "b")])
def test_betas_that_are_not_a_pair_are_a_clear_error(make, betas):
    with pytest.raises(ValueError, match="betas must be a pair of numbers"):
        make(betas)


def test_a_state_dict_with_lists_for_tensors_is_refused_clearly():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    opt = CPUAdam([p])
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="state 'exp_avg' of param 0 is a list, expected a tensor"):
        CPUAdam([torch.zeros(3, requires_grad=True)]).load_state_dict(sd)


def test_the_fallback_warning_names_the_callers_line(monkeypatch):
    from accelops.ops.cpu_adam.build import CPUAdamBuilder

    loader = kernel_loader(CPUAdamBuilder, fallback_env=CPU_FALLBACK_ENV)
    monkeypatch.delenv(CPU_FALLBACK_ENV, raising=False)
    monkeypatch.setattr(loader, "_module", None)  # restored (loaded or not) after the test
    monkeypatch.setattr(loader, "_failure", None)

    def no_build(self, verbose=True):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(CPUAdamBuilder, "load_with_origin", no_build)
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    with pytest.warns(RuntimeWarning, match="no compiler here") as record:
        CPUAdam([p]).step()
    assert [w.filename for w in record] == [__file__]


def test_an_infinite_lr_gives_torchs_infinities_not_nan(path):
    """lr=inf without weight decay: torch.optim.AdamW skips the decay (no inf * 0); so do the kernels."""
    ours, ref = torch.ones(9, requires_grad=True), torch.ones(9, requires_grad=True)
    for t in (ours, ref):
        t.grad = torch.full((9,), 0.5)
    CPUAdam([ours], lr=float("inf"), weight_decay=0.0, adamw_mode=True).step()
    torch.optim.AdamW([ref], lr=float("inf"), weight_decay=0.0).step()
    assert torch.equal(ours.detach(), ref.detach()) and torch.isinf(ours).all()
    lion = torch.ones(9, requires_grad=True)
    lion.grad = torch.full((9,), 0.5)
    CPULion([lion], lr=float("inf"), weight_decay=0.0).step()
    assert torch.equal(lion.detach(), torch.full((9,), -float("inf")))
