"""Worker cases of ``test_pipeline.py`` (run through ``engine_workers.py``, kinds ``pipeline`` and
``pipeline_resume``).

The model: a small GPT built from ``LayerSpec``s, with the token embedding a ``TiedLayerSpec`` shared by the
first layer and the output head (the last layer), seeded per layer (``seed_layers``) so that every layer gets
the same values whichever stage builds it. The reference is the same layers built whole on every rank and
trained with torch's AdamW on the whole global batch, clipped like the engine.
"""
import os

VOCAB, DIM, SEQ, MICRO, GAS, BLOCKS = 13, 8, 5, 2, 4, 4
LR, CLIP = 1e-2, 1.0


def _classes():
    import torch

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(VOCAB, DIM) * 0.1)

        def forward(self, x):
            return torch.nn.functional.embedding(x, self.weight)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm = torch.nn.Linear(DIM, DIM), torch.nn.LayerNorm(DIM)
            self.drop = torch.nn.Dropout(0.1)

        def forward(self, x):
            return self.norm(x + self.drop(torch.tanh(self.fc(x))))

    return Embed, Block


def head(module, x):
    return x @ module.weight.t()


def loss_fn(out, y):
    import torch

    return torch.nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())


def _specs():
    from accelops.pipe import LayerSpec, TiedLayerSpec

    embed, block = _classes()
    return ([TiedLayerSpec("embed", embed)] + [LayerSpec(block) for _ in range(BLOCKS)]
            + [TiedLayerSpec("embed", embed, forward_fn=head)])


def _config(case):
    config = {"train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": GAS, "gradient_clipping": CLIP,
              "optimizer": {"type": "Adam", "params": {"lr": LR, "torch_adam": True}},
              "accelops": {"pipeline_schedule": case.get("schedule", "1f1b")}}
    if case.get("zero"):
        config["zero_optimization"] = {"stage": case["zero"]}
    if case.get("precision") == "bf16":
        config["bf16"] = {"enabled": True}
    elif case.get("precision") == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 8}
    return config


def _batches(step, dp_rank):
    import torch

    gen = torch.Generator().manual_seed(1000 * step + dp_rank)
    return [tuple(torch.randint(0, VOCAB, (MICRO, SEQ), generator=gen) for _ in range(2)) for _ in range(GAS)]


def _engine(case, stages):
    import accelops as deepspeed
    from accelops.pipe import PipelineModule

    module = PipelineModule(_specs(), num_stages=stages, loss_fn=loss_fn, seed_layers=True,
                            partition_method=case.get("method", "parameters"),
                            activation_checkpoint_interval=case.get("interval", 0))
    engine, *_ = deepspeed.initialize(model=module, config=_config(case))
    return engine


def _reference(dp, steps):
    """(per-step mean losses, eval loss after training) of the whole model trained on every dp rank's data."""
    import torch

    import accelops as deepspeed

    specs = _specs()
    layers = []
    for i, spec in enumerate(specs[:-1]):
        deepspeed.runtime.utils.set_random_seed(1234 + i)
        layers.append(spec.build())
    model = torch.nn.ModuleList(layers)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)

    def forward(x):
        h = model[0](x)
        for block in model[1:]:
            h = block(h)
        return head(model[0], h)

    torch.manual_seed(7)  # dropout differs from the pipeline's anyway: the reference runs without it
    model.eval()
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        total = 0.0
        for rank in range(dp):
            for x, y in _batches(step, rank):
                loss = loss_fn(forward(x), y) / (GAS * dp)
                loss.backward()
                total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        losses.append(total)
    with torch.no_grad():
        evaluated = sum(loss_fn(forward(x), y).item() for x, y in _batches(99, 0)) / GAS
    return losses, evaluated


def pipeline_case(case):
    """Train ``steps`` batches on ``stages`` stages; the reference's losses come with the engine's."""
    import torch.distributed as dist

    stages, steps = case["stages"], case.get("steps", 3)
    engine = _engine(case, stages)
    engine.module.eval()  # no dropout: comparable with the reference (train_batch turns training mode on)
    for module in engine.module.modules():
        if isinstance(module, __import__("torch").nn.Dropout):
            module.p = 0.0
    losses = [float(engine.train_batch(iter(_batches(step, engine.dp_rank)))) for step in range(steps)]
    evaluated = float(engine.eval_batch(iter(_batches(99, 0))))
    _, logits = engine.eval_batch(iter(_batches(99, 0)), return_logits=True)
    dp = dist.get_world_size() // stages
    reference, reference_eval = _reference(dp, steps)
    return {"losses": losses, "reference": reference, "eval": evaluated, "reference_eval": reference_eval,
            "parts": engine.module.parts, "stage": engine.stage_id, "dp_rank": engine.dp_rank,
            "samples": engine.global_samples, "steps": engine.global_steps,
            "sharded": type(next(engine.module.parameters())).__name__ == "DTensor",
            "logits": None if logits is None else list(logits.shape), "last": engine.is_last_stage()}


def pipeline_dropout_case(case):
    """With dropout on: activation checkpointing must give exactly the losses of a run without it."""
    runs = []
    for interval in (0, 1):
        engine = _engine({**case, "interval": interval}, case["stages"])
        import torch

        torch.manual_seed(3)
        runs.append([float(engine.train_batch(iter(_batches(s, engine.dp_rank)))) for s in range(2)])
    return {"without": runs[0], "with": runs[1]}


def pipeline_resume_case(case):
    """Save after 2 batches (``save``), or load that checkpoint at another number of stages and train the
    third batch (``load``); either way the third batch's loss comes back."""
    import torch

    engine = _engine(case, case["stages"])
    for module in engine.module.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if case["mode"] == "save":
        for step in range(2):
            engine.train_batch(iter(_batches(step, engine.dp_rank)))
        engine.save_checkpoint(case["dir"], tag="two")
    else:
        engine.load_checkpoint(case["dir"])
    third = float(engine.train_batch(iter(_batches(2, engine.dp_rank))))
    return {"third": third, "steps": engine.global_steps, "rank": int(os.environ.get("RANK", "0"))}


def pipeline_data_case(case):
    """``initialize(training_data=...)`` then ``train_batch()`` with no iterator reads the engine's loader
    (first and last stages); a second engine fed the same loader's batches by hand trains alike."""
    import torch

    import accelops as deepspeed
    from accelops.pipe import PipelineModule

    gen = torch.Generator().manual_seed(5)
    data = torch.utils.data.TensorDataset(torch.randint(0, VOCAB, (64, SEQ), generator=gen),
                                          torch.randint(0, VOCAB, (64, SEQ), generator=gen))
    runs = []
    for by_hand in (False, True):
        module = PipelineModule(_specs(), num_stages=case["stages"], loss_fn=loss_fn, seed_layers=True)
        engine, _, loader, _ = deepspeed.initialize(model=module, config=_config(case),
                                                    training_data=None if by_hand else data)
        if by_hand:
            batches = iter(deepspeed.utils.RepeatingLoader(engine.deepspeed_io(data)))
            runs.append([float(engine.train_batch(batches)) for _ in range(3)])
        else:
            runs.append([float(engine.train_batch()) for _ in range(3)])
            has_loader = loader is not None
    return {"loader": runs[0], "by_hand": runs[1], "has_loader": has_loader}


def pipeline_monitor_case(case):
    """With ``csv_monitor`` on, rank 0 writes each batch's mean loss as ``Train/Samples/train_loss``."""
    import accelops as deepspeed
    from accelops.pipe import PipelineModule

    config = {**_config(case), "csv_monitor": {"enabled": True, "output_path": case["dir"], "job_name": "pipe"}}
    module = PipelineModule(_specs(), num_stages=case["stages"], loss_fn=loss_fn, seed_layers=True)
    engine, *_ = deepspeed.initialize(model=module, config=config)
    losses = [float(engine.train_batch(iter(_batches(step, engine.dp_rank)))) for step in range(2)]
    engine.destroy()
    return {"losses": losses, "samples": engine.global_samples}
