"""Worker cases of ``test_moe.py`` (run through ``engine_workers.py``; kinds ``moe_layer``, ``moe_train``,
``moe_resume``). A reference MoE layer holds every expert on every rank (``ep_size=1``); the layer under test
splits them over the ranks (``ep_size`` = world size) with the same weights."""
import os

DIM, EXPERTS, HIDDEN = 6, 4, 8


def _rank_world():
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _expert():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(DIM, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, DIM))


def _pair(k, ep_size, **options):
    """(reference layer with all experts, layer with ``ep_size``) sharing gate and expert weights."""
    import torch

    from accelops.moe.layer import MoE

    torch.manual_seed(0)
    full = MoE(DIM, _expert(), num_experts=EXPERTS, ep_size=1, k=k, **options)
    for i, expert in enumerate(full.deepspeed_moe.experts.deepspeed_experts):
        torch.manual_seed(10 + i)
        for param in expert.parameters():
            torch.nn.init.normal_(param, std=0.3)
    part = MoE(DIM, _expert(), num_experts=EXPERTS, ep_size=ep_size, k=k, **options)
    part.deepspeed_moe.gate.load_state_dict(full.deepspeed_moe.gate.state_dict())
    rank, local = _rank_world()[0], EXPERTS // ep_size
    for i, expert in enumerate(part.deepspeed_moe.experts.deepspeed_experts):
        expert.load_state_dict(full.deepspeed_moe.experts.deepspeed_experts[rank * local + i].state_dict())
    return full, part


def moe_layer_case(case):
    """Output, l_aux, exp_counts and gradients of the split layer against the reference on this rank's tokens
    (the expert gradients of the reference summed over the ranks: each expert sees every rank's tokens)."""
    import torch
    import torch.distributed as dist

    import accelops  # noqa: F401  (init_distributed through MoE.set_deepspeed_parallelism's groups)
    from accelops.comm import init_distributed

    init_distributed()
    rank, world = _rank_world()
    full, part = _pair(case["k"], world, capacity_factor=case.get("capacity_factor", 4.0),
                       drop_tokens=case.get("drop_tokens", True), use_rts=False)
    part.set_deepspeed_parallelism()
    x = torch.randn(2, 5, DIM, generator=torch.Generator().manual_seed(rank), requires_grad=True)
    y = x.detach().clone().requires_grad_()
    results = []
    for layer, inputs in ((part, x), (full, y)):
        torch.manual_seed(1)  # the same Gumbel noise for top-2's second choice
        out, l_aux, counts = layer(inputs)
        (out.square().sum() + l_aux).backward()
        results.append((out, l_aux, counts))
    expert_grads = [p.grad for p in part.deepspeed_moe.experts.parameters()]
    reference = [p.grad.clone() for p in full.deepspeed_moe.experts.parameters()]
    for grad in reference:
        dist.all_reduce(grad)
    per_rank = len(expert_grads)
    mine = reference[rank * per_rank:(rank + 1) * per_rank]
    gate_ref = full.deepspeed_moe.gate.wg.weight.grad
    return {"out": float((results[0][0] - results[1][0]).abs().max()),
            "l_aux": float((results[0][1] - results[1][1]).abs()),
            "counts": [results[0][2].tolist(), results[1][2].tolist()],
            "x_grad": float((x.grad - y.grad).abs().max()),
            "gate_grad": float((part.deepspeed_moe.gate.wg.weight.grad - gate_ref).abs().max()),
            "expert_grad": max(float((a - b).abs().max()) for a, b in zip(expert_grads, mine))}


class _Net:
    """A token classifier with one MoE layer between two dense layers (built per call)."""

    @staticmethod
    def build(ep_size):
        import torch

        from accelops.moe.layer import MoE

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inp = torch.nn.Linear(DIM, DIM)
                self.moe = MoE(DIM, _expert(), num_experts=EXPERTS, ep_size=ep_size, k=1, capacity_factor=4.0,
                               use_rts=False)
                self.out = torch.nn.Linear(DIM, 3)

            def forward(self, x, y):
                h, l_aux, _ = self.moe(torch.relu(self.inp(x)))
                return torch.nn.functional.cross_entropy(self.out(h).flatten(0, 1), y.flatten()) + 0.01 * l_aux

        torch.manual_seed(0)
        return Net()


def _batches(step, rank):
    import torch

    gen = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(2, 4, DIM, generator=gen), torch.randint(0, 3, (2, 4), generator=gen)


def _copy_experts(source, target, ep_rank, ep_size):
    local = EXPERTS // ep_size
    experts = target.moe.deepspeed_moe.experts.deepspeed_experts
    for i, expert in enumerate(experts):
        expert.load_state_dict(source.moe.deepspeed_moe.experts.deepspeed_experts[ep_rank * local + i].state_dict())


def _engine(model, stage=0, kernel=False):
    import accelops as deepspeed

    params = {"lr": 1e-2} if kernel else {"lr": 1e-2, "torch_adam": True}
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 0.5, "zero_optimization": {"stage": stage},
              "optimizer": {"type": "Adam", "params": params}}
    return deepspeed.initialize(model=model, config=config)[0]


def moe_train_case(case):
    """An engine with the experts split over the ranks trains like one process holding every expert and
    averaging the ranks' losses (plain torch AdamW)."""
    import torch

    rank, world = _rank_world()
    ep_size = case.get("ep_size", world)
    reference = _Net.build(1)
    for i, expert in enumerate(reference.moe.deepspeed_moe.experts.deepspeed_experts):
        torch.manual_seed(20 + i)
        for param in expert.parameters():
            torch.nn.init.normal_(param, std=0.3)
    model = _Net.build(ep_size)
    model.load_state_dict({k: v for k, v in reference.state_dict().items() if "deepspeed_experts" not in k},
                          strict=False)
    _copy_experts(reference, model, rank % ep_size, ep_size)
    engine = _engine(model, case.get("stage", 0), case.get("kernel", False))
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.01)
    losses, expected = [], []
    for step in range(3):
        loss = engine(*_batches(step, rank))
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
        optimizer.zero_grad()
        per_rank = [reference(*_batches(step, r)) for r in range(world)]
        expected.append(float(per_rank[rank]))
        (sum(per_rank) / world).backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        optimizer.step()
    after = float(engine(*_batches(9, rank)).detach())
    reference_after = float(reference(*_batches(9, rank)).detach())
    return {"after": after, "reference_after": reference_after, "losses": losses, "expected": expected}


def moe_resume_case(case):
    """Save with the experts split over ``world`` ranks, or load that checkpoint at another ``ep_size`` and
    report this rank's loss on a fixed batch (equal everywhere when every expert came back)."""
    import torch

    rank, world = _rank_world()
    model = _Net.build(world)
    for i, expert in enumerate(model.moe.deepspeed_moe.experts.deepspeed_experts):
        torch.manual_seed(30 + rank * 10 + i)  # every expert different
        for param in expert.parameters():
            torch.nn.init.normal_(param, std=0.3)
    engine = _engine(model)
    if case["mode"] == "save":
        engine.save_checkpoint(case["dir"], tag="t")
    else:
        engine.load_checkpoint(case["dir"])
    x, y = _batches(7, 0)
    engine.eval()
    with torch.no_grad():
        return {"loss": float(engine(x, y))}
