"""Peak host memory per rank of building a model inside ``zero.Init`` vs outside it, accelops vs DeepSpeed (CPU, gloo).

What it measures. Each case is a fresh group of ``--ranks`` processes (2 by default, started with MASTER_ADDR /
MASTER_PORT / RANK / WORLD_SIZE / LOCAL_RANK in the environment, ``DS_ACCELERATOR=cpu``), so peaks never mix.
Every rank:

1. builds the model: ``--layers`` x ``nn.Linear(--width, --width)`` (default 16 x 4096 -> 268.5M fp32
   parameters, 1.00 GiB), either inside ``deepspeed.zero.Init(config_dict_or_path=cfg)`` (case ``inside``) or
   as plain torch modules (case ``outside``);
2. ``deepspeed.initialize(model=..., model_parameters=..., config=cfg)`` with ZeRO stage 3, fp32 (no fp16/bf16
   section), the optimizer from the config's ``"optimizer"`` section;
3. trains ``--steps`` steps (default 2) on random data (loss = mean of the squared output).

After each phase the rank reads ``VmHWM`` (the process's peak resident set so far; it cannot be reset, hence one
process group per case) and ``VmRSS`` (resident now) from ``/proc/self/status``. The table gives the largest
value over ranks, in GiB, next to the fp32 weight size and weights / world_size, and the ratios inside/outside
of the peaks. The peak after build includes the interpreter, torch and the library (``base``: VmRSS after the
imports, before the model). No timing and nothing asserted; memory only.

The library is ``import accelops as deepspeed`` (``--impl accelops``) or ``import deepspeed`` (``--impl
deepspeed``); each runs under its own interpreter: ``--python`` (accelops, default: this one) and
``--ds_python`` (a venv with DeepSpeed, e.g. ``/work/venv-ds/bin/python``), so one invocation measures both side by
side. Optimizer: ``"Adam"`` in the config (accelops: its CPUAdam). For DeepSpeed the params get ``"torch_adam":
true`` (DeepSpeed then steps ``torch.optim.AdamW``); ``--ds_cpu_adam`` leaves it out, and DeepSpeed's CPU
accelerator JIT-builds its own FusedAdam op at first use (about 1.5 min, g++ and ninja needed; peaks within 2% here).
Buckets: ``reduce_bucket_size`` and ``stage3_prefetch_bucket_size`` are ``--bucket`` (5e7 elements), not
DeepSpeed's 5e8 (2 GB of fp32 a buffer); ``stage3_param_persistence_threshold`` 0 (every parameter is partitioned).

    python benchmarks/bench_zero_init_memory.py --ds_python /work/venv-ds/bin/python        # both, 4 cases
    python benchmarks/bench_zero_init_memory.py --impl accelops --case outside               # one case
    python benchmarks/bench_zero_init_memory.py --impl accelops --layers 4 --width 1024      # smoke run

Memory: with 2 ranks, the outside case holds 2 full models at once (plus, after initialize, each rank's shard of
the weights, gradients and Adam's two states); keep ``--layers``/``--width`` to what the machine has.
"""
import argparse
import json
import os
import sys
import tempfile

from rank_launch import GIB, launch_ranks, proc_status_gib


def ds_config(args, impl: str) -> dict:
    params = {"lr": 1e-4, "weight_decay": 0.0}
    if impl == "deepspeed" and not args.ds_cpu_adam:
        params["torch_adam"] = True
    return {"train_micro_batch_size_per_gpu": args.batch, "gradient_accumulation_steps": 1,
            "optimizer": {"type": "Adam", "params": params},
            "zero_optimization": {"stage": 3, "reduce_bucket_size": args.bucket,
                                  "stage3_prefetch_bucket_size": args.bucket,
                                  "stage3_param_persistence_threshold": 0},
            "steps_per_print": 1_000_000}


def worker(args) -> None:
    """One rank: build, initialize, train; write this rank's numbers as JSON to ``--out``."""
    import torch

    if args.impl == "accelops":
        import accelops as deepspeed
    else:
        import deepspeed
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    deepspeed.init_distributed(dist_backend="gloo")
    cfg = ds_config(args, args.impl)
    rec = {"rank": rank, "base_rss": proc_status_gib("VmRSS")}

    def build():
        return torch.nn.Sequential(*[torch.nn.Linear(args.width, args.width) for _ in range(args.layers)])

    torch.manual_seed(0)
    if args.case == "inside":
        with deepspeed.zero.Init(config_dict_or_path=cfg):
            model = build()
    else:
        model = build()
    rec["param_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})
    rec["build_hwm"], rec["build_rss"] = proc_status_gib("VmHWM"), proc_status_gib("VmRSS")

    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    inner = getattr(optimizer, "optimizer", None)
    rec["optimizer"] = type(optimizer).__name__ + (f"({type(inner).__name__})" if inner is not None else "")
    rec["init_hwm"], rec["init_rss"] = proc_status_gib("VmHWM"), proc_status_gib("VmRSS")

    gen = torch.Generator().manual_seed(1000 + rank)
    for _ in range(args.steps):
        x = torch.randn(args.batch, args.width, generator=gen)
        loss = engine(x).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    rec["loss"] = loss.item()
    rec["train_hwm"], rec["train_rss"] = proc_status_gib("VmHWM"), proc_status_gib("VmRSS")
    with open(args.out + f".{rank}", "w") as f:
        json.dump(rec, f)



def run_case(args, impl: str, case: str, python: str) -> dict:
    """Start ``--ranks`` worker processes for one (impl, case); return the largest of each number over ranks."""
    out = os.path.join(tempfile.mkdtemp(prefix="zero_init_mem_"), "rank")
    cmd = [python, os.path.abspath(__file__), "--worker", "--impl", impl, "--case", case, "--out", out,
           "--layers", str(args.layers), "--width", str(args.width), "--batch", str(args.batch),
           "--steps", str(args.steps), "--bucket", str(args.bucket)] + (["--ds_cpu_adam"] if args.ds_cpu_adam else [])
    ranks = launch_ranks(cmd, args.ranks, out, args.timeout)
    if isinstance(ranks, dict):
        return ranks
    res = {k: max(r[k] for r in ranks) for k in ranks[0] if k.endswith(("_hwm", "_rss"))}
    res.update(optimizer=ranks[0]["optimizer"], dtypes=",".join(ranks[0]["param_dtypes"]), loss=ranks[0]["loss"])
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=["accelops", "deepspeed", "both"], default="both")
    p.add_argument("--case", choices=["inside", "outside", "both"], default="both")
    p.add_argument("--python", default=sys.executable, help="interpreter with accelops")
    p.add_argument("--ds_python", default=None, help="interpreter with deepspeed (default: --python)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--bucket", type=int, default=50_000_000,
                   help="reduce / prefetch bucket sizes in elements (DeepSpeed's default 5e8 fp32 = 2 GB a buffer)")
    p.add_argument("--ds_cpu_adam", action="store_true",
                   help='DeepSpeed: no "torch_adam": true in the Adam params (its own CPU Adam op, built at first use)')
    p.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    n_params = args.layers * (args.width * args.width + args.width)
    weights = n_params * 4 / GIB
    print(f"model: {args.layers} x nn.Linear({args.width}, {args.width}), {n_params / 1e6:.1f}M params, "
          f"fp32 weights {weights:.3f} GiB, weights/world_size {weights / args.ranks:.3f} GiB, {args.ranks} ranks, "
          f"ZeRO-3, {args.steps} steps, batch {args.batch}")
    impls = ["accelops", "deepspeed"] if args.impl == "both" else [args.impl]
    cases = ["inside", "outside"] if args.case == "both" else [args.case]
    results = {}
    for impl in impls:
        python = args.ds_python or args.python if impl == "deepspeed" else args.python
        for case in cases:
            print(f"running {impl} {case} ...", flush=True)
            results[impl, case] = run_case(args, impl, case, python)
            if "error" in results[impl, case]:
                print(results[impl, case]["error"], flush=True)

    print("\nper-rank peak RSS (VmHWM, GiB; largest over ranks); 'now' = VmRSS at the same point\n")
    print("| impl | case | base | peak after build | peak after init | peak after steps | now after steps "
          "| param dtype after build | optimizer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (impl, case), r in results.items():
        if "error" in r:
            print(f"| {impl} | {case} | failed | | | | | | |")
            continue
        print(f"| {impl} | {case} | {r['base_rss']:.2f} | {r['build_hwm']:.2f} | {r['init_hwm']:.2f} | "
              f"{r['train_hwm']:.2f} | {r['train_rss']:.2f} | {r['dtypes']} | {r['optimizer']} |")
    print(f"\nfp32 weights {weights:.3f} GiB; weights/world_size {weights / args.ranks:.3f} GiB")
    print("\nratios of the peaks, inside / outside zero.Init (build, init, steps):")
    for impl in impls:
        i, o = results.get((impl, "inside")), results.get((impl, "outside"))
        if i and o and "error" not in i and "error" not in o:
            print(f"  {impl}: " + ", ".join(f"{i[k] / o[k]:.2f}" for k in ("build_hwm", "init_hwm", "train_hwm")))
    if len(impls) == 2:
        print("\nratios accelops / deepspeed (build, init, steps):")
        for case in cases:
            a, d = results.get(("accelops", case)), results.get(("deepspeed", case))
            if a and d and "error" not in a and "error" not in d:
                print(f"  {case}: " + ", ".join(f"{a[k] / d[k]:.2f}" for k in ("build_hwm", "init_hwm", "train_hwm")))


if __name__ == "__main__":
    main()
