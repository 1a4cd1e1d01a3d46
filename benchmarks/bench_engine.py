"""accelops' training engine against the same loop written by hand, side by side in one run (CPU, gloo).

Cases (each is a fresh group of ``--ranks`` processes, 2 by default, started with torch.multiprocessing; the
model is the GPT of ``examples/gpt/model.py``, fp32, the same initial weights and batches everywhere,
``gradient_clipping`` 1.0 everywhere, lr 1e-3, no weight decay):

(a) ``engine z0``: ``accelops.initialize`` at ZeRO stage 0 (DDP; "Adam" in the config -> ``accelops.ops.CPUAdam``)
    vs ``DDP + CPUAdam``: ``DistributedDataParallel`` + ``accelops.ops.CPUAdam`` +
    ``clip_grad_norm_`` written by hand, so only the engine's own overhead differs;
    ``DDP(find_unused) + CPUAdam``: the same with ``find_unused_parameters=True``, which the engine sets (as
    DeepSpeed tolerates unused parameters); ``DDP + AdamW``: ``torch.optim.AdamW`` (for reference).
(b) ``engine z3``: ZeRO stage 3 (FSDP2 ``fully_shard``, one unit per Block + the root, ``CPUAdam`` on the local
    shards) vs ``FSDP2 + CPUAdam``: ``fully_shard`` per block + root by hand, ``CPUAdam`` on each rank's local
    shards; ``FSDP2 + AdamW``: ``torch.optim.AdamW`` on the DTensor parameters (for reference).
(c) ``deepspeed z0`` / ``deepspeed z3``: DeepSpeed's engine with ``DS_ACCELERATOR=cpu`` and the same config,
    when ``import deepspeed`` works in a fresh process (else skipped, with the reason printed).
(d) offload step, one process: ``accelops.ops.CPUAdam.step()`` vs ``torch.optim.AdamW(foreach=True).step()``
    on fp32 CPU master weights of ~50M parameters (GPT-like tensor shapes), time per step (median; the three
    optimizers step in turn, each on its own copy of the same weights and gradients);
    ``torch.optim.AdamW(fused=True)`` for reference. Once with 1 thread and once with every core
    (``torch.set_num_threads``, which sets OpenMP's count for CPUAdam's kernel too): with other processes on
    the machine, many short parallel regions (torch's per-tensor ops) lose much more than one long one, so
    the 1-thread numbers are the ones that compare well on a shared machine.

Each rank times ``--steps`` training steps after ``--warmup`` steps between two barriers: steps/s (the slowest
rank's), the median wall time of one step (the slowest rank's median) and the CPU time of the process per
step (``time.process_time``, mean over ranks). On a shared machine the CPU time per step is the steadiest of
the three: other processes stretch the wall time but not the work a rank does. Cases are repeated
``--repeats`` times, interleaved (a1 a2 ... a1 a2 ...), and the median of each number is reported, plus the
best (lowest) median step time over the repeats, which the wall-clock comparison uses: on a shared machine a
repeat that lost a core to another process runs about 2x slower, and the best repeat is the one that did not.
Memory: per rank, the peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process's
high-water mark) and that peak minus the resident set after ``import torch``/accelops (before
the model), the largest over ranks and repeats. The loss after the last step is printed as a sanity check:
the engine and the hand loop with the same optimizer compute the same thing.

Target: engine overhead at most 3% (engine step time, wall and CPU, <= 1.03 x the hand loop with the same
optimizer, at stage 0 and at stage 3). Timings only; nothing is asserted.

    python benchmarks/bench_engine.py            # full: d_model 256, 4 layers, seq 128, 3 repeats
    python benchmarks/bench_engine.py --quick    # smoke run: small model, few steps, 1 repeat
    PYTHONPATH=/path/with/deepspeed python benchmarks/bench_engine.py   # also DeepSpeed's engine
"""
import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "gpt"))

GROUPS = {
    "a": ["engine z0", "DDP + CPUAdam", "DDP(find_unused) + CPUAdam", "DDP + AdamW", "deepspeed z0"],
    "b": ["engine z3", "FSDP2 + CPUAdam", "FSDP2 + AdamW", "deepspeed z3"],
}
BASELINE = {"engine z0": "DDP + CPUAdam", "engine z3": "FSDP2 + CPUAdam"}
LR, CLIP = 1e-3, 1.0


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ds_config(stage: int, micro: int) -> dict:
    return {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": 1,
            "optimizer": {"type": "Adam", "params": {"lr": LR, "weight_decay": 0.0}},
            "gradient_clipping": CLIP, "zero_optimization": {"stage": stage}}


# ---------------------------------------------------------------------------------------------- one rank
def worker(rank: int, world: int, port: int, case: str, opts: dict, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from model import GPT, GPTConfig

    start_rss = rss_mib()
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=opts["vocab"], seq_len=opts["seq"], d_model=opts["d_model"], n_layer=opts["layers"],
                    n_head=opts["heads"])
    model = GPT(cfg)
    gen = torch.Generator().manual_seed(1000 + rank)
    batches = [torch.randint(0, cfg.vocab_size, (opts["micro"], cfg.seq_len + 1), generator=gen) for _ in range(4)]
    batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in batches]

    if case.startswith("engine") or case.startswith("deepspeed"):
        if case.startswith("engine"):
            import accelops as deepspeed
        else:
            import deepspeed
        stage = 0 if case.endswith("z0") else 3
        engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                       config=ds_config(stage, opts["micro"]))
        opt_name = type(optimizer).__name__
        if hasattr(optimizer, "optimizer"):  # DeepSpeed wraps its optimizer at ZeRO stages
            opt_name += f"({type(optimizer.optimizer).__name__})"

        def step(x, y):
            loss = engine(x, y)
            engine.backward(loss)
            engine.step()
            return loss
    else:
        from accelops.ops import CPUAdam

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=rank, world_size=world)
        params_to_clip = None
        if case.startswith("DDP"):
            from torch.nn.parallel import DistributedDataParallel

            runner = DistributedDataParallel(model, find_unused_parameters="find_unused" in case)
            params = list(model.parameters())
            pairs = []
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (world,))
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            runner = model
            if case.endswith("CPUAdam"):  # the kernel steps plain tensors: each rank's local shards
                with torch.no_grad():
                    pairs = [(p, p.to_local().detach()) for p in model.parameters()]
                params = [local for _, local in pairs]
            else:
                params, pairs = list(model.parameters()), []
        params_to_clip = list(model.parameters())
        if case.endswith("CPUAdam"):
            optimizer = CPUAdam(params, lr=LR, weight_decay=0.0, adamw_mode=True)
        else:
            optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
        opt_name = type(optimizer).__name__

        def step(x, y):
            loss = runner(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params_to_clip, CLIP)
            for sharded, local in pairs:
                local.grad = None if sharded.grad is None else sharded.grad.to_local()
            optimizer.step()
            for p in params_to_clip:
                p.grad = None
            for _, local in pairs:
                local.grad = None
            return loss

    for i in range(opts["warmup"]):
        step(*batches[i % len(batches)])
    dist.barrier()
    step_times = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(opts["steps"]):
        t1 = time.perf_counter()
        loss = step(*batches[i % len(batches)])
        step_times.append(time.perf_counter() - t1)
    cpu = time.process_time() - cpu0
    dist.barrier()
    elapsed = time.perf_counter() - t0
    result = {"rank": rank, "elapsed": elapsed, "loss": float(loss.item()), "start_rss": start_rss,
              "step_ms": statistics.median(step_times) * 1e3, "cpu_ms": cpu / opts["steps"] * 1e3,
              "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "optimizer": opt_name}
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as handle:
        json.dump(result, handle)
    dist.barrier()
    del step
    import gc

    gc.collect()
    dist.destroy_process_group()


def run_case(case: str, opts: dict, world: int, timeout: float) -> dict:
    """Start ``world`` fresh processes for ``case``; their results, or {"error": ...}."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="bench_engine_") as out_dir:
        ctx = mp.get_context("spawn")
        port = free_port()
        procs = [ctx.Process(target=worker, args=(rank, world, port, case, opts, out_dir)) for rank in range(world)]
        for proc in procs:
            proc.start()
        deadline = time.time() + timeout
        for proc in procs:
            proc.join(max(1.0, deadline - time.time()))
        failed = [p for p in procs if p.exitcode != 0]
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        ranks = []
        for rank in range(world):
            path = os.path.join(out_dir, f"{rank}.json")
            if os.path.exists(path):
                with open(path) as handle:
                    ranks.append(json.load(handle))
        if len(ranks) != world:
            codes = [p.exitcode for p in procs]
            return {"error": f"ranks exited with {codes}" + (" (timeout)" if None in codes else "")}
        if failed:  # results written, failure in teardown: keep the numbers, note it
            ranks[0]["teardown"] = [p.exitcode for p in procs]
    return {"steps_per_s": opts["steps"] / max(r["elapsed"] for r in ranks),
            "step_ms": max(r["step_ms"] for r in ranks), "cpu_ms": statistics.mean(r["cpu_ms"] for r in ranks),
            "peak_rss": max(r["peak_rss"] for r in ranks),
            "peak_minus_start": max(r["peak_rss"] - r["start_rss"] for r in ranks),
            "loss": ranks[0]["loss"], "optimizer": ranks[0]["optimizer"]}


def deepspeed_available() -> str:
    """'' when ``import deepspeed`` works in a fresh process with DS_ACCELERATOR=cpu, else the reason."""
    try:
        proc = subprocess.run([sys.executable, "-c", "import deepspeed; print(deepspeed.__version__)"],
                              capture_output=True, text=True, timeout=180, env=os.environ)
    except subprocess.TimeoutExpired:
        return "import deepspeed took more than 180 s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"import deepspeed failed: {last}"
    return ""


def deepspeed_version() -> str:
    proc = subprocess.run([sys.executable, "-c", "import deepspeed; print(deepspeed.__version__)"],
                          capture_output=True, text=True, timeout=180)
    return proc.stdout.strip()


# ---------------------------------------------------------------------------------------------- (d)
def offload_step(n_params_target: int, steps: int, warmup: int, threads: int) -> dict:
    """CPUAdam vs torch AdamW(foreach=True) step on fp32 master weights with GPT-like shapes."""
    import torch

    from accelops.ops import CPUAdam

    torch.set_num_threads(threads)

    width = 512
    per_layer = [(3 * width, width), (3 * width,), (width, width), (width,), (4 * width, width), (4 * width,),
                 (width, 4 * width), (width,), (width,), (width,), (width,), (width,)]
    per_layer_n = sum(torch.Size(s).numel() for s in per_layer)
    layers = max(1, round(n_params_target / per_layer_n))
    shapes = per_layer * layers
    gen = torch.Generator().manual_seed(0)

    a_params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in a_params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    b_params = [torch.nn.Parameter(p.detach().clone()) for p in a_params]  # the same start, its own copy
    for a, b in zip(a_params, b_params):
        b.grad = a.grad.clone()
    ours = CPUAdam(a_params, lr=LR, weight_decay=0.01, adamw_mode=True)
    theirs = torch.optim.AdamW(b_params, lr=LR, weight_decay=0.01, foreach=True)
    c_params = [torch.nn.Parameter(p.detach().clone()) for p in a_params]
    for a, c in zip(a_params, c_params):
        c.grad = a.grad.clone()
    fused = torch.optim.AdamW(c_params, lr=LR, weight_decay=0.01, fused=True)
    times = {"CPUAdam": [], "AdamW(foreach)": [], "AdamW(fused)": []}
    for i in range(warmup + steps):
        for name, opt in (("CPUAdam", ours), ("AdamW(foreach)", theirs), ("AdamW(fused)", fused)):
            t0 = time.perf_counter()
            opt.step()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
    diff = max((a - b).abs().max().item() for a, b in zip(a_params, b_params))  # CPUAdam vs AdamW(foreach)
    n = sum(p.numel() for p in a_params)
    return {"params": n, "tensors": len(shapes), "threads": torch.get_num_threads(),
            "backend": getattr(ours, "backend", "?"), "max_abs_diff": diff,
            **{name: statistics.median(v) * 1e3 for name, v in times.items()}}


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small model, few steps, 1 repeat")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default="abcd", help="which parts to run, e.g. 'ab' or 'd'")
    parser.add_argument("--no_deepspeed", action="store_true", help="skip DeepSpeed's engine")
    parser.add_argument("--offload_params", type=float, default=None, help="(d): parameters, e.g. 50e6")
    args = parser.parse_args(argv)

    os.environ["DS_ACCELERATOR"] = "cpu"
    os.environ["OMP_NUM_THREADS"] = "1"  # per rank; (d) sets its own thread count below
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # DDP's find_unused_parameters warning, per rank
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # torch's deprecations in DeepSpeed's ranks
    if args.quick:
        opts = dict(vocab=256, seq=64, d_model=128, layers=2, heads=4, micro=4, steps=5, warmup=2)
        repeats, offload_n, offload_steps = 1, 10e6, 5
    else:
        opts = dict(vocab=1024, seq=128, d_model=256, layers=4, heads=4, micro=8, steps=20, warmup=3)
        repeats, offload_n, offload_steps = 3, 50e6, 20
    opts["steps"] = args.steps or opts["steps"]
    opts["warmup"] = args.warmup if args.warmup is not None else opts["warmup"]
    repeats = args.repeats or repeats
    offload_n = args.offload_params or offload_n

    import torch

    print(f"# bench_engine{' --quick' if args.quick else ''}: {time.strftime('%Y-%m-%d %H:%M')}, CPU: {cpu_model()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"model: GPT vocab {opts['vocab']}, seq {opts['seq']}, d_model {opts['d_model']}, {opts['layers']} layers, "
          f"micro batch {opts['micro']} per rank, fp32; {args.ranks} ranks (gloo, 1 thread each); "
          f"{opts['warmup']} warm-up + {opts['steps']} timed steps, median of {repeats} interleaved repeat(s)")

    cases = [c for part in "ab" if part in args.only for c in GROUPS[part]]
    skip_reason = "--no_deepspeed" if args.no_deepspeed else deepspeed_available()
    if skip_reason:
        print(f"(c) DeepSpeed's engine skipped: {skip_reason}")
        cases = [c for c in cases if not c.startswith("deepspeed")]
    elif any(c.startswith("deepspeed") for c in cases):
        print(f"(c) DeepSpeed {deepspeed_version()} with DS_ACCELERATOR=cpu")

    runs = {case: [] for case in cases}
    for rep in range(repeats):
        for case in cases:
            timeout = 900 if case.startswith("deepspeed") else 300  # DeepSpeed may JIT-build its op first
            result = run_case(case, opts, args.ranks, timeout)
            runs[case].append(result)
            shown = (f"{result['steps_per_s']:.3f} steps/s, median step {result['step_ms']:.1f} ms, "
                     f"CPU {result['cpu_ms']:.1f} ms/step/rank, peak {result['peak_rss']:.0f} MiB"
                     if "error" not in result else result["error"])
            print(f"  repeat {rep + 1}/{repeats} {case:16s} {shown}", flush=True)

    if cases:
        summary = {}
        for case, results in runs.items():
            good = [r for r in results if "error" not in r]
            if not good:
                summary[case] = {"error": results[-1]["error"]}
                continue
            summary[case] = {"steps_per_s": statistics.median(r["steps_per_s"] for r in good),
                             "step_ms": statistics.median(r["step_ms"] for r in good),
                             "best_step_ms": min(r["step_ms"] for r in good),
                             "cpu_ms": statistics.median(r["cpu_ms"] for r in good),
                             "peak_rss": max(r["peak_rss"] for r in good),
                             "peak_minus_start": max(r["peak_minus_start"] for r in good),
                             "loss": good[-1]["loss"], "optimizer": good[-1]["optimizer"], "n": len(good)}
        print()
        print("| case | optimizer | steps/s | median step ms | best step ms | CPU ms/step/rank | best step vs hand "
              "loop | CPU time vs hand loop | peak RSS/rank MiB | peak - start MiB | loss after last step |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for case in cases:
            s = summary[case]
            if "error" in s:
                print(f"| {case} | failed: {s['error']} | | | | | | | | | |")
                continue
            group = "engine z0" if case in GROUPS["a"] else "engine z3"
            base = summary.get(BASELINE[group], {})
            step_ratio = cpu_ratio = "(baseline)" if case == BASELINE[group] else ""
            if case != BASELINE[group] and "step_ms" in base:
                step_ratio = f"{(s['best_step_ms'] / base['best_step_ms'] - 1) * 100:+.1f}%"
                cpu_ratio = f"{(s['cpu_ms'] / base['cpu_ms'] - 1) * 100:+.1f}%"
            print(f"| {case} | {s['optimizer']} | {s['steps_per_s']:.2f} | {s['step_ms']:.1f} | "
                  f"{s['best_step_ms']:.1f} | {s['cpu_ms']:.1f} | {step_ratio} | {cpu_ratio} | {s['peak_rss']:.0f} | "
                  f"{s['peak_minus_start']:.0f} | {s['loss']:.5f} |")
        print()
        for engine_case, base_case in BASELINE.items():
            e, b = summary.get(engine_case, {}), summary.get(base_case, {})
            if "step_ms" in e and "step_ms" in b:
                by_step = (e["best_step_ms"] / b["best_step_ms"] - 1) * 100
                by_cpu = (e["cpu_ms"] / b["cpu_ms"] - 1) * 100
                verdict = lambda x: "met" if x <= 3 else "NOT met"  # noqa: E731
                print(f"{engine_case} vs {base_case}: engine overhead {by_cpu:+.1f}% CPU time per step (target <= 3%: "
                      f"{verdict(by_cpu)}), {by_step:+.1f}% best median step time ({verdict(by_step)}); "
                      f"peak RSS {e['peak_rss'] - b['peak_rss']:+.0f} MiB per rank")

    for threads in sorted({1, os.cpu_count() or 1}) if "d" in args.only else ():
        d = offload_step(int(offload_n), offload_steps, 3, threads)
        print()
        print(f"(d) offload step: {d['params'] / 1e6:.1f}M fp32 params in {d['tensors']} tensors (+ grads), "
              f"{d['threads']} thread(s), CPUAdam backend {d['backend']}; median of {offload_steps} steps")
        print("| optimizer | ms/step | time / CPUAdam's |")
        print("| --- | ---: | ---: |")
        print(f"| accelops.ops.CPUAdam | {d['CPUAdam']:.2f} | x1.00 |")
        print(f"| torch.optim.AdamW(foreach=True) | {d['AdamW(foreach)']:.2f} | "
              f"x{d['AdamW(foreach)'] / d['CPUAdam']:.2f} |")
        print(f"| torch.optim.AdamW(fused=True) (reference) | {d['AdamW(fused)']:.2f} | "
              f"x{d['AdamW(fused)'] / d['CPUAdam']:.2f} |")
        print(f"max |CPUAdam - AdamW(foreach)| parameter difference after {offload_steps + 3} steps: "
              f"{d['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
