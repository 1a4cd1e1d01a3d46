"""accelops.runtime.load_config: DeepSpeed's keys, defaults and batch rules; every bad input a clear error."""
import base64
import copy
import dataclasses
import json
import pickle
import subprocess
import sys

import pytest

from accelops.runtime import ConfigError, load_config

GUIDE = {"train_batch_size": 8, "gradient_accumulation_steps": 1,
         "optimizer": {"type": "Adam", "params": {"lr": 0.00015}}, "fp16": {"enabled": True},
         "zero_optimization": True}

# What the HF Trainer writes once its "auto" values are filled in (ZeRO-3 with CPU offload).
HF_STYLE = {
    "fp16": {"enabled": False, "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
             "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": True},
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-5, "warmup_num_steps": 500}},
    "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                          "offload_param": {"device": "cpu", "pin_memory": True}, "overlap_comm": True,
                          "contiguous_gradients": True, "sub_group_size": 1e9, "reduce_bucket_size": 1048576,
                          "stage3_prefetch_bucket_size": 943718, "stage3_param_persistence_threshold": 10240,
                          "stage3_max_live_parameters": 1e9, "stage3_max_reuse_distance": 1e9,
                          "stage3_gather_16bit_weights_on_model_save": True},
    "gradient_accumulation_steps": 2, "gradient_clipping": 1.0, "steps_per_print": 2000,
    "train_batch_size": 64, "train_micro_batch_size_per_gpu": 8, "wall_clock_breakdown": False,
}


def with_(base=None, **changes):
    config = copy.deepcopy(GUIDE if base is None else base)
    config.update(changes)
    return config


def error(config, world_size=1):
    with pytest.raises(ConfigError) as info:
        load_config(config, world_size)
    return str(info.value)


# ---------------------------------------------------------------- whole configs


@pytest.mark.parametrize("world_size, micro", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_getting_started_guide_config(world_size, micro):
    config = load_config(GUIDE, world_size)
    assert (config.train_batch_size, config.train_micro_batch_size_per_gpu, config.gradient_accumulation_steps) == (
        8, micro, 1)
    assert config.zero.stage == 1 and config.zero_optimization_stage == 1  # "zero_optimization": true
    assert config.fp16.enabled and config.fp16.dynamic_loss_scale and config.fp16.initial_dynamic_scale == 2.0 ** 16
    assert config.optimizer.type == "Adam" and dict(config.optimizer.params) == {"lr": 0.00015}
    assert config.optimizer.adam_w_mode is True  # DeepSpeed's "Adam" decouples weight decay by default
    assert config.precision == "fp16" and config.no_effect == () and config.scheduler is None


def test_hf_trainer_style_config():
    config = load_config(HF_STYLE, 4)
    assert config.precision == "bf16" and config.gradient_clipping == 1.0 and config.steps_per_print == 2000
    assert config.zero.stage == 3 and config.zero.offload_optimizer.device == "cpu"
    assert config.zero.offload_param.enabled and config.zero.gather_16bit_weights_on_model_save
    assert config.optimizer.type == "AdamW" and config.optimizer.params["betas"] == (0.9, 0.999)
    assert config.scheduler.type == "WarmupLR" and config.scheduler.params["warmup_num_steps"] == 500
    z = "zero_optimization."
    assert config.no_effect == tuple(z + k for k in (
        "overlap_comm", "contiguous_gradients", "sub_group_size", "reduce_bucket_size", "stage3_prefetch_bucket_size",
        "stage3_param_persistence_threshold", "stage3_max_live_parameters", "stage3_max_reuse_distance"))


def test_defaults_when_only_a_batch_size_is_given():
    config = load_config({"train_micro_batch_size_per_gpu": 2}, 3)
    assert (config.train_batch_size, config.gradient_accumulation_steps) == (6, 1)
    assert config.optimizer is None and config.scheduler is None and config.precision == "fp32"
    assert config.zero.stage == 0 and not config.zero.offload_optimizer.enabled
    assert config.fp16 == type(config.fp16)(enabled=False, auto_cast=False, loss_scale=0, initial_scale_power=16,
                                            loss_scale_window=1000, hysteresis=2, consecutive_hysteresis=False,
                                            min_loss_scale=1)
    assert config.bf16.check_grad_overflow is True
    assert (config.gradient_clipping, config.steps_per_print, config.wall_clock_breakdown,
            config.dataloader_drop_last, config.communication_data_type) == (0.0, None, False, False, None)


def test_config_is_frozen_picklable_and_input_untouched():
    source = copy.deepcopy(HF_STYLE)
    config = load_config(source, 4)
    assert source == HF_STYLE
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train_batch_size = 3
    with pytest.raises(TypeError, match="frozen config"):
        config.optimizer.params["lr"] = 1.0
    assert pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(config) == config and hash(config) == hash(copy.deepcopy(config))
    assert json.loads(config.source_json) == HF_STYLE


def test_import_runtime_imports_no_torch():
    probe = ("import sys, accelops.runtime, accelops.runtime.config, accelops.runtime.loss_scaler\n"
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- reading


def test_json_file_base64_and_file_errors(tmp_path):
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(GUIDE))
    assert load_config(str(path), 2) == load_config(path, 2) == load_config(GUIDE, 2)
    encoded = base64.urlsafe_b64encode(json.dumps(GUIDE).encode()).decode()
    assert load_config(encoded, 2).train_batch_size == 8
    assert "is not an existing file" in error(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"train_batch_size": 8,}')
    assert "is not valid JSON" in error(str(bad))
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"train_batch_size": 8, "note": "caf\u00e9"}'.encode("latin-1"))
    assert f"the config file {str(latin1)!r} is not UTF-8 text (byte 36" in error(str(latin1))
    twice = tmp_path / "twice.json"
    twice.write_text('{"train_batch_size": 8, "train_batch_size": 16}')
    assert error(str(twice)) == "train_batch_size appears twice in one object of the config file"
    assert "must be a dict or the path" in error(42)
    assert "the config must be an object" in error(base64.urlsafe_b64encode(b"[1, 2]").decode())


@pytest.mark.parametrize("world_size", [0, -1, 1.0, True, None])
def test_bad_world_size(world_size):
    assert "world_size must be a positive integer" in error(GUIDE, world_size)


# ---------------------------------------------------------------- batch triple


@pytest.mark.parametrize("given, world_size, expected", [
    ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}, 4, (32, 4, 2)),
    ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}, 4, (32, 4, 2)),
    ({"train_batch_size": 32, "gradient_accumulation_steps": 4}, 4, (32, 2, 4)),
    ({"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 5}, 2, (30, 3, 5)),
    ({"train_batch_size": 12}, 3, (12, 4, 1)),
    ({"train_micro_batch_size_per_gpu": 3}, 4, (12, 3, 1)),
    ({"train_batch_size": 8.0}, 1, (8, 8, 1)),  # JSON whole floats count as integers
])
def test_any_two_give_the_third(given, world_size, expected):
    config = load_config(given, world_size)
    assert (config.train_batch_size, config.train_micro_batch_size_per_gpu,
            config.gradient_accumulation_steps) == expected


def test_batch_mismatch_shows_the_numbers():
    message = error({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 1},
                    2)
    assert "8 != 3 x 1 x 2 (= 6)" in message and "world_size 2" in message
    message = error({"train_batch_size": 10, "train_micro_batch_size_per_gpu": 3}, 1)  # 10 // 3 = 3 -> 9
    assert "10 != 3 x 3 x 1 (= 9)" in message and "gradient_accumulation_steps 3 (derived)" in message
    message = error({"train_batch_size": 8}, 3)
    assert "8 != 2 x 1 x 3 (= 6)" in message and "train_micro_batch_size_per_gpu 2 (derived)" in message
    assert "8 != 0 x 1 x 16" in error(GUIDE, 16)


def test_batch_needs_train_or_micro():
    assert "needs train_batch_size or train_micro_batch_size_per_gpu" in error({})
    assert "only gradient_accumulation_steps was given" in error({"gradient_accumulation_steps": 2})


@pytest.mark.parametrize("value", [0, -8, 2.5, "8", True])
def test_batch_values_must_be_positive_integers(value):
    assert error({"train_batch_size": value}).startswith("train_batch_size must be an integer >= 1, got")


# ---------------------------------------------------------------- unknown keys, "auto"


@pytest.mark.parametrize("config, path, near", [
    ({**GUIDE, "optimiser": {}}, "optimiser", "optimizer"),
    ({**GUIDE, "gradient_clip": 1.0}, "gradient_clip", "gradient_clipping"),
    ({**GUIDE, "fp16": {"enabled": True, "loss_scale_windows": 100}}, "fp16.loss_scale_windows", "loss_scale_window"),
    ({**GUIDE, "optimizer": {"type": "Adam", "params": {"betas1": 0.9}}}, "optimizer.params.betas1", "betas"),
    ({**GUIDE, "optimizer": {"type": "Adam", "parms": {}}}, "optimizer.parms", "params"),
    ({**GUIDE, "zero_optimization": {"stage": 2, "reduce_bucket": 5}}, "zero_optimization.reduce_bucket",
     "reduce_bucket_size"),
    ({**GUIDE, "zero_optimization": {"stage": 3, "offload_param": {"device": "cpu", "pin_mem": True}}},
     "zero_optimization.offload_param.pin_mem", "pin_memory"),
    ({**GUIDE, "scheduler": {"type": "WarmupLR", "params": {"warmup_steps": 10}}}, "scheduler.params.warmup_steps",
     "warmup_num_steps"),
    ({**GUIDE, "bf16": {"enable": True}}, "bf16.enable", "enabled"),
])
def test_unknown_key_names_it_and_the_closest_known_key(config, path, near):
    assert error(config) == (f"{path} is not a known key; the closest known key is {near!r} "
                             f"(DeepSpeed would silently ignore it)")


@pytest.mark.parametrize("config, path", [
    ({**GUIDE, "train_batch_size": "auto"}, "train_batch_size"),
    ({**GUIDE, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}, "optimizer.params.lr"),
    ({**GUIDE, "optimizer": {"type": "AdamW", "params": {"betas": ["auto", 0.9]}}}, "optimizer.params.betas[0]"),
    ({**GUIDE, "zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": "auto"}},
     "zero_optimization.stage3_prefetch_bucket_size"),
    ({**GUIDE, "fp16": {"enabled": "auto"}}, "fp16.enabled"),
])
def test_auto_is_an_error_that_says_who_fills_it_in(config, path):
    message = error(config)
    assert message.startswith(f'{path} is "auto"') and "Hugging Face Trainer / Accelerate" in message


# ---------------------------------------------------------------- optimizer


@pytest.mark.parametrize("name, canonical", [("adam", "Adam"), ("ADAMW", "AdamW"), ("Adagrad", "Adagrad"),
                                             ("lion", "Lion"), ("SGD", "SGD"), ("sgd", "SGD")])
def test_optimizer_names_are_case_insensitive(name, canonical):
    assert load_config(with_(optimizer={"type": name}), 1).optimizer.type == canonical


@pytest.mark.parametrize("name, params, w_mode", [
    ("Adam", {}, True), ("Adam", {"adam_w_mode": False}, False), ("Adam", {"adam_w_mode": True}, True),
    ("AdamW", {}, True), ("AdamW", {"adam_w_mode": False}, True)])  # DeepSpeed: type AdamW *or* adam_w_mode
def test_adam_w_mode_as_deepspeed(name, params, w_mode):
    optimizer = load_config(with_(optimizer={"type": name, "params": {"lr": 1e-3, **params}}), 1).optimizer
    assert optimizer.adam_w_mode is w_mode and dict(optimizer.params) == {"lr": 1e-3}


def test_optimizer_params_as_given():
    params = {"lr": 1e-3, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1, "bias_correction": False,
              "torch_adam": True}
    optimizer = load_config(with_(optimizer={"type": "Adam", "params": params}), 1).optimizer
    assert optimizer.torch_adam and dict(optimizer.params) == {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-6,
                                                              "weight_decay": 0.1, "bias_correction": False}
    sgd = load_config(with_(optimizer={"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9, "nesterov": True}}), 1)
    assert dict(sgd.optimizer.params) == {"lr": 0.1, "momentum": 0.9, "nesterov": True}
    assert sgd.optimizer.adam_w_mode is None
    legacy = load_config(with_(optimizer={"type": "Lion", "legacy_fusion": False, "params": {"set_grad_none": True}}),
                         1)
    assert legacy.no_effect == ("optimizer.legacy_fusion", "optimizer.params.set_grad_none")


@pytest.mark.parametrize("optimizer, expected", [
    ({"type": "Adam", "params": {"lr": "0.1"}}, "optimizer.params.lr must be a finite number >= 0, got '0.1' (str)"),
    ({"type": "Adam", "params": {"lr": -1}}, "optimizer.params.lr must be a finite number >= 0, got -1 (int)"),
    ({"type": "Adam", "params": {"betas": [0.9]}}, "optimizer.params.betas must be a list of two numbers"),
    ({"type": "Adam", "params": {"betas": [0.9, 1.0]}}, "optimizer.params.betas must be a list of two numbers"),
    ({"type": "Adam", "params": {"adam_w_mode": 0}}, "optimizer.params.adam_w_mode must be true or false, got 0"),
    ({"type": "Adagrad", "params": {"adam_w_mode": False}}, "optimizer.params.adam_w_mode is not a known key"),
    ({"type": "Adam", "params": {"max_grad_norm": 1.0}}, "optimizer.params.max_grad_norm is not supported as an "
                                                         "optimizer parameter"),
    ({"type": "Lamb"}, "optimizer.type 'Lamb' is a DeepSpeed optimizer that accelops does not provide"),
    ({"type": "Adamm"}, "optimizer.type 'Adamm' is not a supported optimizer (closest: 'Adam')"),
    ({"type": 3}, "optimizer.type must be a string"),
    ({"params": {"lr": 1.0}}, "optimizer.type is required here but missing"),
    ({"type": "Adam", "params": [1]}, "optimizer.params must be an object"),
    ([], "optimizer must be an object"),
])
def test_bad_optimizer(optimizer, expected):
    assert error(with_(optimizer=optimizer)).startswith(expected)


# ---------------------------------------------------------------- scheduler


@pytest.mark.parametrize("scheduler", [
    {"type": "WarmupLR"},
    {"type": "WarmupLR", "params": {"warmup_min_lr": [0, 0.1], "warmup_max_lr": None, "warmup_type": "linear"}},
    {"type": "WarmupDecayLR", "params": {"total_num_steps": 100, "warmup_num_steps": 10}},
    {"type": "WarmupCosineLR", "params": {"total_num_steps": 100, "warmup_min_ratio": 0.1, "cos_min_ratio": 0.01}},
    {"type": "OneCycle", "params": {"cycle_min_lr": 0.01, "cycle_max_lr": 0.1, "cycle_first_step_size": 5,
                                    "cycle_second_step_size": None, "cycle_first_stair_count": 2,
                                    "decay_step_size": 3, "cycle_momentum": False}},
    {"type": "LRRangeTest", "params": {"lr_range_test_min_lr": 1e-4, "lr_range_test_step_size": 10,
                                       "lr_range_test_step_rate": 2.0, "lr_range_test_staircase": True}},
    {"type": "warmupcosinelr", "params": {"total_num_steps": 5, "last_batch_iteration": 3}},
])
def test_scheduler_sections(scheduler):
    config = load_config(with_(scheduler=scheduler), 1).scheduler
    assert config.type.lower() == scheduler["type"].lower() and config.type in (
        "WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest")
    given = scheduler.get("params", {})
    assert set(config.params) == set(given)
    assert all(config.params[k] == (tuple(v) if isinstance(v, list) else v) for k, v in given.items())


@pytest.mark.parametrize("scheduler, expected", [
    ({"type": "WarmupDecayLR"}, "scheduler.params.total_num_steps is required here but missing"),
    ({"type": "OneCycle", "params": {"cycle_max_lr": 0.1}}, "scheduler.params.cycle_min_lr is required"),
    ({"type": "WarmupLR", "params": {"warmup_type": "cosine"}},
     "scheduler.params.warmup_type must be one of 'log', 'linear', got 'cosine' (str)"),
    ({"type": "WarmupLR", "params": {"warmup_num_steps": 0}},
     "scheduler.params.warmup_num_steps must be an integer >= 1, got 0"),
    ({"type": "WarmupLR", "params": {"warmup_min_lr": []}}, "scheduler.params.warmup_min_lr must be a number or a"),
    ({"type": "WarmupLR", "params": {"warmup_max_lr": [0.1, "x"]}}, "scheduler.params.warmup_max_lr[1] must be"),
    ({"type": "OneCycle", "params": {"cycle_min_lr": 0, "cycle_max_lr": 1, "cycle_first_step_size": 0}},
     "scheduler.params.cycle_first_step_size must be a finite number > 0"),
    ({"type": "LRRangeTest", "params": {"lr_range_test_staircase": "yes"}},
     "scheduler.params.lr_range_test_staircase must be true or false"),
    ({"type": "StepLR"}, "scheduler.type 'StepLR' is not a supported schedule"),
    ({"type": "WarmupDecay"}, "scheduler.type 'WarmupDecay' is not a supported schedule (closest: 'WarmupDecayLR')"),
    ({"params": {}}, "scheduler.type is required here but missing"),
])
def test_bad_scheduler(scheduler, expected):
    assert error(with_(scheduler=scheduler)).startswith(expected)


# ---------------------------------------------------------------- fp16 / bf16


def test_fp16_settings_and_dynamic_loss_args():
    fp16 = load_config(with_(fp16={"enabled": True, "loss_scale": 0, "initial_scale_power": 12,
                                   "loss_scale_window": 50, "hysteresis": 3, "consecutive_hysteresis": True,
                                   "min_loss_scale": 0.5}), 1).fp16
    assert fp16.dynamic_loss_args() == {"init_scale": 4096.0, "scale_window": 50, "delayed_shift": 3,
                                        "consecutive_hysteresis": True, "min_scale": 0.5}
    static = load_config(with_(fp16={"enabled": True, "loss_scale": 128, "loss_scale_window": 0}), 1).fp16
    assert not static.dynamic_loss_scale and static.loss_scale == 128  # window unchecked when static, as DeepSpeed


def test_bf16_and_its_old_spelling():
    base = with_(fp16={"enabled": False})
    assert load_config({**base, "bf16": {"enabled": True}}, 1).precision == "bf16"
    assert load_config({**base, "bfloat16": {"enabled": True}}, 1).precision == "bf16"
    assert "two spellings of one section" in error({**base, "bf16": {}, "bfloat16": {}})
    config = load_config({**base, "bf16": {"enabled": True, "immediate_grad_update": True,
                                           "check_grad_overflow": False}}, 1)
    assert config.no_effect == ("bf16.immediate_grad_update",) and not config.bf16.check_grad_overflow


@pytest.mark.parametrize("changes, expected", [
    ({"bf16": {"enabled": True}}, "fp16.enabled and bf16.enabled are both true"),
    ({"fp16": {"enabled": 1}}, "fp16.enabled must be true or false, got 1 (int)"),
    ({"fp16": {"enabled": True, "loss_scale": -1}}, "fp16.loss_scale must be a finite number >= 0"),
    ({"fp16": {"enabled": True, "loss_scale": True}}, "fp16.loss_scale must be a finite number >= 0, got True"),
    ({"fp16": {"enabled": True, "initial_scale_power": 200}}, "fp16.initial_scale_power must be an integer between"),
    ({"fp16": {"enabled": True, "loss_scale_window": 0}}, "fp16.loss_scale_window must be >= 1 with dynamic"),
    ({"fp16": {"enabled": True, "min_loss_scale": 0}}, "fp16.min_loss_scale must be > 0 with dynamic"),
    ({"fp16": {"enabled": True, "hysteresis": 0}}, "fp16.hysteresis must be >= 1 with dynamic"),
    ({"fp16": {"enabled": True, "initial_scale_power": 2, "min_loss_scale": 8}},
     "fp16.initial_scale_power gives a first loss scale 2**2 below fp16.min_loss_scale 8"),
    ({"fp16": {"enabled": True, "fp16_master_weights_and_grads": True}},
     "fp16.fp16_master_weights_and_grads is a DeepSpeed feature that accelops does not support"),
    ({"fp16": None}, "fp16 must be an object"),
])
def test_bad_precision(changes, expected):
    assert error(with_(**changes)).startswith(expected)


# ---------------------------------------------------------------- zero_optimization


@pytest.mark.parametrize("zero, stage", [(True, 1), (False, 0), ({}, 0), ({"stage": 0}, 0), ({"stage": 2}, 2),
                                         ({"stage": 3.0}, 3), (None, 0)])
def test_zero_stage(zero, stage):
    assert load_config(with_(zero_optimization=zero), 1).zero.stage == stage


def test_zero_offload_and_deprecated_forms():
    zero = load_config(with_(zero_optimization={"stage": 2, "offload_optimizer": {"device": "cpu"}}), 1).zero
    assert zero.offload_optimizer.device == "cpu" and zero.offload_optimizer.pin_memory is True
    assert not zero.offload_param.enabled
    zero = load_config(with_(zero_optimization={"stage": 3, "cpu_offload": True, "cpu_offload_param": True}), 1).zero
    assert zero.offload_optimizer.enabled and zero.offload_param.enabled
    zero = load_config(with_(zero_optimization={"stage": 1, "offload_optimizer": {"device": "none",
                                                                                  "pin_memory": False}}), 1).zero
    assert not zero.offload_optimizer.enabled and zero.offload_optimizer.pin_memory is False
    config = load_config(with_(zero_optimization={"stage": 3, "stage3_gather_fp16_weights_on_model_save": True,
                                                  "zero_quantized_weights": False, "mics_shard_size": -1}), 1)
    assert config.zero.gather_16bit_weights_on_model_save and config.no_effect == ()


@pytest.mark.parametrize("zero, expected", [
    ({"stage": 4}, "zero_optimization.stage must be an integer between 0 and 3, got 4"),
    ({"stage": True}, "zero_optimization.stage must be an integer between 0 and 3, got True"),
    ({"stage": 3, "offload_param": {"device": "nvme"}}, "zero_optimization.offload_param.device is 'nvme'"),
    ({"stage": 2, "offload_optimizer": {"device": "gpu"}},
     "zero_optimization.offload_optimizer.device must be one of 'none', 'cpu', 'nvme'"),
    ({"stage": 2, "offload_param": {"device": "cpu"}}, "zero_optimization.offload_param needs ZeRO stage 3"),
    ({"stage": 0, "offload_optimizer": {"device": "cpu"}}, "zero_optimization.offload_optimizer needs ZeRO stage 1"),
    ({"stage": 2, "cpu_offload": True, "offload_optimizer": {"device": "cpu"}},
     "zero_optimization.cpu_offload (deprecated) and zero_optimization.offload_optimizer cannot be given together"),
    ({"stage": 3, "gather_16bit_weights_on_model_save": True, "stage3_gather_16bit_weights_on_model_save": True},
     "zero_optimization.stage3_gather_16bit_weights_on_model_save and zero_optimization.gather_16bit_"),
    ({"stage": 2, "zero_quantized_gradients": True},
     "zero_optimization.zero_quantized_gradients is a DeepSpeed feature that accelops does not support"),
    ({"stage": 2, "reduce_bucket_size": -5}, "zero_optimization.reduce_bucket_size must be a finite number >= 0"),
    ({"stage": 2, "overlap_comm": "yes"}, "zero_optimization.overlap_comm must be true or false"),
    ({"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.5}},
     "zero_optimization.offload_optimizer.ratio is a DeepSpeed feature"),
    ("stage3", "zero_optimization must be an object"),
])
def test_bad_zero(zero, expected):
    assert error(with_(zero_optimization=zero)).startswith(expected)


def test_tuning_keys_are_collected_as_no_effect():
    zero = {"stage": 2, "allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True,
            "reduce_bucket_size": 2e8, "overlap_comm": None, "contiguous_gradients": True,
            "round_robin_gradients": False, "offload_optimizer": {"device": "cpu", "buffer_count": 4}}
    config = load_config(with_(zero_optimization=zero, prescale_gradients=False, memory_breakdown=True,
                               zero_allow_untested_optimizer=True), 1)
    assert config.no_effect == ("prescale_gradients", "memory_breakdown", "zero_allow_untested_optimizer",
                                "zero_optimization.allgather_partitions", "zero_optimization.allgather_bucket_size",
                                "zero_optimization.reduce_scatter", "zero_optimization.reduce_bucket_size",
                                "zero_optimization.overlap_comm", "zero_optimization.contiguous_gradients",
                                "zero_optimization.round_robin_gradients",
                                "zero_optimization.offload_optimizer.buffer_count")


# ---------------------------------------------------------------- other top-level keys


def test_other_top_level_keys():
    config = load_config(with_(gradient_clipping=1, steps_per_print=10, wall_clock_breakdown=True,
                               dataloader_drop_last=True, communication_data_type="FP32"), 1)
    assert (config.gradient_clipping, config.steps_per_print, config.wall_clock_breakdown,
            config.dataloader_drop_last, config.communication_data_type) == (1.0, 10, True, True, "fp32")
    assert load_config(with_(amp={"enabled": False}, sequence_parallel_size=1), 1).no_effect == ()


@pytest.mark.parametrize("changes, expected", [
    ({"gradient_clipping": -1.0}, "gradient_clipping must be a finite number >= 0, got -1.0"),
    ({"gradient_clipping": float("nan")}, "gradient_clipping must be a finite number >= 0, got nan"),
    ({"steps_per_print": 0}, "steps_per_print must be an integer >= 1, got 0"),
    ({"wall_clock_breakdown": "false"}, "wall_clock_breakdown must be true or false, got 'false' (str)"),
    ({"communication_data_type": "int8"}, "communication_data_type must be one of 'fp32', 'fp16', 'bf16'"),
    ({"amp": {"enabled": True, "opt_level": "O1"}}, "amp is a DeepSpeed feature that accelops does not support "
                                                    "(Apex AMP; use fp16 or bf16)"),
    ({"pipeline": {"stages": 2}}, "pipeline is a DeepSpeed feature"),
    ({"sequence_parallel_size": 2}, "sequence_parallel_size is a DeepSpeed feature"),
    ({"gradient_allreduce_op": "sum"}, "gradient_allreduce_op is a DeepSpeed feature"),
])
def test_bad_top_level_values(changes, expected):
    assert error(with_(**changes)).startswith(expected)
