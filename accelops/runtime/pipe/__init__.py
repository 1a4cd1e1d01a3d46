"""Pipeline parallelism (``deepspeed.pipe`` and ``deepspeed.runtime.pipe``): :class:`PipelineModule`,
:class:`LayerSpec`, :class:`TiedLayerSpec` and the process topologies; the engine for a pipeline is
:mod:`accelops.runtime.pipe.engine`, built on ``torch.distributed.pipelining``."""
from .module import LayerSpec, PipelineError, PipelineModule, TiedLayerSpec
from .topology import PipeDataParallelTopology, PipeModelDataParallelTopology, ProcessTopology

__all__ = ["LayerSpec", "PipeDataParallelTopology", "PipeModelDataParallelTopology", "PipelineError",
           "PipelineModule", "ProcessTopology", "TiedLayerSpec"]
