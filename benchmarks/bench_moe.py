"""Mixture-of-experts layer throughput and memory, accelops vs DeepSpeed vs a dense layer (CPU, gloo).

What it measures. Cases, each a fresh group of processes (``rank_launch.launch_ranks``: ``DS_ACCELERATOR=cpu``,
``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, so a rank is one core's worth of work):

* ``accelops`` / ``deepspeed``: ``MoE(hidden, expert, num_experts=--experts, ep_size, k)`` of
  ``accelops.moe.layer`` / ``deepspeed.moe.layer`` (DeepSpeed 0.19.8 under ``--ds_python``), expert =
  ``Linear(h, 4h)-GELU-Linear(4h, h)``, ``capacity_factor`` ``--capacity_factor`` (1.0), DeepSpeed's other
  defaults (random token selection, token dropping, top-2's Gumbel-sampled second expert), at ep_size 1 (one
  rank holding every expert) and ep_size 2 (two ranks, half the experts each, tokens sent with all-to-all);
  top-1 and top-2. Groups: ``deepspeed.init_distributed(dist_backend="gloo")``, then
  ``groups._create_expert_and_data_parallel(ep_size)`` and ``layer.set_deepspeed_parallelism()``.
* ``dense``: plain torch, one rank, the same active parameters per token: top-1 ``Linear(h, 4h)-GELU-Linear(4h,
  h)`` (one expert), top-2 ``Linear(h, 8h)-GELU-Linear(8h, h)`` (two experts' FLOPs in one MLP).

Every rank feeds ``--tokens`` tokens (``(tokens, hidden)``, fp32, the same inputs, seeds and initial weights in
both libraries: the gate from seed 1, global expert ``g`` from seed ``100 + g``) and times ``--iters``
iterations after ``--warmup``, between barriers: forward, and forward + backward of ``mean(out^2) + 0.01 x
l_aux`` (input gradient included, as inside a network); the slowest rank's median, the median CPU time of a
rank (``time.process_time``; steadier than wall time on a shared machine) and tokens/s = tokens x ranks /
wall time. Then, with ``--train_steps`` > 0, ``deepspeed.initialize`` (ZeRO 0, fp32, ``"Adam"`` with
``"torch_adam": true``, the groups made by the engine on a fresh copy of the layer) and the time of full
steps (``engine(x)``, ``engine.backward``, ``engine.step()``; the dense case with accelops' engine). Peak RSS
per rank: ``VmHWM`` after the layer phase and after the engine phase (largest over ranks), and ``base``, the
resident set after the imports.

Agreement (no timing): for each library, ep_size and k, a second layer with the comparison options gets the
timed layer's weights through ``load_state_dict`` (DeepSpeed's: the state_dict accelops saved for the same
ep_size, k and rank, so the weights are copied across libraries), and runs forward + backward on fixed
``--cmp_tokens``-token inputs (ep_size 1: inputs 0 and 1 on its one rank; ep_size 2: input r on rank r).
Options ``nodrop``: ``drop_tokens=False, use_rts=False, top2_2nd_expert_sampling=False`` (nothing random, no
token dropped); ``cf1``: ``drop_tokens=True, capacity_factor=1.0, use_rts=False,
top2_2nd_expert_sampling=False`` (tokens dropped; top-2 drops by position in both libraries, top-1 without
RTS keeps the first tokens in accelops but ``torch.topk``'s choice among equal scores in DeepSpeed, so top-1
cf1 may differ by design). The table gives the largest absolute differences of the output, l_aux, the input
gradient and the gate weight's gradient, and whether exp_counts agree, for accelops vs DeepSpeed at the same
ep_size and for ep_size 2 vs ep_size 1 in each library.

accelops' layer moves tokens with the ``moe_dispatch`` op (its compiled CPU kernel, JIT-built at first use, or
its torch index reference); the path taken is printed per case, and ``--fallback`` runs the accelops cases with
``ACCELOPS_CPU_OPS_FALLBACK=1`` (the reference). DeepSpeed 0.19.8 gathers with ``index_select``.

On a shared machine the wall times (and so tokens/s) move by 2x from one iteration to the next; the CPU time of
a rank (``cpu``, ``tok/cpu-s``) is the number to compare libraries with, and the wall times say what the
all-to-all waits cost only on a quiet machine. Nothing is asserted.

    python benchmarks/bench_moe.py --ds_python /work/venv-ds/bin/python      # everything (about 5 min here)
    python benchmarks/bench_moe.py                                           # accelops and dense only
    python benchmarks/bench_moe.py --hidden 1024 --tokens 4096 --iters 3 --train_steps 2 \
        --ds_python /work/venv-ds/bin/python                                 # larger (about 13 min here)
    python benchmarks/bench_moe.py --hidden 128 --tokens 256 --iters 1 --train_steps 1 --ds_python ...  # smoke
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from rank_launch import GIB, launch_ranks, proc_status_gib

CMP_OPTIONS = {"nodrop": dict(drop_tokens=False, use_rts=False, top2_2nd_expert_sampling=False),
               "cf1": dict(drop_tokens=True, capacity_factor=1.0, use_rts=False, top2_2nd_expert_sampling=False)}


def mlp(torch, hidden, width):
    return torch.nn.Sequential(torch.nn.Linear(hidden, width), torch.nn.GELU(), torch.nn.Linear(width, hidden))


def make_moe(torch, MoE, args, **options):
    options = dict(dict(capacity_factor=args.capacity_factor), **options)
    return MoE(args.hidden, mlp(torch, args.hidden, 4 * args.hidden), num_experts=args.experts, ep_size=args.ep,
               k=args.k, min_capacity=4, **options)


def init_moe(torch, layer, ep_rank):
    """The same weights in both libraries: the gate from seed 1, global expert g from seed 100 + g."""
    torch.manual_seed(1)
    layer.deepspeed_moe.gate.wg.reset_parameters()
    experts = layer.deepspeed_moe.experts.deepspeed_experts
    for i, expert in enumerate(experts):
        torch.manual_seed(100 + ep_rank * len(experts) + i)
        for module in expert.modules():
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()


def worker(args) -> None:
    """One rank of one case; writes its numbers as JSON to ``<--out>.<rank>``."""
    import torch

    torch.set_num_threads(1)
    if args.impl == "deepspeed":
        import deepspeed
        from deepspeed.moe.layer import MoE
        from deepspeed.utils import groups
    else:
        import accelops as deepspeed
        from accelops.moe.layer import MoE
        from accelops.utils import groups
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    rec = {"rank": rank, "base_rss": proc_status_gib("VmRSS")}
    deepspeed.init_distributed(dist_backend="gloo")
    ep_rank = rank % args.ep

    def barrier():
        if world > 1:
            dist.barrier()

    torch.manual_seed(0)
    if args.impl == "dense":
        layer = mlp(torch, args.hidden, 4 * args.hidden * args.k)
    else:
        layer = make_moe(torch, MoE, args)
        init_moe(torch, layer, ep_rank)
        groups._create_expert_and_data_parallel(args.ep)
        layer.set_deepspeed_parallelism()
    rec["params"] = sum(p.numel() for p in layer.parameters())

    def loss_of(out):
        if isinstance(out, tuple):
            return out[0].pow(2).mean() + 0.01 * out[1]
        return out.pow(2).mean()

    x_all = torch.randn(args.tokens, args.hidden, generator=torch.Generator().manual_seed(1000 + rank))
    fwd, fwd_bwd, cpu = [], [], []
    for it in range(args.warmup + args.iters):
        x = x_all.clone().requires_grad_()
        barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        out = layer(x)
        t1 = time.perf_counter()
        loss_of(out).backward()
        t2, c2 = time.perf_counter(), time.process_time()
        layer.zero_grad(set_to_none=True)
        if it >= args.warmup:
            fwd.append(t1 - t0)
            fwd_bwd.append(t2 - t0)
            cpu.append(c2 - c0)
        if isinstance(out, tuple):
            rec["exp_counts"] = out[2].tolist()
        del out, x
    rec.update(fwd=min(fwd), fwd_bwd=min(fwd_bwd), fwd_bwd_median=statistics.median(fwd_bwd),
               cpu=statistics.median(cpu))
    rec["layer_hwm"] = proc_status_gib("VmHWM")

    if args.impl != "dense":
        moe_layer = layer.deepspeed_moe
        if hasattr(moe_layer, "dispatcher"):  # accelops: the moe_dispatch op's path (kernel or torch reference)
            dispatcher = moe_layer.dispatcher("cpu")
            reason = str(getattr(dispatcher, "backend_reason", "")).split(", loaded")[0][:100]
            rec["dispatch"] = f"moe_dispatch op, {dispatcher.backend} ({reason})"
        rec["cmp"] = compare_phase(torch, MoE, args, layer, rank)

    if args.train_steps > 0:
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        del layer
        if args.impl == "dense":
            torch.manual_seed(0)
            fresh = mlp(torch, args.hidden, 4 * args.hidden * args.k)
        else:
            fresh = make_moe(torch, MoE, args)
        fresh.load_state_dict(state)
        del state

        class Net(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return loss_of(self.inner(x))

        net = Net(fresh)
        config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                  "optimizer": {"type": "Adam", "params": {"lr": 1e-4, "weight_decay": 0.0, "torch_adam": True}},
                  "zero_optimization": {"stage": 0}, "steps_per_print": 1_000_000}
        try:
            engine, optimizer, _, _ = deepspeed.initialize(model=net, model_parameters=net.parameters(),
                                                           config=config)
            steps, steps_cpu = [], []
            for it in range(1 + args.train_steps):
                barrier()
                t0, c0 = time.perf_counter(), time.process_time()
                loss = engine(x_all)
                engine.backward(loss)
                engine.step()
                t1, c1 = time.perf_counter(), time.process_time()
                if it >= 1:
                    steps.append(t1 - t0)
                    steps_cpu.append(c1 - c0)
            rec.update(step=min(steps), step_cpu=statistics.median(steps_cpu), loss=float(loss),
                       optimizer=type(optimizer).__name__)
        except Exception as e:  # recorded, not raised: the layer numbers above still count
            rec["train_error"] = f"{type(e).__name__}: {e}"[:300]
        rec["train_hwm"] = proc_status_gib("VmHWM")

    with open(args.out + f".{rank}", "w") as f:
        json.dump(rec, f)


def compare_phase(torch, MoE, args, layer, rank):
    """Forward + backward of layers with the comparison options (module docstring) on fixed inputs; saves
    the results under ``--cmp_dir``. Returns what was done (where the weights came from)."""
    base = f"ep{args.ep}_k{args.k}_r{rank}"
    sd_file = os.path.join(args.cmp_dir, f"accelops_state_{base}.pt")
    if args.impl == "accelops":
        torch.save(layer.state_dict(), sd_file)
        state, source = layer.state_dict(), "own"
    elif os.path.exists(sd_file):
        state, source = torch.load(sd_file), "accelops state_dict"
    else:
        state, source = layer.state_dict(), "own (no accelops state_dict file)"
    inputs = [rank] if args.ep > 1 else list(range(2))
    for name, options in CMP_OPTIONS.items():
        other = make_moe(torch, MoE, args, **options)
        other.load_state_dict(state)
        other.set_deepspeed_parallelism()
        for i in inputs:
            x = torch.randn(args.cmp_tokens, args.hidden,
                            generator=torch.Generator().manual_seed(5000 + i)).requires_grad_()
            out, l_aux, counts = other(x)
            (out.pow(2).sum() + l_aux).backward()
            torch.save({"out": out.detach(), "l_aux": l_aux.detach(), "counts": counts.detach(),
                        "x_grad": x.grad, "wg_grad": other.deepspeed_moe.gate.wg.weight.grad},
                       os.path.join(args.cmp_dir, f"{args.impl}_ep{args.ep}_k{args.k}_{name}_in{i}.pt"))
            other.zero_grad(set_to_none=True)
    return source


def run_case(args, impl, ep, k, python, cmp_dir):
    out = os.path.join(tempfile.mkdtemp(prefix="bench_moe_"), "rank")
    cmd = [python, os.path.abspath(__file__), "--worker", "--impl", impl, "--ep", str(ep), "--k", str(k),
           "--out", out, "--cmp_dir", cmp_dir]
    for name in ("hidden", "experts", "tokens", "capacity_factor", "iters", "warmup", "train_steps", "cmp_tokens"):
        cmd += [f"--{name}", str(getattr(args, name))]
    env = {"ACCELOPS_CPU_OPS_FALLBACK": "1"} if args.fallback and impl == "accelops" else None
    ranks = launch_ranks(cmd, ep if impl != "dense" else 1, out, args.timeout, env=env)
    if isinstance(ranks, dict):
        return ranks
    res = {key: max(r[key] for r in ranks) for key in ("fwd", "fwd_bwd", "fwd_bwd_median", "step", "layer_hwm",
                                                       "train_hwm", "base_rss") if key in ranks[0]}
    res["cpu"] = statistics.median(r["cpu"] for r in ranks)
    if "step_cpu" in ranks[0]:
        res["step_cpu"] = statistics.median(r["step_cpu"] for r in ranks)
    for key in ("params", "cmp", "train_error", "optimizer", "loss", "exp_counts", "dispatch"):
        if key in ranks[0]:
            res[key] = ranks[0][key]
    res["ranks"] = len(ranks)
    return res


def compare(cmp_dir, a, b, k, name):
    """Largest differences between saved comparison results ``a`` and ``b`` ((impl, ep) pairs)."""
    import torch

    diffs = {"out": 0.0, "l_aux": 0.0, "x_grad": 0.0, "wg_grad": 0.0}
    counts_equal, found, scale = True, 0, 0.0
    for i in range(2):
        fa = os.path.join(cmp_dir, f"{a[0]}_ep{a[1]}_k{k}_{name}_in{i}.pt")
        fb = os.path.join(cmp_dir, f"{b[0]}_ep{b[1]}_k{k}_{name}_in{i}.pt")
        if not (os.path.exists(fa) and os.path.exists(fb)):
            continue
        found += 1
        ra, rb = torch.load(fa), torch.load(fb)
        for key in diffs:
            diffs[key] = max(diffs[key], float((ra[key].float() - rb[key].float()).abs().max()))
        counts_equal &= torch.equal(ra["counts"].long(), rb["counts"].long())
        scale = max(scale, float(ra["out"].abs().max()))
    diffs["out_scale"] = scale
    return (diffs, counts_equal) if found == 2 else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", default=sys.executable, help="interpreter with accelops")
    p.add_argument("--ds_python", default=None, help="interpreter with deepspeed (no DeepSpeed cases without it)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=2048, help="tokens per rank")
    p.add_argument("--capacity_factor", type=float, default=1.0)
    p.add_argument("--ks", default="1,2")
    p.add_argument("--eps", default="1,2")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--train_steps", type=int, default=3, help="engine steps timed after one warm-up (0: none)")
    p.add_argument("--cmp_tokens", type=int, default=256)
    p.add_argument("--fallback", action="store_true",
                   help="accelops cases with ACCELOPS_CPU_OPS_FALLBACK=1 (moe_dispatch's torch reference, no kernel)")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per case")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--ep", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--cmp_dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    ks = [int(k) for k in args.ks.split(",")]
    eps = [int(e) for e in args.eps.split(",")]
    impls = ["accelops"] + (["deepspeed"] if args.ds_python else [])
    h = args.hidden
    print(f"MoE: hidden {h}, {args.experts} experts of Linear({h}, {4 * h})-GELU-Linear({4 * h}, {h}) "
          f"({(8 * h * h + 5 * h) / 1e6:.2f}M params each), capacity_factor {args.capacity_factor}, "
          f"{args.tokens} tokens per rank, fp32, 1 thread per rank; {args.iters} timed iterations after "
          f"{args.warmup}, {args.train_steps} engine steps", flush=True)
    cmp_dir = tempfile.mkdtemp(prefix="bench_moe_cmp_")
    cases = [("dense", 1, k) for k in ks] + [(impl, ep, k) for impl in impls for ep in eps for k in ks]
    results = {}
    for impl, ep, k in cases:
        python = args.ds_python if impl == "deepspeed" else args.python
        print(f"running {impl} ep_size {ep} top-{k} ...", flush=True)
        t = time.time()
        results[impl, ep, k] = r = run_case(args, impl, ep, k, python, cmp_dir)
        if "error" in r:
            print(r["error"], flush=True)
        else:
            print(f"  done in {time.time() - t:.0f} s" + (f"; engine: {r['train_error']}" if "train_error" in r
                                                          else "") + (f"; dispatch: {r['dispatch']}" if "dispatch"
                                                                      in r else ""), flush=True)

    def label(impl, ep, k):
        return f"dense top-{k} equiv." if impl == "dense" else f"{impl} ep{ep} top-{k}"

    print("\nfwd, fwd+bwd, step: best wall ms of an iteration (slowest rank); fwd+bwd med: median wall ms; cpu: "
          "median CPU ms of a rank's fwd+bwd; tok/s: tokens of all ranks / best fwd+bwd wall time; tok/cpu-s: "
          "tokens of a rank / its CPU time; step tok/s: all ranks' tokens / best engine step; peak: VmHWM per "
          "rank (largest), GiB; base: resident after the imports\n")
    print("| case | ranks | params/rank | fwd ms | fwd+bwd ms | fwd+bwd med | cpu ms | tok/s | tok/s/rank | "
          "tok/cpu-s/rank | step ms | step tok/s | peak layer | peak engine | base |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (impl, ep, k), r in results.items():
        if "error" in r:
            print(f"| {label(impl, ep, k)} | failed |" + " |" * 13)
            continue
        n = r["ranks"]
        step = f"{r['step'] * 1e3:.0f} | {args.tokens * n / r['step']:.0f}" if "step" in r else "failed | "
        print(f"| {label(impl, ep, k)} | {n} | {r['params'] / 1e6:.2f}M | {r['fwd'] * 1e3:.0f} | "
              f"{r['fwd_bwd'] * 1e3:.0f} | {r['fwd_bwd_median'] * 1e3:.0f} | {r['cpu'] * 1e3:.0f} | "
              f"{args.tokens * n / r['fwd_bwd']:.0f} | {args.tokens / r['fwd_bwd']:.0f} | "
              f"{args.tokens / r['cpu']:.0f} | {step} | {r['layer_hwm']:.3f} | "
              f"{r.get('train_hwm', float('nan')):.3f} | {r['base_rss']:.3f} |")
    for key, r in results.items():
        if "train_error" in r:
            print(f"engine failed for {label(*key)}: {r['train_error']}")

    def ok(*keys):
        return all(key in results and "error" not in results[key] for key in keys)

    def rate(key, what="fwd_bwd"):
        r = results[key]
        return args.tokens * r["ranks"] / r[what] if what in r else float("nan")

    print("\nratios (tok/s: fwd+bwd, best wall; cpu: tokens per CPU second of a rank; step: engine step tok/s; "
          "peak: per-rank peak RSS after the layer phase)")
    if "deepspeed" in impls:
        print("  accelops / deepspeed:")
        for ep in eps:
            for k in ks:
                a, d = ("accelops", ep, k), ("deepspeed", ep, k)
                if ok(a, d):
                    ra, rd = results[a], results[d]
                    print(f"    ep{ep} top-{k}: tok/s {rate(a) / rate(d):.2f}, cpu {rd['cpu'] / ra['cpu']:.2f}, "
                          f"step {rate(a, 'step') / rate(d, 'step'):.2f}, peak {ra['layer_hwm'] / rd['layer_hwm']:.2f}")
    print("  MoE / dense with the same active parameters (per rank):")
    for impl in impls:
        for ep in eps:
            for k in ks:
                m, d = (impl, ep, k), ("dense", 1, k)
                if ok(m, d):
                    print(f"    {impl} ep{ep} top-{k}: tok/s {rate(m) / results[m]['ranks'] / rate(d):.2f}, "
                          f"cpu {results[d]['cpu'] / results[m]['cpu']:.2f}, "
                          f"step {rate(m, 'step') / results[m]['ranks'] / rate(d, 'step'):.2f}")
    if 1 in eps and 2 in eps:
        print("  ep_size 2 (2 ranks) / ep_size 1 (1 rank): all-rank tok/s, step tok/s, per-rank peak:")
        for impl in impls:
            for k in ks:
                a, b = (impl, 2, k), (impl, 1, k)
                if ok(a, b):
                    print(f"    {impl} top-{k}: tok/s {rate(a) / rate(b):.2f}, step "
                          f"{rate(a, 'step') / rate(b, 'step'):.2f}, peak "
                          f"{results[a]['layer_hwm'] / results[b]['layer_hwm']:.2f}")

    print(f"\nagreement (max |difference|; inputs of {args.cmp_tokens} tokens; 'out max' = largest |output|):")
    print("| pair | k | options | out | out max | l_aux | x grad | gate grad | exp_counts equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    pairs = [(("accelops", ep), ("deepspeed", ep)) for ep in eps if "deepspeed" in impls]
    if 1 in eps and 2 in eps:
        pairs += [((impl, 2), (impl, 1)) for impl in impls]
    for a, b in pairs:
        for k in ks:
            for name in CMP_OPTIONS:
                c = compare(cmp_dir, a, b, k, name)
                if c is None:
                    continue
                d, same = c
                print(f"| {a[0]} ep{a[1]} vs {b[0]} ep{b[1]} | {k} | {name} | {d['out']:.2e} | {d['out_scale']:.2e} "
                      f"| {d['l_aux']:.2e} | {d['x_grad']:.2e} | {d['wg_grad']:.2e} | {same} |")
    for key, r in results.items():
        if r.get("cmp") not in (None, "own"):
            print(f"  {label(*key)}: comparison weights from {r['cmp']}")


if __name__ == "__main__":
    main()
