"""Train a small GPT on synthetic tokens with DeepSpeed's training loop.

This script is written for DeepSpeed and runs on accelops: the only DeepSpeed difference is the line
``import accelops as deepspeed`` (write ``import deepspeed`` to run it on DeepSpeed itself).

    torchrun --nproc-per-node 2 examples/gpt/train.py --deepspeed_config examples/gpt/ds_config.json --steps 40
    ds_launch --num_gpus 2 examples/gpt/train.py --deepspeed_config examples/gpt/ds_config.json --steps 40

(on a CPU-only host ``--num_gpus 2`` starts 2 CPU ranks on gloo; set ``DS_ACCELERATOR=cpu`` to be explicit).
``--steps`` counts optimizer steps (``engine.global_steps``); each is ``gradient_accumulation_steps``
micro-batches of ``train_micro_batch_size_per_gpu`` samples per rank. With ``--save_dir`` the engine saves a
checkpoint at the end, takes one more step, loads the checkpoint back and checks that the model is the
saved one again (exit status 1 when it is not).
"""
import argparse
import gc
import itertools
import math
import os
import sys
import time

import torch
import torch.distributed as dist

import accelops as deepspeed  # the only line that differs from a DeepSpeed script: `import deepspeed`

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import GPT, GPTConfig, synthetic_tokens  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description="Train a small GPT on synthetic tokens (DeepSpeed loop)")
    parser.add_argument("--vocab_size", type=int, default=256)
    parser.add_argument("--seq_len", type=int, default=32)
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--n_layer", type=int, default=2)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--tie_weights", action="store_true", help="share the token embedding with the LM head")
    parser.add_argument("--num_samples", type=int, default=4096, help="size of the synthetic data set")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps to train")
    parser.add_argument("--print_every", type=int, default=None,
                        help="print every N steps (default: the config's steps_per_print, else 10)")
    parser.add_argument("--save_dir", default=None, help="save a checkpoint here at the end and load it back")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's initial weights")
    parser.add_argument("--local_rank", type=int, default=-1, help="set by the launcher")
    parser = deepspeed.add_config_arguments(parser)
    return parser.parse_args()


def micro_batches(loader):
    """The loader's batches, epoch after epoch (the sampler reshuffles per epoch)."""
    for epoch in itertools.count():
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


def train_step(engine, batches):
    """One optimizer step: gradient_accumulation_steps micro-batches. Returns the mean micro-batch loss."""
    total = 0.0
    accum = engine.gradient_accumulation_steps()
    for _ in range(accum):
        x, y = next(batches)
        loss = engine(x.to(engine.device), y.to(engine.device))
        engine.backward(loss)
        engine.step()
        total += loss.item()
    return total / accum


def mean_over_ranks(value):
    if dist.is_initialized() and dist.get_world_size() > 1:
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        value = tensor.item() / dist.get_world_size()
    return value


@torch.no_grad()
def eval_loss(engine, x, y):
    engine.eval()
    loss = engine(x.to(engine.device), y.to(engine.device)).item()
    engine.train()
    return loss


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    cfg = GPTConfig(vocab_size=args.vocab_size, seq_len=args.seq_len, d_model=args.d_model, n_layer=args.n_layer,
                    n_head=args.n_head, tie_weights=args.tie_weights)
    model = GPT(cfg)
    dataset = synthetic_tokens(args.num_samples, args.seq_len, args.vocab_size)

    engine, optimizer, loader, lr_scheduler = deepspeed.initialize(
        args=args, model=model, model_parameters=model.parameters(), training_data=dataset)
    rank0 = engine.global_rank == 0
    every = args.print_every or engine.steps_per_print() or 10
    if rank0:
        n_params = sum(p.numel() for p in model.parameters())
        precision = "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"
        print(f"world size {engine.world_size} | ZeRO stage {engine.zero_optimization_stage()} | {precision} | "
              f"optimizer {type(optimizer).__name__} | scheduler {type(lr_scheduler).__name__} | "
              f"{n_params / 1e6:.2f}M params | batch {engine.train_batch_size()} = "
              f"{engine.train_micro_batch_size_per_gpu()} x {engine.gradient_accumulation_steps()} accum x "
              f"{engine.world_size} ranks", flush=True)

    batches = micro_batches(loader)
    losses = []
    start = last_time = time.perf_counter()
    last_step = 0
    while engine.global_steps < args.steps:
        loss = train_step(engine, batches)
        step = engine.global_steps
        if step == 1 or step % every == 0 or step == args.steps:
            loss = mean_over_ranks(loss)  # every rank takes part: the print steps are the same on all
            losses.append(loss)
            now = time.perf_counter()
            if rank0:
                rate = (step - last_step) / (now - last_time)
                print(f"step {step:4d}/{args.steps} | loss {loss:.4f} | lr {engine.get_lr()[0]:.3e} | "
                      f"{rate:.2f} steps/s", flush=True)
            last_time, last_step = now, step
    elapsed = time.perf_counter() - start
    if rank0:
        print(f"done: {engine.global_steps} steps in {elapsed:.1f} s ({engine.global_steps / elapsed:.2f} steps/s), "
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f} (ln(vocab) = {math.log(args.vocab_size):.4f})", flush=True)

    status = 0
    if args.save_dir:
        x, y = dataset[:8]
        before = eval_loss(engine, x, y)
        tag = f"global_step{engine.global_steps}"
        engine.save_checkpoint(args.save_dir, tag, client_state={"step": engine.global_steps, "eval_loss": before})
        train_step(engine, batches)  # move the weights away from the saved ones
        moved = eval_loss(engine, x, y)
        path, client_state = engine.load_checkpoint(args.save_dir)  # tag None: the one save_dir/latest names
        after = eval_loss(engine, x, y)
        ok = (path is not None and client_state["step"] == args.steps and engine.global_steps == args.steps
              and abs(after - before) <= 1e-6 * max(1.0, abs(before)) and moved != before)
        status = 0 if ok else 1
        if rank0:
            print(f"checkpoint: saved {tag} to {args.save_dir} (eval loss {before:.6f}); one more step: "
                  f"{moved:.6f}; loaded {path}: eval loss {after:.6f}, client_state step {client_state['step']}, "
                  f"global_steps {engine.global_steps}: round trip {'OK' if ok else 'FAILED'}", flush=True)

    # free the engine (and the communication work FSDP keeps) before the process group goes
    del engine, optimizer, loader, lr_scheduler, model
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
