"""accelops' messages reach the user the same way whichever layer logs first: the engine's ``steps_per_print``
lines show on stderr in a process that never imported an op builder, and a user's own configuration of the
"accelops" logger is kept."""
import subprocess
import sys

from helpers import launch_free_environ

TRAIN = """
import sys
import torch
import accelops
{before}
net = torch.nn.Linear(4, 2)
config = {{"train_micro_batch_size_per_gpu": 2, "steps_per_print": 1, "optimizer": {{"type": "SGD", "params": {{"lr": 0.1}}}}}}
engine, *_ = accelops.initialize(model=net, config=config)
for _ in range(2):
    loss = engine(torch.randn(2, 4)).sum()
    engine.backward(loss)
    engine.step()
print(sorted(m for m in sys.modules if m.startswith(("accelops.op_builder", "op_builder"))))
"""


def _train(before=""):
    env = launch_free_environ(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", TRAIN.format(before=before)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_step_lines_show_without_any_op_builder_imported():
    done = _train()
    assert done.stdout.strip() == "[]"  # no op builder module was imported
    steps = [line for line in done.stderr.splitlines() if line.startswith("step=")]
    assert [line.split(",")[0] for line in steps] == ["step=1", "step=2"], done.stderr


def test_a_users_own_configuration_of_the_logger_is_kept():
    mine = ("import logging\n"
            "handler = logging.StreamHandler(sys.stdout)\n"
            "handler.setFormatter(logging.Formatter('MINE %(name)s: %(message)s'))\n"
            "logging.getLogger('accelops').addHandler(handler)\n")
    done = _train(mine)
    assert "step=" not in done.stderr  # no second, default handler
    lines = [line for line in done.stdout.splitlines() if line.startswith("MINE") and "step=" in line]
    assert [line.split(",")[0] for line in lines] == ["MINE accelops.runtime.engine: step=1",
                                                      "MINE accelops.runtime.engine: step=2"], done.stdout
    quiet = _train("import logging\nlogging.getLogger('accelops').setLevel(logging.WARNING)\n")
    assert "step=" not in quiet.stderr and "step=" not in quiet.stdout
