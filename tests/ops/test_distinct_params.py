"""accelops optimizers refuse a param given twice or params that share memory (their kernels update all
params of a step in parallel, so such params would race), and accept disjoint views of one buffer."""
import warnings

import pytest
import torch

from accelops.ops import CPUAdagrad, CPUAdam, CPULion, FusedAdam

OPTIMIZERS = [CPUAdam, CPUAdagrad, CPULion, FusedAdam]


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_param_given_twice_is_refused(cls):
    p = torch.nn.Parameter(torch.randn(8))
    with pytest.raises(ValueError, match="param 1 of group 0 is the same tensor as param 0 of group 0"):
        cls([p, p])


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_overlapping_views_are_refused(cls):
    base = torch.zeros(20)
    a, other, b = base[:10], torch.zeros(3), base[5:15]
    with pytest.raises(ValueError, match="param 2 of group 0 overlaps the memory of param 0 of group 0"):
        cls([a, other, b])


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_refused_group_is_not_added(cls):
    base = torch.zeros(20)
    opt = cls([base[:10]])
    opt.add_param_group({"params": [base[10:]]})   # disjoint: fine
    with pytest.raises(ValueError, match="param 1 of group 2 overlaps the memory of param 0 of group 0"):
        opt.add_param_group({"params": [torch.zeros(4), base[9:11]]})
    with pytest.raises(ValueError, match="param 0 of group 2 is the same tensor as param 0 of group 1"):
        opt.add_param_group({"params": opt.param_groups[1]["params"][0]})
    assert len(opt.param_groups) == 2


def test_disjoint_views_of_one_flat_buffer_step_like_torch():
    """The flat-buffer layout (params as non-overlapping views of one tensor) is allowed and exact."""
    gen = torch.Generator().manual_seed(0)
    flat = torch.randn(3000, generator=gen)
    ref_flat = flat.clone()
    sizes = [1000, 7, 1993]
    ours = [t.requires_grad_() for t in torch.split(flat.detach(), sizes)]
    ref = [t.requires_grad_() for t in torch.split(ref_flat.detach(), sizes)]
    opt = CPUAdam(ours, lr=1e-2, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.1, foreach=False)
    for _ in range(3):
        grads = torch.randn(3000, generator=gen).split(sizes)
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # a fallback warning, if the kernel is unavailable
            opt.step()
        ref_opt.step()
    torch.testing.assert_close(flat, ref_flat, rtol=1e-5, atol=1e-6)
