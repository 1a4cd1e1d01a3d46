"""save_checkpoint / load_checkpoint with torch.distributed.checkpoint: saved at 2 ranks with ZeRO stage 3,
loaded at 1 rank with stage 0 and at 4 ranks with stage 2, training continues identically; a save killed
midway leaves the previous checkpoint and ``latest``; a rank that never calls save makes the others fail
after the timeout; ``client_state``/``client_sd``; DeepSpeed's return values and the argument errors."""
import logging
import os

import pytest
import torch

import accelops
from engine_workers import make_model, run_ranks

STEPS_BEFORE, STEPS_AFTER = 3, 3


def rel_close(a, b, tol=1e-5):
    return all(abs(x - y) <= tol * abs(y) for x, y in zip(a, b)) and len(a) == len(b)


def test_resume_at_other_world_sizes_and_stages(tmp_path):
    save_dir = str(tmp_path / "ckpt")
    first = run_ranks(2, [{"kind": "checkpoint", "name": "save", "stage": 3, "steps": STEPS_BEFORE + STEPS_AFTER,
                           "save_at": STEPS_BEFORE, "save_dir": save_dir}])
    continued = first[0]["save"]["losses"][STEPS_BEFORE:]
    assert first[1]["save"]["losses"][STEPS_BEFORE:] == continued
    assert sorted(os.listdir(save_dir)) == ["global_step3", "latest"]
    assert open(os.path.join(save_dir, "latest")).read() == "global_step3"
    for world, stage in ((1, 0), (4, 2)):
        # a different initialisation: everything must come from the checkpoint
        resumed = run_ranks(world, [{"kind": "checkpoint", "name": "load", "stage": stage, "steps": STEPS_AFTER,
                                     "load": save_dir, "seed": 5}])
        for res in resumed:
            res = res["load"]
            assert res["loaded"] == [os.path.join(save_dir, "global_step3"), {"step": 3, "note": "mine"}, 3, 24]
            assert rel_close(res["losses"], continued), (world, stage, res["losses"], continued)


@pytest.mark.parametrize("stage", [0, 3])
def test_buffers_are_saved_from_rank_0(tmp_path, stage):
    from accelops.checkpoint import to_torch_state_dict

    save_dir = str(tmp_path / "ckpt")
    ranks = run_ranks(2, [{"kind": "buffers", "name": "buffers", "stage": stage, "save_dir": save_dir}])
    assert [res["buffers"]["stat"][0] for res in ranks] == [1.0, 2.0]  # the ranks' buffers differ
    assert to_torch_state_dict(save_dir)["stat"].tolist() == [1.0] * 8


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    save_dir = str(tmp_path / "ckpt")
    run_ranks(2, [{"kind": "checkpoint", "name": "a", "stage": 1, "steps": 2, "save_at": 2, "save_dir": save_dir}])
    outputs = run_ranks(2, [{"kind": "checkpoint", "name": "b", "stage": 1, "steps": 2, "save_at": 4,
                             "save_dir": save_dir, "load": save_dir, "die_in_save": True}], check=False)
    assert [code for code, _, _ in outputs] == [17, 17], [err[-2000:] for _, _, err in outputs]
    assert sorted(os.listdir(save_dir)) == [".global_step4.partial", "global_step2", "latest"]
    assert open(os.path.join(save_dir, "latest")).read() == "global_step2"
    # the previous checkpoint loads, and a new save of the interrupted tag replaces the leftovers
    again = run_ranks(1, [{"kind": "checkpoint", "name": "c", "stage": 0, "steps": 2, "save_at": 4,
                           "save_dir": save_dir, "load": save_dir}])
    assert again[0]["c"]["loaded"][:2] == [os.path.join(save_dir, "global_step2"), {"step": 2, "note": "mine"}]
    assert sorted(os.listdir(save_dir)) == ["global_step2", "global_step4", "latest"]
    assert open(os.path.join(save_dir, "latest")).read() == "global_step4"


def test_a_rank_that_never_saves_makes_the_others_fail_after_the_timeout(tmp_path):
    results = run_ranks(2, [{"kind": "checkpoint", "name": "s", "stage": 0, "steps": 1, "save_at": 1,
                             "save_dir": str(tmp_path / "ckpt"), "skip_save_rank": 1, "sleep_s": 6}],
                        extra_env={"ACCELOPS_CHECKPOINT_TIMEOUT": "3"}, timeout_s=120)
    message, elapsed = results[0]["s"]["error"]
    assert "not every rank reached it within 3 s" in message and "save_checkpoint(tag='global_step1')" in message
    assert elapsed < 5.5  # the timeout, not the sleeping rank, ended the wait
    assert not os.path.exists(tmp_path / "ckpt" / "global_step1")


# ---------------------------------------------------------------------------------------------- in process
in_process = pytest.mark.usefixtures("world_of_one")


def engine_for(stage=0, **extra):
    config = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
              "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5}},
              "zero_optimization": {"stage": stage}}
    config.update(extra)
    engine, *_ = accelops.initialize(model=make_model(), config=config)
    return engine


def train(engine, steps, start=0):
    losses = []
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        loss = engine(torch.randn(2, 6, generator=gen)).pow(2).mean()
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


@in_process
@pytest.mark.parametrize("stage", [0, 3])
def test_round_trip_in_one_process(tmp_path, stage):
    engine = engine_for(stage)
    train(engine, 2)
    assert engine.save_checkpoint(tmp_path, client_state={"epoch": 7}) is True
    after = train(engine, 3, start=2)
    path, client = engine.load_checkpoint(tmp_path)
    assert path == os.path.join(tmp_path, "global_step2") and client == {"epoch": 7}
    assert (engine.global_steps, engine.global_samples, engine.lr_scheduler.last_batch_iteration) == (2, 4, 1)
    assert train(engine, 3, start=2) == after


@in_process
def test_client_sd_tag_and_latest(tmp_path):
    engine = engine_for()
    train(engine, 1)
    engine.save_checkpoint(tmp_path, "first", client_sd={"step": 1})
    engine.save_checkpoint(tmp_path, tag="second", save_latest=False)
    assert open(tmp_path / "latest").read() == "first"
    assert engine.load_checkpoint(tmp_path)[1] == {"step": 1}
    assert engine.load_checkpoint(tmp_path, tag="second")[1] == {}
    engine.save_checkpoint(tmp_path, "first", client_state={"step": 2})  # an existing tag is replaced
    assert engine.load_checkpoint(tmp_path, "first")[1] == {"step": 2}
    assert sorted(os.listdir(tmp_path)) == ["first", "latest", "second"]


@in_process
@pytest.mark.parametrize("kwargs, error, message", [
    ({"tag": "a/b"}, ValueError, "plain folder name"),
    ({"tag": ".hidden"}, ValueError, "plain folder name"),
    ({"tag": "latest"}, ValueError, "plain folder name"),
    ({"client_state": {"a": 1}, "client_sd": {"b": 2}}, ValueError, "both client_state and client_sd"),
    ({"client_state": [1]}, TypeError, "client_state must be a dict"),
])
def test_save_argument_errors(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        engine_for().save_checkpoint(tmp_path, **kwargs)


@in_process
def test_nothing_to_load_returns_none(tmp_path, caplog):
    engine = engine_for()
    with caplog.at_level(logging.WARNING, logger="accelops.runtime.checkpoint"):
        assert engine.load_checkpoint(tmp_path) == (None, None)
        assert engine.load_checkpoint(tmp_path, tag="nope") == (None, None)
    assert "Unable to find latest file" in caplog.text and "does not exist" in caplog.text
    with pytest.raises(ValueError, match="custom_load_fn"):
        engine.load_checkpoint(tmp_path, custom_load_fn=print)


@in_process
def test_load_module_only_and_without_optimizer_states(tmp_path):
    engine = engine_for()
    train(engine, 3)
    engine.save_checkpoint(tmp_path)
    saved = {k: v.clone() for k, v in engine.module_state_dict().items()}
    fresh = engine_for()
    fresh.load_checkpoint(tmp_path, load_module_only=True)
    assert all(torch.equal(saved[k], v) for k, v in fresh.module_state_dict().items())
    assert fresh.global_steps == 0 and not fresh.optimizer.state
    fresh.load_checkpoint(tmp_path, load_optimizer_states=False, load_lr_scheduler_states=False)
    assert fresh.global_steps == 3 and not fresh.optimizer.state and fresh.lr_scheduler.last_batch_iteration == -1


@in_process
def test_strict_module_loading(tmp_path):
    engine = engine_for()
    engine.save_checkpoint(tmp_path)
    other = make_model()
    other.extra = torch.nn.Linear(2, 2)
    bigger, *_ = accelops.initialize(model=other, config={"train_batch_size": 2, "optimizer": {"type": "SGD"}})
    with pytest.raises(RuntimeError, match=r"missing keys \['extra.bias', 'extra.weight'\]"):
        bigger.load_checkpoint(tmp_path)
    path, _ = bigger.load_checkpoint(tmp_path, load_module_strict=False, load_optimizer_states=False)
    assert path is not None


@in_process
def test_optimizer_of_another_kind_is_refused(tmp_path):
    engine_for().save_checkpoint(tmp_path)  # no step yet: no optimizer state to refuse
    engine = engine_for()
    train(engine, 1)
    engine.save_checkpoint(tmp_path)
    sgd, *_ = accelops.initialize(model=make_model(), config={"train_batch_size": 2, "optimizer": {
        "type": "SGD", "params": {"momentum": 0.9}}})
    with pytest.raises(RuntimeError, match="a checkpoint of another optimizer"):
        sgd.load_checkpoint(tmp_path)
    assert not sgd.optimizer.state  # left as it was


@in_process
def test_a_refused_load_leaves_existing_state_and_a_tensor_lr_alone(tmp_path):
    adam = engine_for()
    train(adam, 1)
    adam.save_checkpoint(tmp_path)
    model = make_model()
    model.out.bias.requires_grad_(False)  # trained later: no optimizer state yet when the load comes
    sgd = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1), momentum=0.9)
    engine, *_ = accelops.initialize(model=model, optimizer=sgd, config={"train_batch_size": 2})
    train(engine, 1)
    model.out.bias.requires_grad_(True)
    state = {id(p): {k: v.clone() for k, v in sgd.state[p].items()} for p in sgd.state}
    with pytest.raises(RuntimeError, match="a checkpoint of another optimizer"):
        engine.load_checkpoint(tmp_path)
    assert float(sgd.param_groups[0]["lr"]) == pytest.approx(0.1)
    assert {id(p): {k: v.clone() for k, v in sgd.state[p].items()} for p in sgd.state}.keys() == state.keys()
    for param in sgd.state:
        for key, value in sgd.state[param].items():
            assert torch.equal(value, state[id(param)][key]), key


@in_process
def test_save_16bit_model(tmp_path):
    engine = engine_for(stage=2, bf16={"enabled": True})
    assert engine.save_16bit_model(tmp_path) is True
    state = torch.load(tmp_path / "pytorch_model.bin")
    assert state["inp.weight"].dtype == torch.bfloat16 and state["inp.weight"].shape == (16, 6)
