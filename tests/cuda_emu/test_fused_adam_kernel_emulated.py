"""The multi-tensor fused Adam CUDA kernel (csrc/cuda/adam) and the binding's launch table filler run on
the CPU under the host emulation, against torch.optim.AdamW/Adam: vector and scalar paths, chunk edges,
per-tensor step counts, and tensor lists split over several launches. The reference runs torch's
optimizer in fp32 and rounds params and state to their storage dtypes after each step, as the kernel
stores them (fp32 math, one rounding per step)."""
import pytest
import torch

LR, BETAS, EPS, WD = 1e-2, (0.8, 0.95), 1e-6, 0.05
# As in tests/ops/test_fused_adam_gpu.py: 16-bit results within about two units in the last place.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3),
       torch.float16: dict(rtol=2e-3, atol=1e-3)}
CHUNK = 65536
MAX_NUMEL = (2**31 - 1) * CHUNK
# Odd sizes, vector tails, chunk edges, a tensor of three chunks and an empty one.
SHAPES = [(1,), (7,), (1023,), (33, 65), (CHUNK - 3,), (CHUNK,), (CHUNK + 3,), (2 * CHUNK + 1,), (0,)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def adam(thread_order, emulated_fused_adam):
    """The emulated kernel, under both thread orders."""
    return emulated_fused_adam


class Run:
    """Kernel tensors and torch's reference for one list of shapes, stepped together."""

    def __init__(self, shapes, dtype, state_dtype=None, adam_w_mode=True, bias_correction=True,
                 weight_decay=WD, seed=0):
        self.dtype, self.state_dtype = dtype, state_dtype or dtype
        self.adam_w_mode, self.bias_correction, self.weight_decay = adam_w_mode, bias_correction, weight_decay
        self.gen = torch.Generator().manual_seed(seed)
        self.params = [torch.randn(s, generator=self.gen).to(dtype) for s in shapes]
        self.exp_avgs = [torch.zeros(s, dtype=self.state_dtype) for s in shapes]
        self.exp_avg_sqs = [torch.zeros(s, dtype=self.state_dtype) for s in shapes]
        self.steps = [torch.zeros(()) for _ in shapes]
        self.ref = [p.float().clone().requires_grad_() for p in self.params]
        cls = torch.optim.AdamW if adam_w_mode else torch.optim.Adam
        self.ref_opt = cls(self.ref, lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay, foreach=False)
        if not bias_correction:
            # Without bias correction the update is torch's at a step count where beta**step is 0.
            for r in self.ref:
                self.ref_opt.state[r] = {"step": torch.tensor(1e7), "exp_avg": torch.zeros_like(r),
                                         "exp_avg_sq": torch.zeros_like(r)}

    def step(self, adam, skip=(), grad_scale=None, found_inf=None, **kwargs):
        """One kernel step over the tensors not in skip, and the reference's; returns the launch count."""
        grads = [torch.randn(p.shape, generator=self.gen).to(self.dtype) for p in self.params]
        live = [i for i in range(len(self.params)) if i not in skip]
        for i in live:
            self.steps[i] += 1
        scale = float(grad_scale) if grad_scale is not None else 1.0
        launches = adam.step([self.params[i] for i in live], [grads[i] * scale for i in live],
                             [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live],
                             [self.steps[i] for i in live], LR, *BETAS, EPS, self.weight_decay, self.adam_w_mode,
                             self.bias_correction, grad_scale=grad_scale, found_inf=found_inf, **kwargs)
        for i, r in enumerate(self.ref):
            r.grad = grads[i].float() if i in live else None
        self.ref_opt.step()
        with torch.no_grad():
            for r in self.ref:
                r.copy_(r.to(self.dtype))
                for key in ("exp_avg", "exp_avg_sq"):
                    if r in self.ref_opt.state:
                        state = self.ref_opt.state[r][key]
                        state.copy_(state.to(self.state_dtype))
        return launches

    def check(self):
        """Params and state equal the reference's elementwise, within the dtypes' tolerances."""
        for i, (p, r) in enumerate(zip(self.params, self.ref)):
            torch.testing.assert_close(p, r.to(self.dtype), **TOL[self.dtype], msg=lambda m: f"param {i}: {m}")
            for key, ours in (("exp_avg", self.exp_avgs[i]), ("exp_avg_sq", self.exp_avg_sqs[i])):
                theirs = self.ref_opt.state[r][key].to(self.state_dtype)
                torch.testing.assert_close(ours, theirs, **TOL[self.state_dtype], msg=lambda m: f"{key} {i}: {m}")


def run(adam, shapes, dtype, steps=3, skip=None, step_kwargs=None, **kwargs):
    """Steps a Run `steps` times (skip: {step: indices without a grad}), checks it, returns the launches."""
    r = Run(shapes, dtype, **kwargs)
    launches = [r.step(adam, skip=(skip or {}).get(k, ()), **(step_kwargs or {})) for k in range(steps)]
    r.check()
    return launches


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_matches_torch(adam, dtype, adam_w_mode):
    """Same-dtype state; tensor 2 has no grad in step 1, so the tensors' step counts differ."""
    assert run(adam, SHAPES, dtype, skip={1: {2}}, adam_w_mode=adam_w_mode) == [1, 1, 1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_state_for_16bit_params(adam, dtype):
    run(adam, [(5,), (1000, 3), (70_000,)], dtype, state_dtype=torch.float32, weight_decay=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_without_bias_correction(adam, dtype, adam_w_mode):
    run(adam, [(7,), (CHUNK + 3,)], dtype, adam_w_mode=adam_w_mode, bias_correction=False)


@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_without_weight_decay(adam, adam_w_mode):
    run(adam, [(7,), (CHUNK + 3,)], torch.float32, adam_w_mode=adam_w_mode, weight_decay=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_grad_scale_unscales(adam, dtype):
    """Grads passed times 128 with grad_scale 128 (exact in every dtype) and a zero found_inf."""
    run(adam, [(7,), (CHUNK + 3,)], dtype,
        step_kwargs=dict(grad_scale=torch.tensor(128.0), found_inf=torch.zeros(())))


@pytest.mark.parametrize("dtype", DTYPES)
def test_found_inf_changes_nothing(adam, dtype):
    r = Run([(7,), (CHUNK + 3,)], dtype)
    r.step(adam)
    before = [t.clone() for t in r.params + r.exp_avgs + r.exp_avg_sqs]
    grads = [torch.randn(p.shape).to(dtype) for p in r.params]
    adam.step(r.params, grads, r.exp_avgs, r.exp_avg_sqs, [s + 1 for s in r.steps], LR, *BETAS, EPS, WD,
              found_inf=torch.tensor(1.0))
    for b, t in zip(before, r.params + r.exp_avgs + r.exp_avg_sqs):
        assert torch.equal(b, t)
    r.check()  # still equal to the reference after its one step


@pytest.mark.parametrize("dtype,state_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                               (torch.float16, torch.float32)])
@pytest.mark.parametrize("shifted", [("param", "grad", "exp_avg", "exp_avg_sq"), ("grad",), ("exp_avg_sq",)])
def test_misaligned_tensors_take_the_scalar_path(adam, dtype, state_dtype, shifted):
    """Any one of the four tensors off its 16-byte alignment: element-wise accesses throughout."""
    run(adam, [(1023,), (CHUNK + 3,)], dtype, state_dtype=state_dtype,
        step_kwargs=dict(misalign={k: 1 for k in shifted}))


@pytest.mark.parametrize("extra,launches", [(0, 2), (5, 3)])
def test_more_tensors_than_one_table_holds(adam, extra, launches):
    """Tables of kMultiTensorMaxTensors tensors (128 CUDA, 32 ROCm), full ones ending with a tensor of two chunks."""
    per_table = adam.max_tensors
    shapes = [(i * 37 % 300 + 1,) for i in range(2 * per_table + extra)]
    shapes[per_table - 1] = shapes[2 * per_table - 1] = (CHUNK + 5,)
    assert run(adam, shapes, torch.float32, steps=2) == [launches] * 2


@pytest.mark.parametrize("max_blocks,launches", [(3, 3), (1, 9)])
def test_tensors_span_tables_split_by_chunks(adam, max_blocks, launches):
    """Tables of fewer chunks than kMultiTensorMaxBlocks (2560 chunks are too much to emulate): the first
    tensor's five chunks spread over two or five launches and the others follow."""
    shapes = [(4 * CHUNK + 5,), (7,), (2 * CHUNK,), (100,)]
    assert run(adam, shapes, torch.float32, steps=2, step_kwargs=dict(max_blocks=max_blocks)) == [launches] * 2


def test_too_large_tensor_launches_nothing(adam):
    params = [torch.randn(10), torch.randn(1)]
    before = params[0].clone()
    zeros = [torch.zeros_like(p) for p in params]
    with pytest.raises(RuntimeError, match="result -1"):
        adam.step(params, [torch.randn_like(p) for p in params], zeros, [z.clone() for z in zeros],
                  [torch.ones(()), torch.ones(())], LR, *BETAS, EPS, WD, numels=[10, MAX_NUMEL + 1])
    assert torch.equal(params[0], before)
