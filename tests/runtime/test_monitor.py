"""The monitors behind the config's tensorboard / csv_monitor / wandb / comet sections, in a world of one:
what the engine writes after each optimizer step (``Train/Samples/lr``, with fp16 ``Train/Samples/loss_scale``,
at the sample count), ``engine.monitor.write_events`` from client code, files read back; wandb and comet
through fake modules; a missing package is an ImportError naming the pip install."""
import csv
import sys
import types

import pytest
import torch

import accelops
from accelops.monitor import MonitorMaster
from accelops.runtime.monitor_config import CSVConfig, MonitorConfig

pytestmark = pytest.mark.usefixtures("world_of_one")


def make_engine(**sections):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    config = {"train_batch_size": 4, "gradient_accumulation_steps": 2,
              "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
              "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10, "warmup_max_lr": 0.01,
                                                            "warmup_type": "linear"}}, **sections}
    engine, *_ = accelops.initialize(model=model, config=config)
    return engine


def train(engine, optimizer_steps):
    """Run ``optimizer_steps`` boundary steps; returns (global_samples, lr, loss scale) after each."""
    seen = []
    gen = torch.Generator().manual_seed(1)
    for _ in range(optimizer_steps * engine.gradient_accumulation_steps()):
        x, y = torch.randn(2, 4, generator=gen), torch.randn(2, 2, generator=gen)
        engine.backward(torch.nn.functional.mse_loss(engine(x), y))
        engine.step()
        if engine.micro_steps % engine.gradient_accumulation_steps() == 0:
            seen.append((engine.global_samples, engine.get_lr()[0], float(engine.loss_scale)))
    return seen


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


# ---------------------------------------------------------------------------------------------- csv_monitor
def test_csv_monitor_writes_lr_at_each_optimizer_step(tmp_path):
    engine = make_engine(csv_monitor={"enabled": True, "output_path": str(tmp_path), "job_name": "job"})
    assert engine.monitor.enabled
    seen = train(engine, 3)
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["Train_Samples_lr.csv"]  # no loss_scale: fp32
    rows = read_csv(tmp_path / "job" / "Train_Samples_lr.csv")
    assert rows[0] == ["step", "lr"]
    assert [(int(s), float(v)) for s, v in rows[1:]] == [(samples, lr) for samples, lr, _ in seen]
    assert [int(s) for s, _ in rows[1:]] == [4, 8, 12]
    assert len({float(v) for _, v in rows[1:]}) == 3  # warmup: the lr after each step's scheduler step


def test_csv_monitor_fp16_writes_the_loss_scale(tmp_path):
    engine = make_engine(csv_monitor={"enabled": True, "output_path": str(tmp_path)},
                         fp16={"enabled": True, "initial_scale_power": 4, "loss_scale_window": 2})
    seen = train(engine, 4)
    rows = read_csv(tmp_path / "DeepSpeedJobName" / "Train_Samples_loss_scale.csv")
    assert rows[0] == ["step", "loss_scale"]
    assert [(int(s), float(v)) for s, v in rows[1:]] == [(samples, scale) for samples, _, scale in seen]
    assert {float(v) for _, v in rows[1:]} != {16.0}  # the scale grew: the value after each step's update


def test_client_events_and_a_resumed_job_append_without_a_second_header(tmp_path):
    section = {"csv_monitor": {"enabled": True, "output_path": str(tmp_path), "job_name": "j"}}
    engine = make_engine(**section)
    engine.monitor.write_events([("Eval/acc", 0.5, 10), ("Eval/acc", torch.tensor(0.75), 20)])
    engine.destroy()
    engine = make_engine(**section)
    engine.monitor.write_events([("Eval/acc", 0.875, 30)])
    assert read_csv(tmp_path / "j" / "Eval_acc.csv") == [["step", "acc"], ["10", "0.5"], ["20", "0.75"],
                                                         ["30", "0.875"]]
    with pytest.raises(TypeError, match="entry 0 must be a"):
        engine.monitor.write_events([("name", 1.0)])


def test_no_section_enabled_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = make_engine(csv_monitor={"enabled": False})
    assert not engine.monitor.enabled
    train(engine, 1)
    engine.monitor.write_events([("x", 1.0, 1)])
    assert list(tmp_path.iterdir()) == []


def test_monitor_master_writes_on_rank_zero_only(tmp_path):
    config = MonitorConfig(csv_monitor=CSVConfig(True, str(tmp_path), "j"))
    other = MonitorMaster(config, rank=1)
    assert other.enabled and other.monitors == ()
    other.write_events([("a", 1.0, 1)])
    assert not (tmp_path / "j").exists()


# ---------------------------------------------------------------------------------------------- tensorboard
def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    engine = make_engine(tensorboard={"enabled": True, "output_path": str(tmp_path), "job_name": "tb"},
                         fp16={"enabled": True, "initial_scale_power": 4})
    seen = train(engine, 3)
    engine.monitor.write_events([("Custom/value", 2.5, 7)])
    engine.destroy()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"Train/Samples/lr", "Train/Samples/loss_scale", "Custom/value"}
    lr = [(e.step, e.value) for e in events.Scalars("Train/Samples/lr")]
    assert lr == [(samples, pytest.approx(value, rel=1e-6)) for samples, value, _ in seen]
    assert [(e.step, e.value) for e in events.Scalars("Train/Samples/loss_scale")] == [(s, v) for s, _, v in seen]
    assert [(e.step, e.value) for e in events.Scalars("Custom/value")] == [(7, 2.5)]


def test_missing_tensorboard_is_a_clear_error_at_initialize(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    with pytest.raises(ImportError, match=r"'tensorboard' section is enabled .* `pip install tensorboard`"):
        make_engine(tensorboard={"enabled": True, "output_path": str(tmp_path)})


# ---------------------------------------------------------------------------------------------- wandb and comet
@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.calls = []
    module.init = lambda **kwargs: module.calls.append(("init", kwargs))
    module.log = lambda data, step=None, commit=None: module.calls.append(("log", data, step, commit))
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_init_and_log_calls(fake_wandb):
    engine = make_engine(wandb={"enabled": True, "group": "g", "team": "t", "project": "p"})
    assert fake_wandb.calls == [("init", {"project": "p", "group": "g", "entity": "t"})]
    seen = train(engine, 2)
    engine.monitor.write_events([("Custom/x", 3.0, 99)])
    assert fake_wandb.calls[1:] == [("log", {"Train/Samples/lr": lr}, samples, None) for samples, lr, _ in seen] + [
        ("log", {"Custom/x": 3.0}, 99, None)]


def test_wandb_defaults(fake_wandb):
    make_engine(wandb={"enabled": True})
    assert fake_wandb.calls == [("init", {"project": "deepspeed", "group": None, "entity": None})]


@pytest.fixture
def fake_comet(monkeypatch):
    module = types.ModuleType("comet_ml")
    module.__version__ = "3.49.1"
    module.calls = []

    class Experiment:
        def set_name(self, name):
            module.calls.append(("set_name", name))

        def __internal_api__log_metric__(self, name, value, step):
            module.calls.append(("metric", name, value, step))

    def start(**kwargs):
        module.calls.append(("start", kwargs))
        return Experiment()

    module.start = start
    monkeypatch.setitem(sys.modules, "comet_ml", module)
    return module


def test_comet_start_and_metrics_every_samples_log_interval(fake_comet):
    engine = make_engine(comet={"enabled": True, "samples_log_interval": 8, "project": "p", "workspace": "w",
                                "api_key": "k", "experiment_name": "run", "online": False})
    assert fake_comet.calls == [
        ("start", {"api_key": "k", "project": "p", "workspace": "w", "experiment_key": None, "mode": None,
                   "online": False}),
        ("set_name", "run")]
    seen = train(engine, 5)  # samples 4, 8, 12, 16, 20: sent at 4, 12 and 20 (8 samples apart at least)
    lr = {samples: value for samples, value, _ in seen}
    assert fake_comet.calls[2:] == [("metric", "Train/Samples/lr", lr[s], s) for s in (4, 12, 20)]


def test_old_comet_is_refused(fake_comet):
    fake_comet.__version__ = "3.40.2"
    with pytest.raises(ImportError, match=r'comet_ml 3.40.2 is older than 3.41.0; run `pip install "comet_ml>=3.41.0"`'):
        make_engine(comet={"enabled": True})


@pytest.mark.parametrize("section, package, pip", [("wandb", "wandb", "wandb"),
                                                    ("comet", "comet_ml", '"comet_ml>=3.41.0"')])
def test_missing_package_is_a_clear_error(monkeypatch, section, package, pip):
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=f"'{section}' section is enabled but the '{package}' package is not "
                                          f"installed; run `pip install {pip}`"):
        make_engine(**{section: {"enabled": True}})


def test_disabled_sections_import_nothing(monkeypatch):
    for package in ("wandb", "comet_ml"):
        monkeypatch.setitem(sys.modules, package, None)
    engine = make_engine(wandb={"enabled": False, "project": "p"}, comet={"enabled": False})
    assert not engine.monitor.enabled


# ---------------------------------------------------------------------------------------------- two ranks
def test_on_two_ranks_only_rank_zero_writes(tmp_path):
    import json
    import os

    from helpers import free_port, launch_free_environ, run_all

    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monitor_worker.py")
    port = str(free_port())
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    outputs = run_all([([sys.executable, worker, str(tmp_path)],
                        launch_free_environ(RANK=str(rank), LOCAL_RANK=str(rank), **env)) for rank in range(2)], 240)
    results = []
    for rank, (code, out, err) in enumerate(outputs):
        assert code == 0, f"rank {rank} exited with {code}:\n{err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [(r["rank"], r["enabled"], r["writers"]) for r in results] == [(0, True, 1), (1, True, 0)]
    assert results[0]["samples"] == [0, 8, 16, 24]
    lr_rows = read_csv(tmp_path / "job" / "Train_Samples_lr.csv")
    assert lr_rows == [["step", "lr"], ["8", "0.1"], ["16", "0.1"], ["24", "0.1"]]  # once each, not once per rank
    assert read_csv(tmp_path / "job" / "Client_rank.csv") == [["step", "rank"], ["1", "0.0"]]


def test_importing_the_monitors_imports_no_optional_package_and_no_torch():
    import subprocess

    code = ("import sys, accelops.monitor.monitor as monitor; m = monitor.MonitorMaster; "
            "print(m.__name__, sorted(n for n in ('tensorboard', 'wandb', 'comet_ml', 'torch') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MonitorMaster", "[]"]
