"""Worker cases of ``test_zero_init.py`` (run through ``engine_workers.py``; kinds ``zero_init``,
``gathered`` and ``offload_states``). Each returns plain values that the test compares."""
import os

CONFIG = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-2}}}
VOCAB, DIM = 11, 6


def _config(stage):
    return {**CONFIG, "zero_optimization": {"stage": stage}}


def _classes():
    """A small language model with what makes zero.Init hard: a ModuleList built by a comprehension, a head
    tied to the embedding, a parent that re-initialises its children with ``self.apply``, a LayerNorm."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d)
            self.norm = torch.nn.LayerNorm(d)

        def forward(self, x):
            return self.norm(x + self.fc2(torch.relu(self.fc1(x))))

    class TinyLM(torch.nn.Module):
        def __init__(self, d=DIM, n=3):
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, d)
            self.blocks = torch.nn.ModuleList([Block(d) for _ in range(n)])
            self.head = torch.nn.Linear(d, VOCAB, bias=False)
            self.head.weight = self.emb.weight
            self.apply(self._init_weights)

        @staticmethod
        def _init_weights(module):
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.05)

        def forward(self, x, y):
            h = self.emb(x)
            for block in self.blocks:
                h = block(h)
            return torch.nn.functional.cross_entropy(self.head(h).flatten(0, 1), y.flatten())

    return TinyLM


def _rank():
    return int(os.environ.get("RANK", "0"))


def _train(engine, steps):
    import torch

    gen = torch.Generator().manual_seed(100 + _rank())
    losses = []
    for _ in range(steps):
        x, y = (torch.randint(0, VOCAB, (2, 5), generator=gen) for _ in range(2))
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


def _full_values(engine):
    import accelops as deepspeed

    return {name: deepspeed.utils.safe_get_full_fp32_param(p) for name, p in engine.module.named_parameters()}


def zero_init_case(case):
    """The same model built outside and inside zero.Init (same seed), each trained by an engine."""
    import torch

    import accelops as deepspeed

    tiny_lm, config = _classes(), _config(case["stage"])
    runs = {}
    for inside in (False, True):
        torch.manual_seed(0)
        with deepspeed.zero.Init(config_dict_or_path=config, enabled=inside):
            model = tiny_lm()
        if case.get("replace"):  # a layer built outside the context: a unit mixing both kinds of parameters
            torch.manual_seed(5)
            model.blocks[1].fc1 = torch.nn.Linear(DIM, 2 * DIM)
        params = list(model.parameters())
        built = {"empty": all(p.numel() == 0 for p in params if hasattr(p, "ds_id")),
                 "zero_params": sum(hasattr(p, "ds_id") for p in params),
                 "part_numel": sum(p.ds_tensor.numel() for p in params if hasattr(p, "ds_tensor")),
                 "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in params)}
        engine, *_ = deepspeed.initialize(model=model, config=config)
        start = _full_values(engine)
        runs[inside] = {"built": built, "start": start, "losses": _train(engine, case.get("steps", 4))}
    start_diff = max(float((runs[True]["start"][n] - v).abs().max()) for n, v in runs[False]["start"].items())
    return {"outside": runs[False]["losses"], "inside": runs[True]["losses"], "start_diff": start_diff,
            "built_inside": runs[True]["built"], "built_outside": runs[False]["built"]}


def zero_init_module_case(case):
    """zero.Init(module=model) partitions a model built outside it; it then trains like the plain model."""
    import torch

    import accelops as deepspeed

    tiny_lm, config = _classes(), _config(3)
    losses = {}
    for convert in (False, True):
        torch.manual_seed(0)
        model = tiny_lm()
        if convert:
            deepspeed.zero.Init(module=model)
        all_zero = all(hasattr(p, "ds_id") and p.numel() == 0 for p in model.parameters())
        engine, *_ = deepspeed.initialize(model=model, config=config)
        losses[convert] = _train(engine, 3)
    return {"all_zero": all_zero, "plain": losses[False], "converted": losses[True]}


def _error(fn):
    try:
        fn()
    except Exception as error:  # the test checks the type name and the message
        return f"{type(error).__name__}: {error}"
    return None


def gathered_case(case):
    """GatheredParameters on zero.Init parameters and on an engine's sharded parameters."""
    import torch

    import accelops as deepspeed

    zero, rank = deepspeed.zero, _rank()
    torch.manual_seed(0)
    reference = torch.nn.Linear(5, 7)
    torch.manual_seed(0)
    with zero.Init():
        linear = torch.nn.Linear(5, 7)
    out = {"parts": [tuple(p.ds_tensor.shape) for p in linear.parameters()]}
    with zero.GatheredParameters(linear.parameters()):
        out["gathered_equal"] = torch.equal(linear.weight, reference.weight) and torch.equal(linear.bias,
                                                                                            reference.bias)
        linear.weight.data.add_(1.0)  # no modifier_rank: dropped on exit
    out["shape_after"] = tuple(linear.weight.shape)
    with zero.GatheredParameters(linear.weight, modifier_rank=1):
        if rank == 1:
            linear.weight.data.fill_(float(rank) + 2.0)
    with zero.GatheredParameters([linear.weight, linear.weight]):  # duplicates count once
        out["after_modifier"] = sorted(set(linear.weight.flatten().tolist()))
        out["nested"] = _error(lambda: zero.GatheredParameters(linear.weight).__enter__())
    with zero.GatheredParameters(linear.bias):
        out["dropped_equal"] = torch.equal(linear.bias, reference.bias)
    plain = torch.nn.Parameter(torch.ones(3))
    with zero.GatheredParameters(plain, modifier_rank=0):
        out["plain_untouched"] = plain.tolist() == [1.0, 1.0, 1.0]
    out["bad_rank"] = _error(lambda: zero.GatheredParameters(linear.weight, modifier_rank=7))
    out["bad_params"] = _error(lambda: zero.GatheredParameters(3))

    # DeepSpeed's pretrained-loading recipe: gather each module's own parameters, rank 0 loads.
    tiny_lm = _classes()
    torch.manual_seed(1)
    pretrained = tiny_lm().state_dict()
    with zero.Init():
        model = tiny_lm()

    def load(module, prefix=""):
        with zero.GatheredParameters(list(module.parameters(recurse=False)), modifier_rank=0):
            if rank == 0:
                module._load_from_state_dict(pretrained, prefix, {}, True, [], [], [])
        for name, child in module._modules.items():
            load(child, f"{prefix}{name}.")

    load(model)
    engine, *_ = deepspeed.initialize(model=model, config=_config(3))
    full = _full_values(engine)
    out["loaded_diff"] = max(float((full[n] - pretrained[n]).abs().max()) for n in full)

    # After initialize: the module slot holds the full parameter inside the block.
    head = engine.module.blocks[0].fc1
    with zero.GatheredParameters(head.weight, modifier_rank=0):
        out["engine_full_shape"] = tuple(head.weight.shape)
        out["engine_full_type"] = type(head.weight).__name__
        if rank == 0:
            head.weight.data.fill_(0.5)
    out["engine_restored_type"] = type(head.weight).__name__
    out["engine_after"] = sorted(set(deepspeed.utils.safe_get_full_fp32_param(head.weight).flatten().tolist()))
    out["engine_trains"] = all(map(lambda v: v == v, _train(engine, 2)))
    return out


def offload_states_case(case):
    """offload_states / reload_states in the middle of training: memory freed, training refused, the round
    trip bit-exact, and the run's losses equal to one without offloading."""
    import torch

    import accelops as deepspeed
    from accelops.runtime.zero.offload_config import OffloadDeviceEnum, OffloadStateTypeEnum

    tiny_lm, config = _classes(), _config(case["stage"])

    def snapshot(engine):
        values = _full_values(engine)
        for name, p in engine.module.named_parameters():
            values[f"{name}.exp_avg"] = deepspeed.utils.safe_get_full_optimizer_state(p, "exp_avg")
        return values

    runs, out = {}, {}
    for offload in (False, True):
        torch.manual_seed(0)
        engine, *_ = deepspeed.initialize(model=tiny_lm(), config=config)
        losses = _train(engine, 2)
        if offload:
            before = snapshot(engine)
            out["bad_include"] = _error(lambda: engine.offload_states(include=["weights"]))
            out["nvme"] = _error(lambda: engine.offload_states(device=OffloadDeviceEnum.nvme))
            engine.offload_states(include=[OffloadStateTypeEnum.optim_states], device="cpu")
            engine.offload_states()  # the rest; optim_states again is a no-op
            tensors = [t for ts in engine._state_tensors().values() for t in ts]
            plain = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
            out["freed"] = [t.untyped_storage().nbytes() for t in plain]
            out["counted"] = len(plain)
            out["refused"] = _error(lambda: engine(*(torch.zeros(2, 5, dtype=torch.long),) * 2))
            engine.reload_states()
            after = snapshot(engine)
            out["bit_exact"] = all(torch.equal(before[k], after[k]) for k in before)
        losses += _train(engine, 2)
        runs[offload] = losses
    out["without"], out["with"] = runs[False], runs[True]
    return out
