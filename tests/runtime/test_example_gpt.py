"""``examples/gpt/train.py`` with its ``ds_config.json`` (bf16, ZeRO stage 2, WarmupLR, clipping) runs under
torchrun on 2 CPU ranks: it exits 0, the printed loss falls, and with ``--save_dir`` the checkpoint saved at
the end loads back (the script checks the round trip itself and prints the result)."""
import os
import re
import signal
import subprocess
import sys

from helpers import free_port, launch_free_environ

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "gpt")
STEP_LINE = re.compile(r"^step\s+(\d+)/(\d+) \| loss ([0-9.]+) \| lr ([0-9.e+-]+) \| ([0-9.]+) steps/s$")
TIMEOUT_S = 180


def run_example(tmp_path, steps, *extra):
    env = launch_free_environ(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           os.path.join(EXAMPLE, "train.py"), "--deepspeed_config", os.path.join(EXAMPLE, "ds_config.json"),
           "--steps", str(steps), *extra]
    proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"examples/gpt/train.py did not finish within {TIMEOUT_S} s") from None
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-4000:]}"
    return out


def test_gpt_example_trains_and_its_checkpoint_round_trips(tmp_path):
    save_dir = tmp_path / "ckpt"
    out = run_example(tmp_path, 12, "--print_every", "4", "--save_dir", str(save_dir))
    lines = out.splitlines()
    steps = [STEP_LINE.match(line) for line in lines]
    steps = [match for match in steps if match]
    assert [int(m.group(1)) for m in steps] == [1, 4, 8, 12], out  # printed once, by rank 0
    losses = [float(m.group(3)) for m in steps]
    assert losses[-1] < losses[0], f"the loss did not fall: {losses}"
    header = [line for line in lines if line.startswith("world size ")]
    assert len(header) == 1 and "world size 2 | ZeRO stage 2 | bf16 | optimizer CPUAdam" in header[0], out
    assert "batch 32 = 8 x 2 accum x 2 ranks" in header[0], out
    done = [line for line in lines if line.startswith("checkpoint: ")]
    assert len(done) == 1 and done[0].endswith("round trip OK"), out
    assert "client_state step 12, global_steps 12" in done[0], out
    assert (save_dir / "latest").read_text().strip() == "global_step12"
    assert (save_dir / "global_step12").is_dir()
