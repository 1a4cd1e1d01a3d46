"""The multi-tensor fused Lion CUDA kernel (csrc/cuda/lion) and the binding's launch table filler run on the
CPU under the host emulation, against the Lion update from the paper in float32, each operation rounded on
its own (the kernel's contract; the host build, like the GPU build with --fmad=false, contracts nothing
into fused multiply-adds), and the results rounded to the storage dtypes: bitwise equal, in the vector and
scalar paths, at chunk edges, for sign(0) and sign(NaN), and over tensor lists split over several launches."""
import pytest
import torch

LR, BETAS, WD = 1e-2, (0.9, 0.99), 0.1
CHUNK = 65536
MAX_NUMEL = (2**31 - 1) * CHUNK
# Odd sizes, vector tails, chunk edges, a tensor of three chunks and an empty one.
SHAPES = [(1,), (7,), (1023,), (33, 65), (CHUNK - 3,), (CHUNK,), (CHUNK + 3,), (2 * CHUNK + 1,), (0,)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def lion_reference(p, g, m, lr, beta1, beta2, weight_decay):
    """c = b1*m + (1-b1)*g; p = p*(1 - lr*wd) - lr*sign(c); m = b2*m + (1-b2)*g in float32; the new (p, m)
    rounded to the inputs' dtypes. (In float64, the sign of a c that cancels exactly, about once in 65K
    16-bit elements per step, could differ from the fp32 one.)"""
    p32, g32, m32 = p.float(), g.float(), m.float()
    c = beta1 * m32 + (1 - beta1) * g32
    new_p = p32 * (1 - lr * weight_decay) - lr * torch.sign(c)
    return new_p.to(p.dtype), (beta2 * m32 + (1 - beta2) * g32).to(m.dtype)


def assert_same(actual, expected, what=""):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


@pytest.fixture
def lion(thread_order, emulated_fused_lion):
    """The emulated kernel, under both thread orders."""
    return emulated_fused_lion


class Run:
    """Kernel tensors and the reference's for one list of shapes, stepped together."""

    def __init__(self, shapes, dtype, state_dtype=None, lr=LR, betas=BETAS, weight_decay=WD, seed=0):
        self.dtype, self.state_dtype = dtype, state_dtype or dtype
        self.hyper = (lr, *betas, weight_decay)
        self.gen = torch.Generator().manual_seed(seed)
        self.params = [torch.randn(s, generator=self.gen).to(dtype) for s in shapes]
        self.exp_avgs = [torch.zeros(s, dtype=self.state_dtype) for s in shapes]
        self.ref = [p.clone() for p in self.params]
        self.ref_m = [m.clone() for m in self.exp_avgs]

    def step(self, lion, skip=(), **kwargs):
        """One kernel step over the tensors not in skip, and the reference's; returns the launch count."""
        grads = [torch.randn(p.shape, generator=self.gen).to(self.dtype) for p in self.params]
        live = [i for i in range(len(self.params)) if i not in skip]
        launches = lion.step([self.params[i] for i in live], [grads[i] for i in live],
                             [self.exp_avgs[i] for i in live], *self.hyper, **kwargs)
        for i in live:
            self.ref[i], self.ref_m[i] = lion_reference(self.ref[i], grads[i], self.ref_m[i], *self.hyper)
        return launches

    def check(self):
        """Params and exp_avg equal the reference's, bitwise."""
        for i in range(len(self.params)):
            assert_same(self.params[i], self.ref[i], f"param {i}")
            assert_same(self.exp_avgs[i], self.ref_m[i], f"exp_avg {i}")


def run(lion, shapes, dtype, steps=3, skip=None, step_kwargs=None, **kwargs):
    """Steps a Run `steps` times (skip: {step: indices without a grad}), checks it, returns the launches."""
    r = Run(shapes, dtype, **kwargs)
    launches = [r.step(lion, skip=(skip or {}).get(k, ()), **(step_kwargs or {})) for k in range(steps)]
    r.check()
    return launches


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_the_reference(lion, dtype):
    """Same-dtype state; tensor 2 has no grad in step 1."""
    assert run(lion, SHAPES, dtype, skip={1: {2}}) == [1, 1, 1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_state_for_16bit_params(lion, dtype):
    run(lion, [(5,), (1000, 3), (70_000,)], dtype, state_dtype=torch.float32)


def test_without_weight_decay(lion):
    run(lion, [(7,), (CHUNK + 3,)], torch.float32, weight_decay=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_other_hyperparameters(lion, dtype):
    """Large lr * weight_decay: 1 - lr*wd, 1 - beta1 and 1 - beta2 are rounded to fp32 from their double
    values (as torch rounds the Python floats), not computed in fp32."""
    run(lion, [(7,), (1000,)], dtype, lr=0.3, betas=(0.8, 0.95), weight_decay=0.7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sign_of_zero_and_nan_is_zero(lion, dtype):
    """With a zero momentum, c is the scaled grad: 0 and NaN give no sign step (torch.sign's 0), only decay;
    the NaN goes on into the momentum. Exactly the reference, in the vector and the scalar path."""
    g = torch.tensor([0.0, float("nan"), 1.0, -1.0, -0.0, 2.0, -3.0, 0.5, 0.0]).to(dtype)  # 9: a scalar tail
    for misalign in ({}, {"grad": 1}):
        p, m = torch.ones(9, dtype=dtype), torch.zeros(9, dtype=dtype)
        lion.step([p], [g], [m], LR, *BETAS, WD, misalign=misalign)
        ref_p, ref_m = lion_reference(torch.ones(9, dtype=dtype), g, torch.zeros(9, dtype=dtype), LR, *BETAS, WD)
        assert_same(p, ref_p, "param")
        assert_same(m, ref_m, "exp_avg")
        decayed = torch.tensor(1 - LR * WD).to(dtype)
        assert p[0] == decayed and p[1] == decayed and p[2] < decayed < p[3]


@pytest.mark.parametrize("dtype,state_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                               (torch.float16, torch.float32)])
@pytest.mark.parametrize("shifted", [("param", "grad", "exp_avg"), ("grad",), ("exp_avg",)])
def test_misaligned_tensors_take_the_scalar_path(lion, dtype, state_dtype, shifted):
    """Any one of the three tensors off its 16-byte alignment: element-wise accesses throughout."""
    run(lion, [(1023,), (CHUNK + 3,)], dtype, state_dtype=state_dtype,
        step_kwargs=dict(misalign={k: 1 for k in shifted}))


@pytest.mark.parametrize("extra,launches", [(0, 2), (5, 3)])
def test_more_tensors_than_one_table_holds(lion, extra, launches):
    """Tables of kMultiTensorMaxTensors tensors (128 CUDA, 32 ROCm), full ones ending with a tensor of two chunks."""
    per_table = lion.max_tensors
    shapes = [(i * 37 % 300 + 1,) for i in range(2 * per_table + extra)]
    shapes[per_table - 1] = shapes[2 * per_table - 1] = (CHUNK + 5,)
    assert run(lion, shapes, torch.float32, steps=2) == [launches] * 2


@pytest.mark.parametrize("max_blocks,launches", [(3, 3), (1, 9)])
def test_tensors_span_tables_split_by_chunks(lion, max_blocks, launches):
    """Tables of fewer chunks than kMultiTensorMaxBlocks: the first tensor's five chunks spread over two or five
    launches and the others follow."""
    shapes = [(4 * CHUNK + 5,), (7,), (2 * CHUNK,), (100,)]
    assert run(lion, shapes, torch.float32, steps=2, step_kwargs=dict(max_blocks=max_blocks)) == [launches] * 2


def test_too_large_tensor_launches_nothing(lion):
    params = [torch.randn(10), torch.randn(1)]
    before = params[0].clone()
    with pytest.raises(RuntimeError, match="result -1"):
        lion.step(params, [torch.randn_like(p) for p in params], [torch.zeros_like(p) for p in params], LR, *BETAS,
                  WD, numels=[10, MAX_NUMEL + 1])
    assert torch.equal(params[0], before)
