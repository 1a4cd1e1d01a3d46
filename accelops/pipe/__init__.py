"""``deepspeed.pipe``: the names pipeline scripts import (``from deepspeed.pipe import PipelineModule,
LayerSpec, TiedLayerSpec``); they live in :mod:`accelops.runtime.pipe`."""
from ..runtime.pipe import LayerSpec, PipelineModule, TiedLayerSpec

__all__ = ["LayerSpec", "PipelineModule", "TiedLayerSpec"]
