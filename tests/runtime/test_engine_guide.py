"""The getting-started script (``import accelops as deepspeed``) with the guide's config runs under
torchrun on 2 CPU ranks: fp16, ``"zero_optimization": true`` (stage 1), checkpoints with ``client_sd``."""
import json
import os
import signal
import subprocess
import sys

from helpers import free_port, launch_free_environ

HERE = os.path.dirname(os.path.abspath(__file__))
GUIDE_CONFIG = {"train_batch_size": 8, "gradient_accumulation_steps": 1,
                "optimizer": {"type": "Adam", "params": {"lr": 0.00015}}, "fp16": {"enabled": True},
                "zero_optimization": True}


def test_the_guide_script_runs_under_torchrun(tmp_path):
    config = tmp_path / "ds_config.json"
    config.write_text(json.dumps(GUIDE_CONFIG))
    env = launch_free_environ(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           os.path.join(HERE, "guide_script.py"), "--deepspeed", "--deepspeed_config", str(config),
           "--save_dir", str(tmp_path / "ckpt"), "--out_dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the guide script did not finish within 240 s") from None
    assert proc.returncode == 0, err[-4000:]
    lines = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in range(2)]
    assert [r["rank"] for r in lines] == [0, 1]
    for result in lines:
        assert len(result["losses"]) == 8  # 64 samples, micro batch 4 per rank, 2 ranks
        assert result["client_sd"] == {"step": 7}
        assert (result["optimizer"], result["stage"], result["fp16"], result["steps"]) == ("CPUAdam", 1, True, 8)
    assert open(tmp_path / "ckpt" / "latest").read() == "guide"
