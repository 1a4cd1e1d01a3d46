"""The CUDA add + layer norm kernels (csrc/cuda/layer_norm) run on the CPU under the host emulation
against F.layer_norm in float64: every code path of the kernel source (cached and streamed rows,
vector and scalar accesses, grid-stride loops, column partials), without a GPU. Timing and the memory
model are not emulated: the GPU tests in tests/ops and the benchmarks cover those."""
import pytest
import torch
import torch.nn.functional as F
from layer_norm_reference import EPS, check_forward_and_backward, inputs, reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
H100_SMS = 132


def run_and_check(kernels, rows, n, dtype, with_residual=True, sm_count=H100_SMS, misalign=0, seed=0):
    x, r, w, b, dy = inputs(rows, n, dtype, seed)
    check_forward_and_backward(
        lambda x, r, w, b: kernels.forward(x, r, w, b, EPS, sm_count, misalign),
        lambda dy, inp, mean, rstd, w: kernels.backward(dy, inp, mean, rstd, w, sm_count, misalign),
        x, r if with_residual else None, w, b, dy)


@pytest.fixture
def kernels(thread_order, emulated_layer_norm):
    """The emulated kernels, under both thread orders."""
    return emulated_layer_norm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 64, 1000, 1024, 4096])
@pytest.mark.parametrize("with_residual", [True, False])
def test_rows_held_in_registers(kernels, dtype, n, with_residual):
    assert kernels.plan(dtype, 37, n, H100_SMS, backward=False)["cached"]
    run_and_check(kernels, 37, n, dtype, with_residual)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [16392, 65536])
def test_streamed_rows(kernels, dtype, n):
    for backward in (False, True):
        assert not kernels.plan(dtype, 3, n, H100_SMS, backward)["cached"]
    run_and_check(kernels, 3, n, dtype)


def test_streamed_scalar_rows(kernels):
    """An odd row size longer than the register cache: element-wise accesses, several passes."""
    plan = kernels.plan(torch.float32, 2, 70001, H100_SMS, backward=False)
    assert plan["vec"] == 1 and not plan["cached"]
    run_and_check(kernels, 2, 70001, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [64, 1024, 8192])
def test_grid_stride_over_many_rows(kernels, dtype, n):
    """One SM: every block loops over many row groups and sums its column partials across them
    (for 8192, streamed backward rows: the column kernel sums several rows per part and lane)."""
    rows = 300
    plan = kernels.plan(dtype, rows, n, 1, backward=True)
    assert plan["grid"] < rows and rows >= 8 * plan["parts"]
    run_and_check(kernels, rows, n, dtype, sm_count=1, seed=1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_rows_use_the_scalar_path(kernels, dtype):
    for backward in (False, True):
        assert kernels.plan(dtype, 9, 512, H100_SMS, backward, aligned=False)["vec"] == 1
    run_and_check(kernels, 9, 512, dtype, misalign=1)


def test_misaligned_streamed_16bit_rows(kernels):
    """Element-wise accesses in the streamed forward, row-sums and column kernels."""
    for backward in (False, True):
        plan = kernels.plan(torch.float16, 5, 20000, H100_SMS, backward, aligned=False)
        assert plan["vec"] == 1 and not plan["cached"]
    run_and_check(kernels, 5, 20000, torch.float16, misalign=1)


def test_streamed_forward_without_residual_over_more_rows_than_blocks(kernels):
    plan = kernels.plan(torch.bfloat16, 40, 16392, 1, backward=False)
    assert not plan["cached"] and plan["grid"] < 40
    run_and_check(kernels, 40, 16392, torch.bfloat16, with_residual=False, sm_count=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_backward_with_uneven_row_parts(kernels, dtype):
    """Several column-kernel parts over rows that do not divide evenly: the last part is short."""
    plan = kernels.plan(dtype, 37, 16392, H100_SMS, backward=True)
    assert not plan["cached"] and plan["parts"] > 1 and 37 % plan["parts"] != 0
    run_and_check(kernels, 37, 16392, dtype, seed=2)


def test_streamed_backward_with_several_rows_per_lane(kernels):
    """Parts of more than kColThreadsY (8) rows: each row lane of the column kernel sums several."""
    plan = kernels.plan(torch.bfloat16, 150, 16392, H100_SMS, backward=True)
    assert not plan["cached"] and plan["parts"] > 1 and 150 / plan["parts"] > 8
    run_and_check(kernels, 150, 16392, torch.bfloat16, seed=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("backward", [False, True])
def test_plans_for_the_longest_rows_are_valid_launches(emulated_layer_norm, dtype, aligned, backward):
    """Rows of 2**30 elements (the largest the front end accepts): streamed, legal block shapes and grid,
    a workspace size that is positive (no 32-bit overflow in the planning)."""
    for rows in (1, 3, 10_000):
        plan = emulated_layer_norm.plan(dtype, rows, 2**30, H100_SMS, backward, aligned)
        assert not plan["cached"] and plan["bx"] * plan["by"] <= 1024, plan
        assert 1 <= plan["grid"] <= rows and 1 <= plan["parts"] <= 1024, plan
        if backward:
            assert emulated_layer_norm.workspace_floats(plan, rows, 2**30) >= 2 * plan["parts"] * 2**30


@pytest.mark.parametrize("n", [4096, 65536])
def test_rows_far_from_zero_are_as_accurate_as_torch(emulated_layer_norm, n):
    """Statistics are summed relative to each row's first element (cached rows) and merged a vector
    at a time (streamed rows), so a large offset costs no more accuracy than in torch's fp32."""
    for offset in (1e3, 1e4):
        x, r, w, b, _ = inputs(2, n, torch.float32, seed=3)
        x = x + offset
        y, _, _, _ = emulated_layer_norm.forward(x, r, w, b, EPS, H100_SMS)
        _, exact, *_ = reference(x, r, w, b, torch.zeros_like(x))
        torch_error = (F.layer_norm(x + r, (n,), w, b, EPS).double() - exact).abs().max().item()
        our_error = (y.double() - exact).abs().max().item()
        assert our_error <= 1.5 * torch_error + 1e-6, (offset, our_error, torch_error)
