"""Worker processes of the engine tests, the plain-torch reference loop, and the launcher with a hard timeout.

``python engine_workers.py CASES_JSON`` runs as one rank (rank and rendezvous from the environment, as
under torchrun): for every case it trains a fresh engine and prints, as its last stdout line, one JSON
object ``{case name: result}``. A case is ``{"name", "config", "steps", ...}`` (see ``run_case``).
``reference_losses`` is the single-process plain-torch loop the engine must reproduce.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
IN_DIM, HIDDEN, OUT_DIM = 6, 16, 3


# ---------------------------------------------------------------------------------------------- launcher
def run_ranks(world_size, cases, timeout_s=240, extra_env=None, check=True):
    """Run ``cases`` on ``world_size`` worker processes (gloo on CPU), wait at most ``timeout_s`` for all,
    kill every one still running then. Returns the per-rank results (a list of dicts, rank order);
    AssertionError with the failing rank's stderr tail otherwise (also on a timeout). ``check=False``
    returns the (returncode, stdout, stderr) of each rank instead (returncode None: killed)."""
    from helpers import free_port, launch_free_environ, run_all  # the tests' side: a worker has no tests/ on sys.path

    port = free_port()
    argv = [sys.executable, os.path.join(HERE, "engine_workers.py"), json.dumps(cases)]
    envs = [launch_free_environ(**{"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                                   "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
                                   "DEEPSPEED_TIMEOUT": "2", **(extra_env or {})})
            for rank in range(world_size)]
    outputs = run_all([(argv, env) for env in envs], timeout_s)
    if not check:
        return outputs
    results = []
    for rank, (code, out, err) in enumerate(outputs):
        assert code == 0, f"rank {rank} of {world_size} exited with {code}:\n{err[-4000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------------------------------------------- model and data
def make_model(seed=0, unused=False):
    """A small model with a ModuleList, a root-level parameter and an output size that shards unevenly;
    ``unused``: plus a layer that forward never uses."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(IN_DIM, HIDDEN)
            self.blocks = nn.ModuleList([nn.Linear(HIDDEN, HIDDEN) for _ in range(2)])
            self.out = nn.Linear(HIDDEN, OUT_DIM)
            self.gain = nn.Parameter(torch.ones(1))
            if unused:
                self.spare = nn.Linear(HIDDEN, 2)

        def forward(self, x):
            h = torch.tanh(self.inp(x))
            for block in self.blocks:
                h = torch.tanh(block(h)) + h
            return self.out(h) * self.gain

    torch.manual_seed(seed)
    return Net()


def global_batch(step, size, scale=1.0):
    """The inputs and targets of global batch ``step`` (the same on every rank)."""
    import torch

    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(size, IN_DIM, generator=gen)
    y = torch.randn(size, OUT_DIM, generator=gen) * scale
    return x, y


def micro_batch(x, y, micro, world, rank, k):
    """Rank ``rank``'s ``k``-th micro-batch of a global batch."""
    start = (k * world + rank) * micro
    return x[start:start + micro], y[start:start + micro]


def autocast_for(precision):
    import contextlib

    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()


def reference_losses(case, world):
    """The plain-torch loop over the same global batches: ``{"losses": [step][rank][k], "scales": the loss
    scale after each step, "skipped": whether each step was skipped}``. With fp16 it scales the
    loss by DeepSpeed's dynamic loss scale (accelops' DynamicLossScaler, tested on its own), unscales the
    gradients with the scale they carry and skips overflowing steps."""
    import torch

    from accelops.runtime import create_loss_scaler, has_overflow
    from accelops.runtime.precision_config import FP16Config

    micro, gas, steps = case["micro"], case["gas"], case["steps"]
    precision = case.get("precision", "fp32")
    scaler = create_loss_scaler(FP16Config(enabled=precision == "fp16", **case.get("fp16", {})))
    model = make_model(unused=case.get("unused", False))
    if case.get("sgd"):
        opt = torch.optim.SGD(model.parameters(), lr=case.get("lr", 0.01))
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=case.get("lr", 0.01), weight_decay=case.get("wd", 0.0))
    scheduler = None
    if "scheduler" in case.get("extra", {}):
        from accelops.runtime import build_scheduler

        scheduler = build_scheduler(opt, case["extra"]["scheduler"])
    losses, scales, skipped = [], [], []
    for step in range(steps):
        x, y = global_batch(step, micro * gas * world, case.get("target_scale", 1.0))
        per_rank = [[None] * gas for _ in range(world)]
        scale = scaler.loss_scale
        for k in range(gas):
            for rank in range(world):
                xb, yb = micro_batch(x, y, micro, world, rank, k)
                with autocast_for(precision):
                    loss = torch.nn.functional.mse_loss(model(xb).float(), yb)
                (loss * scale / gas).backward()  # as each rank does; the ranks' mean is taken below
                per_rank[rank][k] = loss.item()
        overflow = scaler.update(has_overflow(model.parameters()))
        if not overflow:
            for param in model.parameters():
                if param.grad is not None:
                    param.grad /= scale * world
            if case.get("clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), case["clip"])
            opt.step()
            if scheduler is not None:
                scheduler.step()
        opt.zero_grad()
        losses.append(per_rank)
        scales.append(scaler.loss_scale)
        skipped.append(overflow)
    return {"losses": losses, "scales": scales, "skipped": skipped}


def case_config(case, world):
    precision = case.get("precision", "fp32")
    optimizer = {"type": "Adam", "params": {"lr": case.get("lr", 0.01), "weight_decay": case.get("wd", 0.0)}}
    if case.get("sgd"):
        optimizer = {"type": "SGD", "params": {"lr": case.get("lr", 0.01)}}
    config = {"train_micro_batch_size_per_gpu": case["micro"], "gradient_accumulation_steps": case["gas"],
              "optimizer": optimizer, "zero_optimization": {"stage": case["stage"]}}
    if case.get("clip"):
        config["gradient_clipping"] = case["clip"]
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    if precision == "fp16":
        config["fp16"] = {"enabled": True, **case.get("fp16", {})}
    if case.get("client"):
        del config["optimizer"]
    config.update(case.get("extra", {}))
    return config


def client_optimizer(case, model):
    """The client's optimizer a case asks for (None: the config's): an instance or a callable."""
    import torch

    from accelops.ops import CPUAdam

    lr, wd = case.get("lr", 0.01), case.get("wd", 0.0)
    kind = case.get("client")
    if kind == "torch_adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if kind == "cpu_adam":
        return CPUAdam(model.parameters(), lr=lr, weight_decay=wd)
    if kind == "cpu_adam_callable":
        return lambda params: CPUAdam(params, lr=lr, weight_decay=wd)
    return None


# ---------------------------------------------------------------------------------------------- worker
def local(tensor):
    """A DTensor's local shard, or the tensor."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def local_sum(tensors):
    return float(sum(local(t).detach().double().sum() for t in tensors))


def grad_sum(model):
    """The sum of this rank's gradient entries (a DTensor gradient's local shard); None without grads."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return local_sum(grads) if grads else None


def poison_one_gradient_entry(model):
    """Make one entry of this rank's (reduced) gradients NaN: an overflow only this rank sees."""
    import torch

    for param in model.parameters():
        if param.grad is not None and local(param.grad).numel():
            with torch.no_grad():
                local(param.grad).view(-1)[0] = float("nan")
            return
    raise AssertionError("no gradient entry on this rank to poison")


def run_case(case):
    """Train one engine; returns its losses and counters (and the reference, on request)."""
    import torch

    import accelops

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    micro, gas, steps = case["micro"], case["gas"], case["steps"]
    model = make_model(unused=case.get("unused", False))
    engine, optimizer, loader, scheduler = accelops.initialize(model=model, config=case_config(case, world),
                                                               optimizer=client_optimizer(case, model))
    result = {"losses": [], "boundaries": [], "counters": [], "returned": [], "optimizer": type(optimizer).__name__,
              "norms": [], "scales": [], "lrs": [], "grad_sums": [], "param_sums": []}
    for step in range(steps):
        x, y = global_batch(step, micro * gas * world, case.get("target_scale", 1.0))
        per_step = []
        for k in range(gas):
            xb, yb = micro_batch(x, y, micro, world, rank, k)
            result["boundaries"].append(engine.is_gradient_accumulation_boundary())
            loss = torch.nn.functional.mse_loss(engine(xb).float(), yb)
            returned = engine.backward(loss)
            result["returned"].append(returned.item() / loss.item())
            result["grad_sums"].append(grad_sum(engine.module))
            poison = case.get("poison")
            if poison and (poison["step"], poison["rank"], k) == (step, rank, gas - 1):
                poison_one_gradient_entry(engine.module)
            engine.step()
            per_step.append(loss.item())
        result["losses"].append(per_step)
        result["counters"].append([engine.global_steps, engine.global_samples, engine.micro_steps,
                                   engine.skipped_steps])
        result["norms"].append(engine.get_global_grad_norm())
        result["scales"].append(float(engine.loss_scale))
        result["lrs"].append(engine.get_lr()[0])
        result["param_sums"].append(local_sum(p for p in engine.module.parameters()))
    result["engine"] = {"train_batch_size": engine.train_batch_size(),
                        "micro": engine.train_micro_batch_size_per_gpu(),
                        "gas": engine.gradient_accumulation_steps(), "stage": engine.zero_optimization_stage(),
                        "module_is_model": type(engine.module).__name__}
    result["state_sum"] = float(sum(v.float().sum() for v in engine.module_state_dict().values()))
    if case.get("reference") and rank == 0:
        result["reference"] = reference_losses(case, world)
    return result


def checkpoint_case(case):
    """Train with a fixed global batch (``train_batch_size`` 8 at any world size), optionally loading a
    checkpoint first (``load``: the folder) and saving one after ``save_at`` steps (with the step in the
    client state); records each step's global loss (the mean over every rank's micro-batches). With
    ``die_in_save``, every rank exits (code 17) after DCP wrote its files but before the commit. With
    ``skip_save_rank``, that rank does not call save (it sleeps ``sleep_s``) and the others record the
    error they get. With ``full_state_out`` (a file), rank 0 writes the full ``module_state_dict()`` there
    with torch.save right after the save."""
    import time

    import torch
    import torch.distributed as dist

    import accelops

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    gas, train = case.get("gas", 2), 8
    micro = train // gas // world
    config = {"train_batch_size": train, "gradient_accumulation_steps": gas,
              "optimizer": {"type": "Adam", "params": {"lr": 0.01, "weight_decay": 0.1}},
              "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": 0.01, "warmup_num_steps": 10}},
              "zero_optimization": {"stage": case["stage"]}}
    config.update(case.get("extra", {}))
    engine, *_ = accelops.initialize(model=make_model(seed=case.get("seed", 0)), config=config)
    result = {"losses": [], "loaded": None, "error": None}
    first = 0
    if case.get("load"):
        path, client = engine.load_checkpoint(case["load"], tag=case.get("tag"))
        result["loaded"] = [path, client, engine.global_steps, engine.global_samples]
        first = client["step"]
    if case.get("die_in_save"):
        import accelops.runtime.checkpoint as ckpt

        def die(*args, **kwargs):
            os._exit(17)

        ckpt.commit = die if rank == 0 else ckpt.commit
        original = ckpt.barrier
        ckpt.barrier = lambda engine, what: die() if "commit" in what else original(engine, what)
    for step in range(first, first + case["steps"]):
        x, y = global_batch(step, train)
        total = torch.zeros(())
        for k in range(gas):
            xb, yb = micro_batch(x, y, micro, world, rank, k)
            loss = torch.nn.functional.mse_loss(engine(xb), yb)
            engine.backward(loss)
            engine.step()
            total += loss.detach()
        if world > 1:
            dist.all_reduce(total)
        result["losses"].append(float(total) / (gas * world))
        if step + 1 == case.get("save_at"):
            if rank == case.get("skip_save_rank"):
                time.sleep(case.get("sleep_s", 0))
                return result
            started = time.monotonic()
            try:
                engine.save_checkpoint(case["save_dir"], client_sd={"step": step + 1, "note": "mine"})
            except RuntimeError as error:
                result["error"] = [str(error), time.monotonic() - started]
                return result
            if case.get("full_state_out"):
                full = engine.module_state_dict()  # a collective: every rank gathers
                if rank == 0:
                    torch.save(full, case["full_state_out"])
    result["state_sum"] = float(sum(v.double().sum() for v in engine.module_state_dict().values()))
    return result


def no_sync_case(case):
    """Backward of micro-batch 0 inside ``engine.no_sync()``, then of micro-batch 1 outside it (gas 1, so a
    boundary), then a step. Returns the local gradient sum after the first backward, the full (gathered)
    gradient sum after the second, and this rank's plain-torch gradient sum of both micro-batches (what the
    engine must average over the ranks)."""
    import copy

    import torch

    import accelops

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    model = make_model()
    plain = copy.deepcopy(model)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
              "optimizer": {"type": "Adam", "params": {"lr": 0.01}}, "zero_optimization": {"stage": case["stage"]}}
    engine, *_ = accelops.initialize(model=model, config=config)
    x, y = global_batch(0, 2 * 2 * world)
    batches = [micro_batch(x, y, 2, world, rank, k) for k in range(2)]
    for xb, yb in batches:
        torch.nn.functional.mse_loss(plain(xb), yb).backward()
    result = {"plain": local_sum(p.grad for p in plain.parameters())}
    with engine.no_sync():
        engine.backward(torch.nn.functional.mse_loss(engine(batches[0][0]), batches[0][1]))
    result["inside"] = grad_sum(engine.module)
    engine.backward(torch.nn.functional.mse_loss(engine(batches[1][0]), batches[1][1]))
    full = [p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad for p in engine.module.parameters()]
    result["outside"] = local_sum(full)
    engine.step()
    result["global_steps"] = engine.global_steps
    return result


def buffers_case(case):
    """Give a buffer a different value on every rank (as BatchNorm's running statistics drift apart), then
    save a checkpoint to ``save_dir``: it must hold rank 0's buffer, as DeepSpeed's does."""
    import torch

    import accelops

    rank = int(os.environ.get("RANK", "0"))
    model = make_model()
    model.register_buffer("stat", torch.zeros(8))
    config = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
              "zero_optimization": {"stage": case["stage"]}}
    engine, *_ = accelops.initialize(model=model, config=config)
    with torch.no_grad():
        engine.module.stat.fill_(rank + 1.0)
    engine.save_checkpoint(case["save_dir"])
    return {"stat": engine.module.stat.tolist()}


def full_state_case(case):
    """DeepSpeed's safe_get_full_* / safe_set_full_* against an unsharded copy (full_state_worker.py)."""
    from full_state_worker import full_state_case as run

    return run(case)


def _worker(module, kind):
    """The case ``<kind>_case`` of the worker module ``module`` (imported when run)."""
    def run(case):
        from importlib import import_module

        return getattr(import_module(module), f"{kind}_case")(case)
    return run


CASE_KINDS = {"checkpoint": checkpoint_case, "no_sync": no_sync_case, "buffers": buffers_case,
              "full_state": full_state_case,
              **{kind: _worker("zero_init_worker", kind)
                 for kind in ("zero_init", "zero_init_module", "gathered", "offload_states")},
              **{kind: _worker("moe_worker", kind) for kind in ("moe_layer", "moe_train", "moe_resume")},
              **{kind: _worker("pipeline_worker", kind)
                 for kind in ("pipeline", "pipeline_dropout", "pipeline_resume", "pipeline_data",
                              "pipeline_monitor")}}


def main():
    cases = json.loads(sys.argv[1])
    results = {}
    for case in cases:
        results[case["name"]] = CASE_KINDS.get(case.get("kind"), run_case)(case)
    import gc

    import accelops.comm

    gc.collect()  # free the engines (module hooks make cycles) while the process group and interpreter live
    accelops.comm.destroy()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
