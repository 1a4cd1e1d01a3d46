"""The monitor sections of the config (tensorboard, csv_monitor, wandb, comet): DeepSpeed 0.19's keys and
defaults, read strictly (a bad key is a ConfigError naming it)."""
import pytest

from accelops.runtime.config import load_config
from accelops.runtime.errors import ConfigError
from accelops.runtime.monitor_config import CometConfig, CSVConfig, MonitorConfig, TensorBoardConfig, WandbConfig


def with_(**sections):
    return {"train_batch_size": 4, **sections}


def error(config):
    with pytest.raises(ConfigError) as caught:
        load_config(config, 1)
    return str(caught.value)


def test_defaults_are_deepspeeds():
    monitor = load_config(with_(), 1).monitor
    assert monitor == MonitorConfig() and not monitor.enabled
    assert monitor.tensorboard == TensorBoardConfig(False, "", "DeepSpeedJobName")
    assert monitor.csv_monitor == CSVConfig(False, "", "DeepSpeedJobName")
    assert monitor.wandb == WandbConfig(False, None, None, "deepspeed")
    assert monitor.comet == CometConfig(False, 100, None, None, None, None, None, None, None)


def test_every_key_is_read():
    config = load_config(with_(
        tensorboard={"enabled": True, "output_path": "/tmp/tb", "job_name": "run1"},
        csv_monitor={"enabled": False, "output_path": "out", "job_name": "j"},
        wandb={"enabled": True, "group": "g", "team": "t", "project": "p"},
        comet={"enabled": True, "samples_log_interval": 8, "project": "p", "workspace": "w", "api_key": "k",
               "experiment_name": "e", "experiment_key": "a" * 32, "online": False, "mode": "get_or_create"}), 1)
    monitor = config.monitor
    assert monitor.enabled and config.no_effect == ()
    assert monitor.tensorboard == TensorBoardConfig(True, "/tmp/tb", "run1")
    assert monitor.csv_monitor == CSVConfig(False, "out", "j")
    assert monitor.wandb == WandbConfig(True, "g", "t", "p")
    assert monitor.comet == CometConfig(True, 8, "p", "w", "k", "e", "a" * 32, False, "get_or_create")
    assert "'k'" not in repr(monitor.comet)  # the api key stays out of logs


@pytest.mark.parametrize("section", ["tensorboard", "csv_monitor"])
def test_any_one_section_enables_the_monitor(section):
    assert load_config(with_(**{section: {"enabled": True}}), 1).monitor.enabled


@pytest.mark.parametrize("sections, expected", [
    ({"tensorboard": {"enabled": True, "outputpath": "x"}},
     "tensorboard.outputpath is not a known key; the closest known key is 'output_path'"),
    ({"csv_monitor": {"job": "x"}}, "csv_monitor.job is not a known key; the closest known key is 'job_name'"),
    ({"wandb": {"entity": "me"}}, "wandb.entity is not a known key"),
    ({"comet": {"samples_log_intervals": 5}},
     "comet.samples_log_intervals is not a known key; the closest known key is 'samples_log_interval'"),
    ({"tensorboard": {"enabled": "yes"}}, "tensorboard.enabled must be true or false"),
    ({"csv_monitor": {"output_path": 3}}, "csv_monitor.output_path must be a string"),
    ({"csv_monitor": {"job_name": "a/b"}}, "csv_monitor.job_name must be a non-empty folder name"),
    ({"tensorboard": {"job_name": ""}}, "tensorboard.job_name must be a non-empty folder name"),
    ({"wandb": {"project": None}}, "wandb.project must be a string"),
    ({"wandb": {"team": 7}}, "wandb.team must be a string"),
    ({"comet": {"samples_log_interval": 0}}, "comet.samples_log_interval must be an integer >= 1"),
    ({"comet": {"mode": "append"}}, "comet.mode must be one of 'get', 'create', 'get_or_create'"),
    ({"comet": {"experiment_key": "short"}}, "comet.experiment_key must be an alphanumeric string of 32 to 50"),
    ({"comet": {"online": 1}}, "comet.online must be true or false"),
    ({"wandb": True}, "wandb must be an object"),
])
def test_bad_keys_name_the_key(sections, expected):
    assert error(with_(**sections)).startswith(expected)


def test_auto_is_refused_in_a_monitor_section():
    assert error(with_(tensorboard={"enabled": True, "output_path": "auto"})).startswith("tensorboard.output_path")
