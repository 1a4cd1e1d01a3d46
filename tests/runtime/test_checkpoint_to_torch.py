"""``accelops.checkpoint`` (DeepSpeed's zero_to_fp32.py): a checkpoint saved in one process and one saved by
2 ranks at ZeRO stage 3 convert, in this single process, to exactly the engine's full ``module_state_dict()``,
which loads into a fresh model with strict=True (a module's nested extra state included); the CLI picks
``latest`` or ``--tag`` and reports each path error with exit code 2 and one message."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

import accelops
from accelops.checkpoint import CheckpointError, CheckpointNotFoundError, convert_to_torch, to_torch_state_dict
from engine_workers import make_model, run_ranks

in_process = pytest.mark.usefixtures("world_of_one")


def assert_same_state(converted, expected):
    """Same names, same order, and every tensor equal elementwise, with the same dtype, on CPU."""
    assert list(converted) == list(expected)
    for name, tensor in expected.items():
        got = converted[name]
        assert type(got) is torch.Tensor and got.device.type == "cpu", name
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), name


def load_into_fresh_model(state):
    model = make_model(seed=7)  # another initialisation: every weight must come from ``state``
    model.load_state_dict(state, strict=True)
    assert_same_state(model.state_dict(), state)


# ---------------------------------------------------------------------------------------------- one process
def train_and_save(save_dir, stage):
    config = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
              "zero_optimization": {"stage": stage}}
    engine, *_ = accelops.initialize(model=make_model(), config=config)
    for step in range(3):
        loss = engine(torch.randn(2, 6, generator=torch.Generator().manual_seed(step))).pow(2).mean()
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(save_dir)
    return engine


@in_process
@pytest.mark.parametrize("stage", [0, 3])
def test_one_process_checkpoint_converts_to_the_module_state_dict(tmp_path, stage):
    engine = train_and_save(tmp_path / "ckpt", stage)
    expected = {k: v.detach().clone() for k, v in engine.module_state_dict().items()}
    assert not torch.equal(expected["inp.weight"], make_model().inp.weight.detach())  # training changed it
    written = convert_to_torch(tmp_path / "ckpt", tmp_path / "model.pt")
    assert_same_state(written, expected)
    reloaded = torch.load(tmp_path / "model.pt")  # weights_only: plain tensors only
    assert_same_state(reloaded, expected)
    load_into_fresh_model(reloaded)
    # the tag folder itself, and the save dir with its tag, give the same
    assert_same_state(to_torch_state_dict(tmp_path / "ckpt" / "global_step3"), expected)
    assert_same_state(to_torch_state_dict(tmp_path / "ckpt", tag="global_step3"), expected)


class WithExtraState(torch.nn.Module):
    """make_model() plus extra state of nested containers, which DCP flattens when it saves."""

    def __init__(self, note="saved"):
        super().__init__()
        self.net, self.note, self.got = make_model(), note, None

    def forward(self, x):
        return self.net(x)

    def get_extra_state(self):
        return {"note": self.note, "scales": [torch.full((2,), 0.5), 3]}

    def set_extra_state(self, state):
        self.got = state


@in_process
def test_extra_state_comes_back_nested(tmp_path):
    engine, *_ = accelops.initialize(model=WithExtraState(), config={"train_batch_size": 2, "optimizer": {
        "type": "SGD", "params": {"lr": 0.1}}})
    engine.save_checkpoint(tmp_path)
    state = convert_to_torch(tmp_path, tmp_path / "model.pt")
    assert list(state)[0] == "_extra_state"
    fresh = WithExtraState(note="fresh")
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"), strict=True)
    assert fresh.got["note"] == "saved" and fresh.got["scales"][1] == 3
    assert torch.equal(fresh.got["scales"][0], torch.full((2,), 0.5))
    expected = engine.module_state_dict()
    assert_same_state({k: v for k, v in state.items() if k != "_extra_state"},
                      {k: v for k, v in expected.items() if k != "_extra_state"})


# ---------------------------------------------------------------------------------------------- two ranks
@pytest.fixture(scope="module")
def two_rank_checkpoints(tmp_path_factory):
    """2 ranks at ZeRO stage 3 save global_step2 (from one run) and then global_step3 (``latest``, from a
    second run in the same processes); rank 0 writes each one's full module_state_dict() next to it."""
    root = tmp_path_factory.mktemp("two_ranks")
    save_dir = str(root / "ckpt")
    cases = [{"kind": "checkpoint", "name": f"s{n}", "stage": 3, "steps": n, "save_at": n, "save_dir": save_dir,
              "full_state_out": str(root / f"full{n}.pt")} for n in (2, 3)]
    run_ranks(2, cases)
    return root, {n: torch.load(root / f"full{n}.pt") for n in (2, 3)}


def test_two_rank_stage3_checkpoint_converts_to_the_full_state_dict(two_rank_checkpoints):
    root, full = two_rank_checkpoints
    assert any(not torch.equal(full[2][k], full[3][k]) for k in full[2])  # two distinct checkpoints
    assert len(os.listdir(root / "ckpt" / "global_step3")) >= 3  # .metadata and a .distcp file per rank
    converted = to_torch_state_dict(root / "ckpt")  # latest
    assert_same_state(converted, full[3])
    load_into_fresh_model(converted)
    assert_same_state(to_torch_state_dict(root / "ckpt", tag="global_step2"), full[2])


# ---------------------------------------------------------------------------------------------- CLI
def cli(*args):
    return subprocess.run([sys.executable, "-m", "accelops.checkpoint", "to-torch", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_latest_and_tag(two_rank_checkpoints, tmp_path):
    root, full = two_rank_checkpoints
    done = cli(root / "ckpt", tmp_path / "latest.pt")
    assert done.returncode == 0, done.stderr
    count = sum(t.numel() for t in full[3].values())
    assert done.stdout.strip() == f"wrote {len(full[3])} tensors ({count:,} parameters) to {tmp_path / 'latest.pt'}"
    assert_same_state(torch.load(tmp_path / "latest.pt"), full[3])
    done = cli(root / "ckpt", tmp_path / "step2.pt", "--tag", "global_step2")
    assert done.returncode == 0, done.stderr
    assert_same_state(torch.load(tmp_path / "step2.pt"), full[2])


def test_cli_errors(two_rank_checkpoints, tmp_path):
    root, _ = two_rank_checkpoints
    ckpt, out = root / "ckpt", tmp_path / "out.pt"
    (tmp_path / "empty").mkdir()
    half = tmp_path / "half"
    shutil.copytree(ckpt, half)
    os.remove(half / "global_step3" / ".metadata")  # as a save killed before DCP finished
    for args, message in [
        ((tmp_path / "nope", out), f"{tmp_path / 'nope'}: does not exist"),
        ((tmp_path / "empty", out), f"{tmp_path / 'empty'}: holds no checkpoint"),
        ((ckpt, out, "--tag", "global_step9"), f"{ckpt / 'global_step9'}: does not exist"),
        ((ckpt, tmp_path / "no_dir" / "out.pt"), "the directory of the output file"),
        ((half, out), f"{half / 'global_step3'}: is not a checkpoint folder"),
    ]:
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and not done.stdout, (args, done.stderr)
    assert not out.exists()


def test_api_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        to_torch_state_dict(tmp_path / "nope")
    (tmp_path / "latest").write_text("")
    with pytest.raises(CheckpointError, match="latest: is empty"):
        to_torch_state_dict(tmp_path)
