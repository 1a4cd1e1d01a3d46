"""Pipeline-parallel training, accelops vs DeepSpeed (CPU, gloo): throughput and peak memory per rank.

What it measures. One GPT-like model built from ``LayerSpec``s: a token embedding (``TiedLayerSpec`` "embed",
shared with the output head), a learned position embedding, ``--blocks`` pre-LayerNorm transformer blocks
(causal self-attention with ``--width // 64`` heads, 4x GELU MLP), a final LayerNorm and the head (the embedding
weight, transposed, through the tied spec's ``forward_fn``); cross-entropy loss over ``--vocab`` tokens. Stages
are cut with ``partition_method="type:Block"`` (the same number of blocks per stage). Every case trains with
``engine.train_batch(data_iter)``: micro-batch ``--micro``, ``gradient_accumulation_steps`` ``--gas``, sequence
``--seq``, fp32, ``"Adam"`` with ``"torch_adam": true`` (both libraries then step ``torch.optim.AdamW``, weight
decay 0), layers seeded (``seed_layers=True``) and the same random token batches, so every case starts from the
same weights and sees the same data. No gradient clipping by default (``--clip``): DeepSpeed 0.19.8 clips an fp32
pipeline by each stage's own gradient norm (its ``clip_grad_norm_`` reduces over the model-parallel group only),
accelops by the norm over all stages, so with clipping active DeepSpeed's losses change with the stage count.

Cases (each a fresh group of processes, one per rank, world size = stages: no data parallelism, so the
per-rank memory shows how the model is split):

* accelops (``import accelops as deepspeed``): 1, 2 and 4 stages with 1F1B; 2 stages with GPipe (the
  accelops-only config key ``"accelops": {"pipeline_schedule": "gpipe"}``); 2 stages 1F1B with
  ``activation_checkpoint_interval=1``;
* DeepSpeed (``--ds_python``, a venv with DeepSpeed): 1, 2 and 4 stages (its own schedule, 1F1B-like) and
  2 stages with ``activation_checkpoint_interval=1`` and ``"pipeline": {"use_reentrant": false}`` (its default
  reentrant checkpoint fails here, see ``config``). DeepSpeed has no GPipe schedule.

Each rank runs ``--warmup`` batches, then ``--batches`` timed ones (between barriers, on rank 0). Reported:
samples/s and tokens/s over the timed batches; per rank ``VmHWM`` (peak resident set of the process, from
``/proc/self/status``; it includes the interpreter, torch and the library: ``base`` is VmRSS after the imports)
and the final loss (the mean over the last batch's micro-batches). All cases run the same computation, so
the final losses should agree across cases and libraries up to float rounding; the table says by how much.

Ranks are plain subprocesses (``rank_launch.launch_ranks``: MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE /
LOCAL_RANK, ``DS_ACCELERATOR=cpu``) with ``--threads`` torch threads each (1 by default: one core per stage, so
more stages also means more cores until the machine runs out of them: 4 stages on a 2-core machine share the
cores). Throughput on a shared machine varies from run to run; the peaks and the losses do not.

    python benchmarks/bench_pipeline.py --ds_python /work/venv-ds/bin/python       # all cases, both libraries
    python benchmarks/bench_pipeline.py                                             # accelops only
    python benchmarks/bench_pipeline.py --only "2 stages"                           # the cases whose name has it
    python benchmarks/bench_pipeline.py --width 128 --blocks 4 --seq 32 --warmup 1 --batches 1   # smoke run
"""
import argparse
import json
import os
import sys
import tempfile
import time

from rank_launch import GIB, launch_ranks, proc_status_gib

# (impl, stages, schedule, activation_checkpoint_interval)
CASES = [("accelops", 1, "1f1b", 0), ("accelops", 2, "1f1b", 0), ("accelops", 4, "1f1b", 0),
         ("accelops", 2, "gpipe", 0), ("accelops", 2, "1f1b", 1),
         ("deepspeed", 1, "1f1b", 0), ("deepspeed", 2, "1f1b", 0), ("deepspeed", 4, "1f1b", 0),
         ("deepspeed", 2, "1f1b", 1)]


# ---------------------------------------------------------------------------------------------- the model
def model_specs(args, LayerSpec, TiedLayerSpec):
    """The layer list (module docstring). Classes are defined here so the worker imports torch lazily."""
    import torch
    import torch.nn.functional as F

    class Embed(torch.nn.Module):
        def __init__(self, vocab, width):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(vocab, width) * 0.02)

        def forward(self, ids):
            return F.embedding(ids, self.weight)

    class Position(torch.nn.Module):
        def __init__(self, seq, width):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(seq, width) * 0.02)

        def forward(self, x):
            return x + self.weight

    class Block(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.heads = width // 64
            self.ln1, self.ln2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
            self.qkv, self.proj = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
            self.fc, self.out = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(att.transpose(1, 2).reshape(b, s, d))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    def head(embed, x):
        return x @ embed.weight.t()

    return ([TiedLayerSpec("embed", Embed, args.vocab, args.width), LayerSpec(Position, args.seq, args.width)]
            + [LayerSpec(Block, args.width) for _ in range(args.blocks)]
            + [LayerSpec(torch.nn.LayerNorm, args.width),
               TiedLayerSpec("embed", Embed, args.vocab, args.width, forward_fn=head)])


def loss_fn(logits, labels):
    import torch.nn.functional as F

    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def micro_batches(args, batch):
    """The ``--gas`` (tokens, next tokens) micro-batches of batch number ``batch`` (the same in every case)."""
    import torch

    gen = torch.Generator().manual_seed(1000 + batch)
    out = []
    for _ in range(args.gas):
        seq = torch.randint(0, args.vocab, (args.micro, args.seq + 1), generator=gen)
        out.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
    return out


def config(args, impl, schedule, ckpt):
    cfg = {"train_micro_batch_size_per_gpu": args.micro, "gradient_accumulation_steps": args.gas,
           "gradient_clipping": args.clip, "steps_per_print": 1_000_000, "wall_clock_breakdown": False,
           "optimizer": {"type": "Adam", "params": {"lr": 1e-3, "weight_decay": 0.0, "torch_adam": True}}}
    if impl == "accelops":
        cfg["accelops"] = {"pipeline_schedule": schedule}
    elif ckpt:
        # DeepSpeed's default (reentrant) checkpoint of the first layer, whose input (token ids) needs no
        # gradient, returns an output without grad_fn, and its backward fails ("element 0 of tensors does not
        # require grad"): take its non-reentrant checkpoint, which is also what accelops uses
        cfg["pipeline"] = {"use_reentrant": False}
    return cfg


# ---------------------------------------------------------------------------------------------- one rank
def worker(args) -> None:
    """One rank of one case: build, initialize, train; write this rank's numbers as JSON to ``--out``."""
    import torch
    import torch.distributed as dist

    if args.impl == "accelops":
        import accelops as deepspeed
        from accelops.pipe import LayerSpec, PipelineModule, TiedLayerSpec
    else:
        import deepspeed
        from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec
    torch.set_num_threads(args.threads)
    rank = int(os.environ["RANK"])
    rec = {"rank": rank, "base_rss": proc_status_gib("VmRSS")}
    deepspeed.init_distributed(dist_backend="gloo")
    # seed_fn: DeepSpeed's partition_balanced returns numpy ints for "type:" partitions, and its default seeding
    # then calls random.seed(numpy.int64), a TypeError on Python >= 3.11; int() works around it (both libraries).
    model = PipelineModule(model_specs(args, LayerSpec, TiedLayerSpec), num_stages=args.stages, loss_fn=loss_fn,
                           seed_layers=True, seed_fn=lambda seed: deepspeed.runtime.utils.set_random_seed(int(seed)),
                           base_seed=1234, partition_method="type:Block",
                           activation_checkpoint_interval=args.ckpt)
    rec["parts"] = [int(i) for i in model.parts]
    rec["params"] = sum(p.numel() for p in model.parameters())
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=config(args, args.impl, args.schedule, args.ckpt))
    inner = getattr(optimizer, "optimizer", None)
    rec["optimizer"] = type(optimizer).__name__ + (f"({type(inner).__name__})" if inner is not None else "")
    rec["init_hwm"] = proc_status_gib("VmHWM")

    losses = []
    for batch in range(args.warmup + args.batches):
        if batch == args.warmup:
            dist.barrier()
            start = time.perf_counter()
        losses.append(float(engine.train_batch(iter(micro_batches(args, batch)))))
    dist.barrier()
    rec["seconds"] = time.perf_counter() - start
    rec["losses"] = losses
    rec["train_hwm"], rec["train_rss"] = proc_status_gib("VmHWM"), proc_status_gib("VmRSS")
    with open(args.out + f".{rank}", "w") as f:
        json.dump(rec, f)


# ---------------------------------------------------------------------------------------------- launching
def label(impl: str, stages: int, schedule: str = "1f1b", ckpt: int = 0) -> str:
    return (f"{impl} {stages} stage{'s' if stages > 1 else ''} {'GPipe' if schedule == 'gpipe' else '1F1B'}"
            + (" ckpt" if ckpt else ""))


def run_case(args, impl: str, stages: int, schedule: str, ckpt: int, python: str) -> dict:
    """One case in a fresh group of ``stages`` ranks; rank 0's record with ``ranks`` (every rank's), or ``error``."""
    out = os.path.join(tempfile.mkdtemp(prefix="bench_pipeline_"), "rank")
    cmd = [python, os.path.abspath(__file__), "--worker", "--impl", impl, "--stages", str(stages),
           "--schedule", schedule, "--ckpt", str(ckpt), "--out", out]
    cmd += [f"--{k}={getattr(args, k)}" for k in ("vocab", "width", "blocks", "seq", "micro", "gas", "clip",
                                                  "warmup", "batches", "threads")]
    ranks = launch_ranks(cmd, stages, out, args.timeout)
    return ranks if isinstance(ranks, dict) else dict(ranks[0], ranks=ranks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", default=sys.executable, help="interpreter with accelops")
    p.add_argument("--ds_python", default=None, help="interpreter with deepspeed (no DeepSpeed cases without it)")
    p.add_argument("--only", default=None, help="run only the cases whose label contains this string")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro", type=int, default=4, help="micro-batch size")
    p.add_argument("--gas", type=int, default=8, help="gradient_accumulation_steps (micro-batches per batch)")
    p.add_argument("--clip", type=float, default=0.0, help="gradient_clipping (0: none)")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches")
    p.add_argument("--batches", type=int, default=3, help="timed batches")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per case")
    for name in ("impl", "schedule", "out"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    for name in ("stages", "ckpt"):
        p.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    samples = args.micro * args.gas
    w = args.width
    params = (args.vocab + args.seq) * w + args.blocks * (12 * w * w + 13 * w) + 2 * w
    print(f"model: {params / 1e6:.1f}M parameters ({params * 4 / GIB:.3f} GiB fp32), vocab {args.vocab}, width {w}, "
          f"{args.blocks} blocks, seq {args.seq}; micro-batch {args.micro} x {args.gas} micro-batches = {samples} "
          f"samples ({samples * args.seq} tokens) a batch; {args.warmup} warm-up + {args.batches} timed batches; "
          f"{args.threads} torch thread(s) per rank; gradient_clipping {args.clip}", flush=True)
    results = {}
    for impl, stages, schedule, ckpt in CASES:
        name = label(impl, stages, schedule, ckpt)
        if (impl == "deepspeed" and not args.ds_python) or (args.only and args.only not in name):
            continue
        print(f"running {name} ...", flush=True)
        t0 = time.perf_counter()
        res = run_case(args, impl, stages, schedule, ckpt, args.ds_python if impl == "deepspeed" else args.python)
        results[name] = res
        print(res["error"] if "error" in res else f"  done in {time.perf_counter() - t0:.0f} s", flush=True)

    ok = {name: r for name, r in results.items() if "error" not in r}
    rate = {name: args.batches * samples / r["seconds"] for name, r in ok.items()}
    peak = {name: max(x["train_hwm"] for x in r["ranks"]) for name, r in ok.items()}
    print("\n| case | stage boundaries | samples/s | tokens/s | peak RSS per rank (GiB) | base RSS (GiB) | final loss "
          "| optimizer |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if name not in ok:
            print(f"| {name} | failed | | | | | | |")
            continue
        peaks = " / ".join(f"{x['train_hwm']:.2f}" for x in r["ranks"])
        print(f"| {name} | {r['parts']} | {rate[name]:.2f} | {rate[name] * args.seq:.0f} | {peaks} | "
              f"{max(x['base_rss'] for x in r['ranks']):.2f} | {r['losses'][-1]:.6f} | {r['optimizer']} |")
    if not ok:
        return
    losses = {name: r["losses"][-1] for name, r in ok.items()}
    print(f"\nfinal losses: {min(losses.values()):.6f} .. {max(losses.values()):.6f}, spread "
          f"{max(losses.values()) - min(losses.values()):.2e} over {len(losses)} cases")

    print("\nratios a / b: throughput, largest per-rank peak RSS")
    one, two, four = label("accelops", 1), label("accelops", 2), label("accelops", 4)
    pairs = [(two, one), (four, one), (label("accelops", 2, "gpipe"), two), (label("accelops", 2, ckpt=1), two)]
    pairs += [(a, a.replace("accelops", "deepspeed")) for a in (one, two, four, label("accelops", 2, ckpt=1))]
    pairs += [(a.replace("accelops", "deepspeed"), b.replace("accelops", "deepspeed"))
              for a, b in ((two, one), (four, one), (label("accelops", 2, ckpt=1), two))]
    for a, b in pairs:
        if a in ok and b in ok:
            print(f"  {a} / {b}: {rate[a] / rate[b]:.2f}, {peak[a] / peak[b]:.2f}")


if __name__ == "__main__":
    main()
