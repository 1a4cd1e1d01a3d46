"""``initialize``: DeepSpeed's entry point, returning ``(engine, optimizer, training_dataloader,
lr_scheduler)``.

DeepSpeed facts (deepspeed/__init__.py ``initialize``): a model is required; the process group is set up
first (``init_distributed`` with ``distributed_port`` and ``dist_init_required``); ``config_params`` is the
older name of ``config``; the config comes from ``config`` or from ``args.deepspeed_config`` (the
deprecated ``args.deepscale_config`` is moved there), and giving it both ways is an error; the returned
optimizer, dataloader and scheduler are the engine's ``optimizer``, ``training_dataloader`` and
``lr_scheduler`` (None where there is none). A client optimizer overrides the config's, a client
scheduler (or a callable taking the optimizer) the config's.

A ``deepspeed.pipe.PipelineModule`` gets the pipeline engine (:mod:`accelops.runtime.pipe.engine`), whose
batch sizes count the data-parallel ranks (world size / stages). accelops has no model parallelism:
``mpu`` and ``mesh_param`` must be None.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from .._logging import get_logger
from .errors import ConfigError

logger = get_logger(__name__)
TORCH_DISTRIBUTED_DEFAULT_PORT = 29500


def _config_source(args: Any, config: Any, config_params: Any) -> Any:
    """The config argument to read, by DeepSpeed's rules (module docstring)."""
    if config is None and config_params is not None:
        config = config_params
    from_args = getattr(args, "deepspeed_config", None)
    old = getattr(args, "deepscale_config", None)
    if old is not None:
        if from_args is not None:
            raise ConfigError("", f"args has both deepscale_config ({old!r}, deprecated) and deepspeed_config "
                              f"({from_args!r}); give only --deepspeed_config")
        logger.warning("--deepscale_config is deprecated, please use --deepspeed_config")
        from_args = old
    if from_args is not None:
        if config is not None:
            raise ConfigError("", f"the config was given twice: as args.deepspeed_config ({from_args!r}) and as "
                              f"initialize(config=...); give it one way")
        config = from_args
    if config is None:
        raise ConfigError("", "no DeepSpeed config: pass initialize(config=<dict or JSON path>) or args with "
                          "--deepspeed_config (see accelops.add_config_arguments)")
    return config


def _is_pipeline(model: Any) -> bool:
    """True for a ``deepspeed.pipe.PipelineModule`` (whose module is imported only when one exists)."""
    import sys

    module = sys.modules.get("accelops.runtime.pipe.module")
    return module is not None and isinstance(model, module.PipelineModule)


def initialize(args: Any = None, model: Any = None, optimizer: Any = None, model_parameters: Any = None,
               training_data: Any = None, lr_scheduler: Any = None,
               distributed_port: int = TORCH_DISTRIBUTED_DEFAULT_PORT, mpu: Any = None,
               dist_init_required: Optional[bool] = None, collate_fn: Optional[Callable] = None, config: Any = None,
               mesh_param: Any = None, config_params: Any = None) -> Tuple[Any, Any, Any, Any]:
    """Build the training engine (DeepSpeed's signature and return value; module docstring).

    Side effects: initialises ``torch.distributed`` unless it is (``accelops.comm.init_distributed``:
    torchrun/MPI/SLURM variables, a world of one without them; ``dist_init_required=False`` requires an
    existing group), moves the model to this rank's device and wraps it (DDP, or FSDP2 in place).
    Errors: ConfigError for the config (named key), TypeError/ValueError for bad arguments,
    DistributedInitError for the process group."""
    if model is None:
        raise ValueError("initialize() requires a model (model=torch.nn.Module)")
    if mpu is not None:
        raise ValueError("initialize(mpu=...): accelops has no model parallelism; pass mpu=None")
    if mesh_param is not None:
        raise ValueError("initialize(mesh_param=...): accelops has no sequence/model parallel mesh; pass "
                         "mesh_param=None")
    source = _config_source(args, config, config_params)

    from accelops.accelerator import get_accelerator
    from accelops.comm import init_distributed

    from .config import load_config
    from .engine import DeepSpeedEngine

    info = init_distributed(distributed_port=distributed_port, dist_init_required=dist_init_required)
    pipeline = _is_pipeline(model)
    data_parallel = info.world_size // model.num_stages if pipeline else info.world_size
    engine_config = load_config(source, data_parallel)
    import torch

    device = torch.device(get_accelerator().current_device_name())
    engine_class = DeepSpeedEngine
    if pipeline:
        from .pipe.engine import PipelineEngine as engine_class
    engine = engine_class(model, engine_config, rank=info.rank, local_rank=info.local_rank,
                             world_size=info.world_size, device=device, args=args, optimizer=optimizer,
                             model_parameters=model_parameters, training_data=training_data,
                             lr_scheduler=lr_scheduler, collate_fn=collate_fn, raw_config=source)
    return engine, engine.optimizer, engine.training_dataloader, engine.lr_scheduler
