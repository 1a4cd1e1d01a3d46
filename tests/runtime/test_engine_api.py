"""accelops.initialize in a world of one: DeepSpeed's arguments and return value, config errors, the
optimizers the config picks, client optimizers and schedulers, the accumulation boundary, the dataloader,
and that importing accelops stays cheap."""
import argparse
import json
import logging
import subprocess
import sys

import pytest
import torch

import accelops
from accelops.runtime import ConfigError

pytestmark = pytest.mark.usefixtures("world_of_one")


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def config(**extra):
    base = {"train_batch_size": 4, "optimizer": {"type": "Adam", "params": {"lr": 0.01}}}
    base.update(extra)
    return base


def train_step(engine, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 4, generator=gen), torch.randn(2, 2, generator=gen)
    loss = torch.nn.functional.mse_loss(engine(x), y)
    engine.backward(loss)
    engine.step()
    return loss.item()


# ---------------------------------------------------------------------------------------------- arguments
def test_returns_engine_optimizer_dataloader_scheduler():
    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.randn(10, 2))
    cfg = config(scheduler={"type": "WarmupLR", "params": {"warmup_num_steps": 10, "warmup_max_lr": 0.01}})
    engine, optimizer, loader, scheduler = accelops.initialize(model=model(), config=cfg, training_data=data)
    assert isinstance(engine, accelops.DeepSpeedEngine)
    assert optimizer is engine.optimizer and scheduler is engine.lr_scheduler and loader is engine.training_dataloader
    assert type(scheduler).__name__ == "WarmupLR"
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
    assert loader.data_sampler is loader.sampler  # DeepSpeed scripts call data_sampler.set_epoch(epoch)
    loader.data_sampler.set_epoch(1)
    assert [len(b[0]) for b in loader] == [4, 4, 2]
    assert loader.batch_size == 4 and len(loader) == 3  # micro batch 4 in a world of one
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 4)


def test_config_from_args_json_and_config_params(tmp_path):
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(config(train_batch_size=6)))
    parser = accelops.add_config_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--deepspeed", "--deepspeed_config", str(path)])
    assert args.deepspeed is True
    engine, *_ = accelops.initialize(args=args, model=model())
    assert engine.train_batch_size() == 6
    engine, *_ = accelops.initialize(model=model(), config_params=config(train_batch_size=5))
    assert engine.train_batch_size() == 5


def test_deprecated_deepscale_config_is_used(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config(train_batch_size=3)))
    args = accelops.add_config_arguments(argparse.ArgumentParser()).parse_args(["--deepscale_config", str(path)])
    engine, *_ = accelops.initialize(args=args, model=model())
    assert engine.train_batch_size() == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"config": {"train_batch_size": 2}}, "requires a model"),
    ({"model": "m", "config": {"train_batch_size": 2}}, "must be a torch.nn.Module"),
    ({"model": torch.nn.Linear(2, 2), "config": {"train_batch_size": 2}, "mpu": object()}, "no model parallelism"),
    ({"model": torch.nn.Linear(2, 2), "config": {"train_batch_size": 2}, "mesh_param": (1, 1)}, "mesh_param=None"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        accelops.initialize(**kwargs)


def test_config_missing_or_given_twice(tmp_path):
    with pytest.raises(ConfigError, match="no DeepSpeed config"):
        accelops.initialize(model=model())
    args = argparse.Namespace(deepspeed_config=str(tmp_path / "x.json"))
    with pytest.raises(ConfigError, match="given twice"):
        accelops.initialize(args=args, model=model(), config=config())


@pytest.mark.parametrize("cfg, message", [
    ({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 2},
     r"8 != 3 x 2 x 1"),
    ({"gradient_accumulation_steps": 2}, "needs train_batch_size or train_micro_batch_size_per_gpu"),
    ({"train_batch_size": 0}, "train_batch_size"),
])
def test_batch_triple_errors_show_the_numbers(cfg, message):
    with pytest.raises(ConfigError, match=message):
        accelops.initialize(model=model(), config=cfg)


def test_no_effect_keys_are_reported_once(caplog):
    cfg = config(zero_optimization={"stage": 0, "overlap_comm": True, "reduce_bucket_size": 5e8})
    with caplog.at_level(logging.WARNING, logger="accelops.runtime.engine"):
        accelops.initialize(model=model(), config=cfg)
    lines = [r.getMessage() for r in caplog.records if "no effect" in r.getMessage()]
    assert len(lines) == 1
    assert "zero_optimization.overlap_comm" in lines[0] and "zero_optimization.reduce_bucket_size" in lines[0]


def test_dist_init_required_false_without_a_group_is_an_error():
    from accelops.comm import DistributedInitError

    with pytest.raises(DistributedInitError, match="dist_init_required=False"):
        accelops.initialize(model=model(), config=config(), dist_init_required=False)


def test_mixed_precision_needs_an_fp32_model():
    with pytest.raises(TypeError, match="pass the model in float32"):
        accelops.initialize(model=model().half(), config=config(fp16={"enabled": True}))


# ---------------------------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("section, cls, checks", [
    ({"type": "Adam", "params": {"lr": 0.1, "weight_decay": 0.01}}, "CPUAdam", {"decoupled_weight_decay": True}),
    ({"type": "Adam", "params": {"adam_w_mode": False}}, "CPUAdam", {"decoupled_weight_decay": False}),
    ({"type": "AdamW", "params": {"adam_w_mode": False}}, "CPUAdam", {"decoupled_weight_decay": True}),
    ({"type": "adam", "params": {"torch_adam": True}}, "AdamW", {}),
    ({"type": "Adam", "params": {"torch_adam": True, "adam_w_mode": False}}, "Adam", {}),
    ({"type": "Adagrad", "params": {"lr": 0.2, "lr_decay": 0.1}}, "CPUAdagrad", {"lr_decay": 0.1}),
    ({"type": "Lion", "params": {}}, "CPULion", {"lr": 1e-3, "betas": (0.9, 0.999)}),
    ({"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9}}, "SGD", {"momentum": 0.9}),
])
def test_config_optimizer_on_cpu(section, cls, checks):
    engine, optimizer, _, _ = accelops.initialize(model=model(), config=config(optimizer=section))
    assert type(optimizer).__name__ == cls
    for key, value in checks.items():
        assert optimizer.param_groups[0][key] == value
    before = [p.detach().clone() for p in engine.module.parameters()]
    train_step(engine)
    assert any(not torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))


def test_amsgrad_is_refused_for_the_cpu_kernel():
    with pytest.raises(ConfigError, match="amsgrad"):
        accelops.initialize(model=model(), config=config(optimizer={"type": "Adam", "params": {"amsgrad": True}}))


def test_client_optimizer_instance_and_callable_and_scheduler_callable(caplog):
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    with caplog.at_level(logging.WARNING, logger="accelops.runtime.engine"):
        engine, optimizer, _, scheduler = accelops.initialize(
            model=net, optimizer=opt, config=config(),
            lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5))
    assert optimizer is opt and "client's optimizer is used" in caplog.text
    train_step(engine)
    assert engine.get_lr() == [0.25]
    engine, optimizer, _, _ = accelops.initialize(
        model=model(), optimizer=lambda params: torch.optim.Adagrad(params, lr=0.1), config={"train_batch_size": 2})
    assert isinstance(optimizer, torch.optim.Adagrad)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"optimizer": 3}, TypeError, "must be a torch.optim.Optimizer or a callable"),
    ({"optimizer": lambda params: None}, TypeError, "returned a NoneType"),
    ({"lr_scheduler": 5}, TypeError, "initialize\\(lr_scheduler=...\\)"),
    ({"model_parameters": [1, 2]}, TypeError, "model_parameters\\[0\\]"),
])
def test_bad_client_objects(kwargs, error, message):
    with pytest.raises(error, match=message):
        accelops.initialize(model=model(), config=config(), **kwargs)


def test_without_an_optimizer_backward_and_step_say_what_is_missing():
    engine, optimizer, _, scheduler = accelops.initialize(model=model(), config={"train_batch_size": 2})
    assert optimizer is None and scheduler is None and engine.get_lr() == []
    loss = engine(torch.randn(2, 4)).sum()
    with pytest.raises(RuntimeError, match="needs an optimizer"):
        engine.backward(loss)
    with pytest.raises(RuntimeError, match="needs an optimizer"):
        engine.step()
    with pytest.raises(ValueError, match="no optimizer"):
        accelops.initialize(model=model(), config={"train_batch_size": 2, "scheduler": {"type": "WarmupLR"}})


def test_backward_refuses_non_scalar_and_detached_losses():
    engine, *_ = accelops.initialize(model=model(), config=config())
    out = engine(torch.randn(2, 4))
    with pytest.raises(TypeError, match="scalar loss"):
        engine.backward(out)
    with pytest.raises(RuntimeError, match="does not require grad"):
        engine.backward(out.detach().sum())


# ---------------------------------------------------------------------------------------------- loop
def test_accumulation_boundary_behaviour():
    engine, optimizer, _, _ = accelops.initialize(
        model=model(), config={"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 3,
                               "optimizer": {"type": "SGD", "params": {"lr": 0.1}}})
    weight = engine.module[0].weight
    start = weight.detach().clone()
    seen = []
    for micro in range(6):
        seen.append(engine.is_gradient_accumulation_boundary())
        before = weight.detach().clone()
        grad_before = None if weight.grad is None else weight.grad.clone()
        gen = torch.Generator().manual_seed(micro)
        loss = engine(torch.randn(2, 4, generator=gen)).pow(2).mean()
        returned = engine.backward(loss)
        assert returned.item() == pytest.approx(loss.item() / 3)
        if grad_before is not None:  # gradients accumulate over the micro-steps
            assert not torch.equal(weight.grad, grad_before)
        engine.step()
        if seen[-1]:
            assert weight.grad is None and not torch.equal(weight, before)  # updated, then zeroed
        else:
            assert weight.grad is not None and torch.equal(weight, before)  # no update off the boundary
    assert seen == [False, False, True] * 2
    assert (engine.global_steps, engine.global_samples, engine.micro_steps, engine.skipped_steps) == (2, 12, 6, 0)
    assert not torch.equal(weight, start)


def test_set_gradient_accumulation_boundary_overrides_the_count():
    engine, *_ = accelops.initialize(model=model(), config={"train_micro_batch_size_per_gpu": 2,
                                                            "gradient_accumulation_steps": 4,
                                                            "optimizer": {"type": "SGD"}})
    engine.set_gradient_accumulation_boundary(True)
    train_step(engine)
    assert engine.global_steps == 1
    engine.set_gradient_accumulation_boundary(None)
    assert not engine.is_gradient_accumulation_boundary()
    with pytest.raises(TypeError):
        engine.set_gradient_accumulation_boundary(1)


def test_accessors_modes_and_module_attributes():
    net = model()
    net.custom_attribute = "mine"
    engine, *_ = accelops.initialize(model=net, config=config(gradient_clipping=1.0, steps_per_print=1))
    assert engine.zero_optimization_stage() == 0 and not engine.zero_optimization()
    assert engine.gradient_clipping() == 1.0 and not engine.fp16_enabled() and not engine.bfloat16_enabled()
    assert engine.get_global_grad_norm() is None
    assert engine.loss_scale == 1.0 and engine.loss_scale() == 1.0
    engine.eval()
    assert not engine.training and not engine.module.training
    engine.train()
    assert engine.training and engine.module[0].training
    assert engine.module_state_dict().keys() == engine.module.state_dict().keys()
    assert engine.custom_attribute == "mine"  # attributes the engine lacks come from the model
    with pytest.raises(AttributeError):
        engine.no_such_attribute
    train_step(engine)
    assert engine.get_global_grad_norm() > 0
    assert engine.module_state_dict(exclude_frozen_parameters=True).keys() == engine.module.state_dict().keys()


def test_deepspeed_io_checks_its_input():
    engine, *_ = accelops.initialize(model=model(), config=config())
    with pytest.raises(ValueError, match="must be a torch Dataset"):
        engine.deepspeed_io([1, 2, 3])
    data = torch.utils.data.TensorDataset(torch.randn(6, 4))
    loader = engine.deepspeed_io(data, route="eval", batch_size=3)
    assert loader.batch_size == 3 and loader.sampler.shuffle is False
    with pytest.raises(ValueError, match="route"):
        engine.deepspeed_io(data, route="test")


def test_importing_accelops_stays_cheap():
    code = ("import sys, accelops\n"
            "assert 'torch' not in sys.modules\n"
            "parser = accelops.add_config_arguments(__import__('argparse').ArgumentParser())\n"
            "assert 'torch' not in sys.modules\n"
            "assert 'initialize' in dir(accelops)\n"
            "print(accelops.initialize.__module__, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["accelops.runtime.entry", "False"]  # torch only when initialize() runs


def test_offload_on_a_cpu_rank_builds_the_cpu_kernel_optimizer():
    cfg = config(zero_optimization={"stage": 2, "offload_optimizer": {"device": "cpu"}})
    engine, optimizer, _, _ = accelops.initialize(model=model(), config=cfg)
    assert type(optimizer).__name__ == "CPUAdam"
    train_step(engine)
    assert engine.global_steps == 1


# ---------------------------------------------------------------------------------------------- no_sync, destroy
@pytest.mark.parametrize("stage", [2, 3])
def test_no_sync_refuses_sharded_gradients(stage):
    engine, *_ = accelops.initialize(model=model(), config=config(zero_optimization={"stage": stage}))
    with pytest.raises(AssertionError, match=f"incompatible with gradient partitioning logic of ZeRO stage {stage}"):
        with engine.no_sync():
            pass


@pytest.mark.parametrize("stage", [0, 1])
def test_no_sync_refuses_step_and_reentry_and_then_trains_on(stage):
    engine, *_ = accelops.initialize(model=model(), config=config(zero_optimization={"stage": stage}))
    with engine.no_sync():
        loss = engine(torch.randn(2, 4)).pow(2).mean()
        engine.backward(loss)
        with pytest.raises(AssertionError, match="illegal to call Engine.step"):
            engine.step()
        with pytest.raises(AssertionError, match="reentry is unsupported"):
            with engine.no_sync():
                pass
    assert engine.micro_steps == 0 and engine.global_steps == 0
    train_step(engine)
    assert engine.global_steps == 1


def test_destroy_releases_the_optimizer():
    engine, optimizer, _, _ = accelops.initialize(model=model(), config=config())
    calls = []
    optimizer.destroy = lambda: calls.append("destroyed")
    engine.destroy()
    assert calls == ["destroyed"]
