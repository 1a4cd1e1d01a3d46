"""DeepSpeed's flops profiler (accelops.profiling.flops_profiler): counts against hand counts, per module;
get_model_profile's return values; the flops_profiler config section; and the engine printing the profile
at profile_step only (rank 0), with the numbers checked in what it prints."""
import re
import subprocess
import sys

import pytest
import torch

import accelops
from accelops.profiling.flops_profiler import (FlopsProfiler, get_model_profile, macs_to_string, number_to_string,
                                               params_to_string)
from accelops.runtime.config import load_config
from accelops.runtime.errors import ConfigError
from accelops.runtime.profiler_config import FlopsProfilerConfig

B = 3
# Linear(8,16) -> ReLU -> Linear(16,4), batch 3: a linear layer is 2 * B * in * out FLOPs (FlopCounterMode
# counts the matrix product; ReLU and the bias addition count 0).
L1, L2 = 2 * B * 8 * 16, 2 * B * 16 * 4
P1, P2 = 8 * 16 + 16, 16 * 4 + 4


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


# ---------------------------------------------------------------------------------------------- counting
def test_mlp_totals_and_per_module_values_match_a_hand_count():
    model = mlp()
    prof = FlopsProfiler(model)
    prof.start_profile()
    model(torch.randn(B, 8))
    prof.stop_profile()
    assert prof.get_total_flops() == L1 + L2 == 1152
    assert prof.get_total_macs() == (L1 + L2) // 2 == 576
    assert prof.get_total_params() == P1 + P2 == 212
    assert [prof.module_flops(m) for m in model] == [L1, 0, L2]
    assert [prof.module_macs(m) for m in model] == [L1 // 2, 0, L2 // 2]
    assert [prof.module_params(m) for m in model] == [P1, 0, P2]
    durations = [prof.module_duration(m) for m in model]
    assert all(d > 0 for d in durations) and prof.get_total_duration() >= sum(durations)
    assert prof.get_total_flops(as_string=True) == "1.15 K" and prof.get_total_macs(as_string=True) == "576 MACs"
    assert prof.get_total_params(as_string=True) == "212"
    model(torch.randn(B, 8))  # stopped: not counted
    assert prof.get_total_flops() == 1152
    prof.end_profile()
    assert prof.get_total_flops() == 0 and not prof.started
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


class Net(torch.nn.Module):
    """A container that is never called (ModuleList), a functional matmul in the parent, a module used twice."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])
        self.w = torch.nn.Parameter(torch.randn(4, 4))
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        x = x @ self.w
        return self.head(self.head(x)[:, :1].expand(-1, 4).contiguous())


def test_nested_modules_functional_ops_and_reuse():
    model = Net()
    prof = FlopsProfiler(model)
    prof.start_profile()
    model(torch.randn(B, 4))
    block, matmul, head = 2 * B * 4 * 4, 2 * B * 4 * 4, 2 * B * 4 * 2
    assert prof.module_flops(model.blocks[0]) == prof.module_flops(model.blocks[1]) == block
    assert prof.module_flops(model.blocks) == 2 * block  # not called itself: its children's sum
    assert prof.module_flops(model.head) == 2 * head  # called twice
    assert prof.get_total_flops() == 2 * block + matmul + 2 * head
    assert prof.get_total_params() == 2 * 20 + 16 + 10
    prof.end_profile()


def test_counts_come_from_flop_counter_mode_for_conv_bmm_and_attention():
    conv = torch.nn.Conv2d(2, 3, kernel_size=3)
    flops, macs, _ = get_model_profile(conv, input_shape=(1, 2, 5, 5), print_profile=False, as_string=False)
    assert macs == (1 * 3 * 3 * 3) * (2 * 3 * 3) and flops == 2 * macs  # outputs * MACs per output, no bias

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v), torch.bmm(q[0], k[0].transpose(1, 2))

    q = k = v = torch.randn(1, 2, 5, 8)
    flops, macs, params = get_model_profile(Attention(), args=[q, k, v], print_profile=False, as_string=False)
    attention = 2 * (2 * 5 * 5 * 8) * 2  # q @ k^T and weights @ v, each 2 * heads * L * S * d
    assert (flops, macs, params) == (attention + 2 * 2 * 5 * 5 * 8, (attention + 2 * 2 * 5 * 5 * 8) // 2, 0)


def test_ignore_list_drops_the_modules_own_profile_but_not_the_total():
    model = mlp()
    prof = FlopsProfiler(model)
    prof.start_profile(ignore_list=[torch.nn.Linear])
    model(torch.randn(B, 8))
    assert prof.module_flops(model[0]) == 0 and prof.get_total_flops() == L1 + L2
    prof.end_profile()


# ---------------------------------------------------------------------------------------------- get_model_profile
def test_get_model_profile_returns_deepspeeds_triple(capsys):
    assert get_model_profile(mlp(), input_shape=(B, 8), print_profile=False, as_string=False) == (1152, 576, 212)
    assert get_model_profile(mlp(), input_shape=(B, 8), print_profile=False) == ("1.15 K", "576 MACs", "212")
    by_kwargs = get_model_profile(mlp(), kwargs={"input": torch.randn(B, 8)}, print_profile=False, as_string=False)
    assert by_kwargs == (1152, 576, 212)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="input_shape, args or kwargs"):
        get_model_profile(mlp())


def test_get_model_profile_generate_mode_and_output_file(tmp_path, capsys):
    class Generator(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def generate(self, x):
            for _ in range(3):
                x = self.proj(x)
            return x

    path = tmp_path / "deep" / "profile.txt"
    result = get_model_profile(Generator(), input_shape=(B, 8), mode="generate", as_string=False,
                               output_file=str(path))
    assert result == (3 * 2 * B * 8 * 8, 3 * B * 8 * 8, 72)
    assert capsys.readouterr().out == ""
    text = path.read_text()
    assert "Profile Summary at step 1:" in text and "fwd flops per GPU:" in text
    assert summary(text)["fwd flops per GPU"] == "1.15 K (1152)"


def summary(text):
    """The summary's ``label: value`` lines as a dict."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z][^:]*):\s+(\S.*)$", line)
        if match and not line.startswith(("depth", "Profile", "FLOPs")):
            rows[match.group(1)] = match.group(2)
    return rows


def test_printed_profile_carries_the_counts(capsys):
    model = mlp()
    prof = FlopsProfiler(model)
    prof.print_model_profile()  # not started: prints nothing, as in DeepSpeed
    assert capsys.readouterr().out == ""
    prof.start_profile()
    model(torch.randn(B, 8))
    prof.print_model_profile(profile_step=5, top_modules=2)
    out = capsys.readouterr().out
    rows = summary(out)
    assert "Profile Summary at step 5:" in out
    assert rows["params per GPU"] == "212" and rows["fwd MACs per GPU"] == "576 MACs"
    assert rows["fwd flops per GPU"] == "1.15 K (1152)" and rows["fwd latency"].endswith("s")
    assert "world size" not in rows  # no engine
    assert "    MACs        - {'Linear': '576 MACs', 'ReLU': '0 MACs'}" in out  # depth 1, top 2 classes
    assert re.search(r"\(0\): Linear\(in_features=8, out_features=16, bias=True\): 144 = 67.92% Params, "
                     r"384 MACs = 66.67% MACs", out)
    assert (prof.flops, prof.macs, prof.params) == (1152, 576, 212)
    prof.end_profile()


def test_number_formats():
    assert number_to_string(1152) == "1.15 K" and number_to_string(384) == "384" and number_to_string(0) == "0"
    assert macs_to_string(2.5e9) == "2.5 GMACs" and params_to_string(1.3e9) == "1.3 B"
    assert number_to_string(1234, units="M", precision=3) == "0.001 M"


# ---------------------------------------------------------------------------------------------- config
def test_config_defaults_are_deepspeeds():
    config = load_config({"train_batch_size": 4}, 1).flops_profiler
    assert config == FlopsProfilerConfig(False, 0.0, 1, -1, 1, True, None)


def test_config_every_key_is_read():
    section = {"enabled": True, "recompute_fwd_factor": 1, "profile_step": 3, "module_depth": 2, "top_modules": 4,
               "detailed": False, "output_file": "prof.txt"}
    config = load_config({"train_batch_size": 4, "flops_profiler": section}, 1)
    assert config.flops_profiler == FlopsProfilerConfig(True, 1.0, 3, 2, 4, False, "prof.txt")
    assert config.no_effect == ()
    empty = load_config({"train_batch_size": 4, "flops_profiler": {"output_file": ""}}, 1)
    assert empty.flops_profiler.output_file is None  # DeepSpeed prints to stdout for ""


@pytest.mark.parametrize("section, expected", [
    ({"enabled": "yes"}, "flops_profiler.enabled must be true or false"),
    ({"profile_step": -1}, "flops_profiler.profile_step must be an integer >= 0"),
    ({"profile_step": 1.5}, "flops_profiler.profile_step must be an integer"),
    ({"module_depth": -2}, "flops_profiler.module_depth must be an integer >= -1"),
    ({"top_modules": 0}, "flops_profiler.top_modules must be an integer >= 1"),
    ({"recompute_fwd_factor": -0.5}, "flops_profiler.recompute_fwd_factor must be a finite number >= 0"),
    ({"detailed": 1}, "flops_profiler.detailed must be true or false"),
    ({"output_file": 3}, "flops_profiler.output_file must be a file path"),
    ({"profile_stp": 1}, "flops_profiler.profile_stp is not a known key; the closest known key is 'profile_step'"),
    (True, "flops_profiler must be an object"),
])
def test_config_bad_values_name_the_key(section, expected):
    with pytest.raises(ConfigError) as caught:
        load_config({"train_batch_size": 4, "flops_profiler": section}, 1)
    assert str(caught.value).startswith(expected)


# ---------------------------------------------------------------------------------------------- engine
def engine_with(flops_profiler, gradient_accumulation_steps=1):
    config = {"train_micro_batch_size_per_gpu": B, "gradient_accumulation_steps": gradient_accumulation_steps,
              "optimizer": {"type": "SGD", "params": {"lr": 0.01}}, "flops_profiler": flops_profiler}
    engine, *_ = accelops.initialize(model=mlp(), config=config)
    return engine


def train_step(engine):
    loss = engine(torch.randn(B, 8)).square().mean()
    engine.backward(loss)
    engine.step()


@pytest.mark.usefixtures("world_of_one")
def test_engine_prints_the_profile_at_profile_step_only(capsys):
    engine = engine_with({"enabled": True, "profile_step": 1, "recompute_fwd_factor": 0.5, "top_modules": 2})
    assert engine.flops_profiler_enabled() and engine.flops_profiler_profile_step() == 1
    assert (engine.flops_profiler_recompute_fwd_factor(), engine.flops_profiler_module_depth(),
            engine.flops_profiler_top_modules(), engine.flops_profiler_detailed(),
            engine.flops_profiler_output_file()) == (0.5, -1, 2, True, None)
    assert isinstance(engine.flops_profiler, FlopsProfiler) and engine.flops_profiler.model is engine.module
    train_step(engine)  # global_steps 0: nothing
    assert capsys.readouterr().out == ""
    train_step(engine)  # global_steps 1: profiled, printed at the end of step() (global_steps is 2 then)
    out = capsys.readouterr().out
    assert out.count("Profile Summary at step 2:") == 1
    rows = summary(out)
    assert (rows["world size"], rows["data parallel size"], rows["model parallel size"]) == ("1", "1", "1")
    assert (rows["batch size per GPU"], rows["train batch size"], rows["gradient accumulation steps"]) == (
        str(B), str(B), "1")
    assert rows["params per GPU"] == "212" and rows["fwd MACs per GPU"] == "576 MACs"
    assert rows["fwd flops per GPU"] == "1.15 K (1152)"
    assert rows["bwd flops per GPU = 2.5 * fwd flops per GPU (estimate)"] == "2.88 K (2880)"
    assert rows["fwd+bwd flops per GPU = 3.5 * fwd flops per GPU"] == "4.03 K (4032)"
    for key in ("fwd latency", "fwd latency (engine forward)", "bwd + step latency (forward end to step() end)",
                "iter latency (forward start to step() end)"):
        assert re.fullmatch(r"[0-9.]+ [mu]?s", rows[key]), (key, rows[key])
    assert float(rows["samples/second = batch size per GPU * world size / iter latency"]) > 0
    assert "(2): Linear(in_features=16, out_features=4, bias=True): 68 = 32.08% Params, 192 MACs" in out
    assert not engine.flops_profiler.started and not engine.module[0]._forward_hooks
    for _ in range(2):
        train_step(engine)
    assert capsys.readouterr().out == ""
    engine.destroy()


@pytest.mark.usefixtures("world_of_one")
def test_engine_writes_output_file_and_profiles_each_micro_batch(tmp_path, capsys):
    path = tmp_path / "flops.txt"
    engine = engine_with({"enabled": True, "profile_step": 0, "detailed": False, "output_file": str(path)},
                         gradient_accumulation_steps=2)
    train_step(engine)  # micro-batch 1 of step 0: printed at step 0, as DeepSpeed does
    assert "Profile Summary at step 0:" in path.read_text()
    train_step(engine)  # micro-batch 2 (the boundary): printed again, now at step 1; the file is overwritten
    text = path.read_text()
    assert text.count("Profile Summary") == 1 and "Profile Summary at step 1:" in text
    assert summary(text)["fwd flops per GPU"] == "1.15 K (1152)" and "Detailed Profile" not in text
    path.unlink()
    train_step(engine)
    assert not path.exists() and capsys.readouterr().out == ""
    engine.destroy()


@pytest.mark.usefixtures("world_of_one")
def test_engine_without_the_section_or_off_rank_0_does_nothing(capsys):
    engine = engine_with({"enabled": False, "profile_step": 0})
    assert engine.flops_profiler is None and not engine.flops_profiler_enabled()
    train_step(engine)
    engine.destroy()
    other = engine_with({"enabled": True, "profile_step": 0})
    other.global_rank = 1  # DeepSpeed profiles on global rank 0 only
    train_step(other)
    assert capsys.readouterr().out == "" and not other.flops_profiler.started
    other.destroy()


def test_reachable_as_deepspeed_profiling_in_a_fresh_process():
    code = ("import sys\n"
            "import accelops as deepspeed\n"
            "assert 'profiling' in dir(deepspeed)\n"
            "profiling = deepspeed.profiling\n"
            "print('torch' in sys.modules)\n"
            "from accelops.profiling.flops_profiler.profiler import FlopsProfiler\n"
            "print(deepspeed.profiling.flops_profiler.FlopsProfiler is FlopsProfiler)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True"]  # deepspeed.profiling itself imports no torch
