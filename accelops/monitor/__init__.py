"""DeepSpeed's monitors (``deepspeed.monitor``): the writers behind the config's ``tensorboard``,
``csv_monitor``, ``wandb`` and ``comet`` sections, and :class:`MonitorMaster`, which the engine keeps as
``engine.monitor`` and calls with ``write_events([(name, value, step), ...])``.

Each optional package (``tensorboard``, ``wandb``, ``comet_ml``) is imported only when its section is
enabled; a missing one is an ImportError naming the ``pip install`` that fixes it, raised when the engine
is made. Only rank 0 writes, as in DeepSpeed.
"""
from .monitor import Monitor, MonitorMaster

__all__ = ["Monitor", "MonitorMaster"]
