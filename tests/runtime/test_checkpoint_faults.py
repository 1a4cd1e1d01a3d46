"""Faults injected where they hurt a checkpoint: a kill after each file-system call of a save's commit (the
previous or the new checkpoint loads through ``latest``, bit-exact, and converts with ``to-torch``); damaged,
truncated and missing files, a damaged ``latest`` (a CheckpointError naming the file from ``load_checkpoint``
on every rank, one line and exit code 2 from the CLI); leftovers of killed saves removed by the next save."""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import accelops
from accelops.checkpoint import CheckpointError, CheckpointNotFoundError, to_torch_state_dict
from engine_workers import HERE, make_model, run_ranks
from helpers import launch_free_environ

in_process = pytest.mark.usefixtures("world_of_one")


def worker(save_dir, out_dir, second_tag, kill_after):
    os.makedirs(out_dir, exist_ok=True)
    env = launch_free_environ(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=HERE)
    return subprocess.run([sys.executable, os.path.join(HERE, "checkpoint_kill_worker.py"), str(save_dir),
                           str(out_dir), second_tag, str(kill_after)], env=env, capture_output=True, text=True,
                          timeout=180)


def fresh_engine(seed=5):
    config = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}}}
    engine, *_ = accelops.initialize(model=make_model(seed=seed), config=config)
    return engine


def same(state, engine):
    """Whether the engine's weights and Adam state equal ``state`` bit for bit."""
    model = engine.module_state_dict()
    optim = engine.optimizer.state_dict()["state"]
    return (model.keys() == state["model"].keys() and all(torch.equal(model[k], v) for k, v in state["model"].items())
            and optim.keys() == state["optim"].keys()
            and all(torch.equal(optim[i][k], v) for i, s in state["optim"].items() for k, v in s.items()))


@in_process
@pytest.mark.parametrize("second_tag", ["t", "u"])  # re-saving the tag `latest` names, and saving a new tag
def test_a_kill_after_any_call_of_the_commit_leaves_a_checkpoint_latest_loads(tmp_path, second_tag):
    counted = worker(tmp_path / "count", tmp_path, second_tag, -1)
    assert counted.returncode == 0, counted.stderr[-3000:]
    calls = int(counted.stdout.split()[-1])
    assert calls >= 6, calls  # renames, fsyncs, the checksum and latest files at least
    a, b = torch.load(tmp_path / "A.pt"), torch.load(tmp_path / "B.pt")
    points = range(1, calls + 1)
    with ThreadPoolExecutor(2) as pool:  # the workers' start-up dominates: two at a time
        runs = list(pool.map(lambda k: worker(tmp_path / f"kill{k}", tmp_path / f"out{k}", second_tag, k), points))
    seen = []
    for kill_after, done in zip(points, runs):
        save_dir = tmp_path / f"kill{kill_after}"
        assert done.returncode == 9, done.stderr[-3000:]
        engine = fresh_engine()
        path, _ = engine.load_checkpoint(save_dir)
        assert path is not None, kill_after
        which = "A" if same(a, engine) else "B" if same(b, engine) else None
        assert which, f"killed after call {kill_after}: the loaded state is neither the previous nor the new one"
        converted = to_torch_state_dict(save_dir)
        expected = (a if which == "A" else b)["model"]
        assert converted.keys() == expected.keys() and all(torch.equal(converted[k], expected[k]) for k in expected)
        seen.append(which)
        engine.save_checkpoint(save_dir, tag="after")  # the next save tidies up and commits
        left = set(os.listdir(save_dir))
        assert {"t", "after", "latest"} <= left <= {"t", second_tag, "after", "latest"}, (kill_after, left)
        if second_tag != "t" and second_tag in left:  # committed, or complete when killed and put in place by the next save
            engine.load_checkpoint(save_dir, tag=second_tag)
            assert same(b, engine), kill_after
    # once the new checkpoint is what latest loads, no later kill brings the old one back
    assert seen == sorted(seen) and seen[-1] == "B", seen


# ---------------------------------------------------------------------------------------------- damage
@pytest.fixture
def saved(tmp_path, world_of_one):
    engine = fresh_engine(seed=0)
    for seed in range(2):
        loss = engine(torch.randn(2, 6, generator=torch.Generator().manual_seed(seed))).pow(2).mean()
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(tmp_path / "ckpt")
    return tmp_path / "ckpt", tmp_path / "ckpt" / "global_step2"


def shard(folder):
    return folder / next(n for n in sorted(os.listdir(folder)) if n.endswith(".distcp"))


def flip_bytes(path, count=16):
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


DAMAGE = {  # name: (damage the save dir, the path the error names, the words it says)
    "flipped shard bytes": (lambda root, tag: flip_bytes(shard(tag)), lambda root, tag: shard(tag), "is damaged: bytes"),
    "truncated shard": (lambda root, tag: truncate(shard(tag)), lambda root, tag: shard(tag), "is truncated"),
    "garbage .metadata": (lambda root, tag: (tag / ".metadata").write_bytes(os.urandom(os.path.getsize(
        tag / ".metadata"))), lambda root, tag: tag / ".metadata", "is damaged: bytes"),
    "missing engine_state.pt": (lambda root, tag: os.remove(tag / "engine_state.pt"),
                                lambda root, tag: tag / "engine_state.pt", "is missing"),
    "garbage checksums.json": (lambda root, tag: (tag / "checksums.json").write_text("{not json"),
                               lambda root, tag: tag / "checksums.json", "is damaged"),
    "latest not UTF-8": (lambda root, tag: (root / "latest").write_bytes(b"\xff\xfe\x00garbage"),
                         lambda root, tag: root / "latest", "is not UTF-8"),
    "latest garbage": (lambda root, tag: (root / "latest").write_text("../../etc"),
                       lambda root, tag: root / "latest", "does not hold a checkpoint tag"),
    "latest empty": (lambda root, tag: (root / "latest").write_text(""), lambda root, tag: root / "latest", "is empty"),
    "latest names a missing tag": (lambda root, tag: shutil.rmtree(tag), lambda root, tag: tag, "does not exist"),
    "latest names an empty folder": (lambda root, tag: (shutil.rmtree(tag), tag.mkdir()),
                                     lambda root, tag: tag, "is not a complete checkpoint"),
}


@pytest.mark.parametrize("fault", sorted(DAMAGE))
def test_damage_is_an_error_naming_the_file(saved, fault):
    root, tag = saved
    damage, named, words = DAMAGE[fault]
    damage(root, tag)
    engine = fresh_engine()
    before = {k: v.clone() for k, v in engine.module_state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        engine.load_checkpoint(root)
    assert str(caught.value).startswith(f"{named(root, tag)}: ") and words in str(caught.value), str(caught.value)
    assert engine.global_steps == 0 and all(torch.equal(v, before[k]) for k, v in engine.module_state_dict().items())
    done = subprocess.run([sys.executable, "-m", "accelops.checkpoint", "to-torch", str(root), str(root / "out.pt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{named(root, tag)}: " in done.stderr, done.stderr
    assert not (root / "out.pt").exists()


def test_the_verify_command(saved):
    root, tag = saved

    def verify(*args):
        return subprocess.run([sys.executable, "-m", "accelops.checkpoint", "verify", *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    done = verify(root)
    assert done.returncode == 0 and done.stdout == f"intact: every file of {tag} matches its checksum\n", done
    flip_bytes(shard(tag))
    done = verify(tag)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and not done.stdout, done
    assert f"verify: error: {shard(tag)}: is damaged: bytes 0.." in done.stderr, done.stderr


def test_a_damaged_shard_fails_every_rank_alike(saved):
    root, tag = saved
    flip_bytes(shard(tag))
    outputs = run_ranks(2, [{"kind": "checkpoint", "name": "load", "stage": 1, "steps": 1, "load": str(root)}],
                        check=False, timeout_s=120)
    for code, _, err in outputs:
        assert code not in (0, None), err[-2000:]
        assert f"CheckpointError: {shard(tag)}: is damaged: bytes" in err, err[-2000:]


def test_checkpoints_saved_before_checksums_load_with_a_warning(saved, caplog):
    root, tag = saved
    state = torch.load(tag / "engine_state.pt", weights_only=False)
    torch.save(dict(state, format="accelops-engine-checkpoint/1"), tag / "engine_state.pt")
    os.remove(tag / "checksums.json")
    with caplog.at_level("WARNING", logger="accelops.runtime.checkpoint"):
        assert fresh_engine().load_checkpoint(root)[0] == str(tag)
    assert "saved before accelops recorded checksums" in caplog.text
    torch.save(state, tag / "engine_state.pt")  # the current format always has checksums.json
    with pytest.raises(CheckpointError, match="checksums.json: is missing"):
        fresh_engine().load_checkpoint(root)


# ---------------------------------------------------------------------------------------------- never silently
def test_none_only_when_there_is_no_checkpoint_at_all(saved, tmp_path):
    root, tag = saved
    engine = fresh_engine()
    assert engine.load_checkpoint(tmp_path / "empty") == (None, None)
    (tmp_path / "other" / "logs").mkdir(parents=True)  # a folder beside checkpoints is not one
    assert engine.load_checkpoint(tmp_path / "other") == (None, None)
    (tmp_path / "partial_only" / ".global_step4.partial").mkdir(parents=True)  # a first save that was killed
    assert engine.load_checkpoint(tmp_path / "partial_only") == (None, None)
    with pytest.raises(CheckpointNotFoundError, match="global_step9: does not exist"):
        engine.load_checkpoint(root, tag="global_step9")
    os.remove(root / "latest")
    with pytest.raises(CheckpointNotFoundError, match=r"latest: does not exist, but the folder holds the checkpoints "
                                                      r"\['global_step2'\]: pass tag="):
        engine.load_checkpoint(root)
    assert engine.load_checkpoint(root, tag="global_step2")[0] == str(tag)


def test_the_next_save_of_any_tag_removes_leftovers_and_finishes_a_commit(saved, caplog):
    root, tag = saved
    (root / ".global_step7.partial").mkdir()  # a save of another tag killed while writing
    (root / ".global_step7.partial" / "__0_0.distcp").write_bytes(b"half")
    os.rename(tag, root / ".global_step2.old")  # a re-save of global_step2 killed between its renames
    engine = fresh_engine()
    assert engine.load_checkpoint(root)[0] == str(root / ".global_step2.old")  # read where it is
    with caplog.at_level("WARNING", logger="accelops.runtime.checkpoint"):
        engine.save_checkpoint(root, tag="other", save_latest=False)
    assert sorted(os.listdir(root)) == ["global_step2", "latest", "other"]
    assert "restored from .global_step2.old" in caplog.text and ".global_step7.partial: removed" in caplog.text
    assert fresh_engine().load_checkpoint(root)[0] == str(tag)
