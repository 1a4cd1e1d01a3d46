"""Every front end's ``backend_reason`` says why its path runs: on the kernel path the op, its variant (CPU
tier) and where its module was loaded from (prebuilt, JIT cache, JIT build); on the torch path why not."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from accelops.ops import CPUAdagrad, CPUAdam, CPULion, FusedAdam, FusedLayerNorm, FusedLion
from accelops.ops.loader import CPU_FALLBACK_ENV, ORIGINS, KernelLoader

CPU_FRONT_ENDS = {
    "cpu_adam": lambda: CPUAdam([torch.nn.Parameter(torch.zeros(3))]),
    "cpu_adagrad": lambda: CPUAdagrad([torch.nn.Parameter(torch.zeros(3))]),
    "cpu_lion": lambda: CPULion([torch.nn.Parameter(torch.zeros(3))]),
    "cpu_layer_norm": lambda: FusedLayerNorm(8),
}


@pytest.mark.parametrize("op", sorted(CPU_FRONT_ENDS))
def test_the_kernel_path_names_op_tier_origin_and_file(op, monkeypatch):
    from accelops.op_builder.cpu_tier import detect_tier

    monkeypatch.delenv(CPU_FALLBACK_ENV, raising=False)
    front_end = CPU_FRONT_ENDS[op]()
    assert front_end.backend == "kernel"
    reason = front_end.backend_reason
    assert reason is not None
    assert reason.startswith(f"the compiled {op} op runs (CPU tier {detect_tier()}), loaded from "), reason
    assert any(f"loaded from {where}: " in reason for where in ORIGINS.values()), reason
    assert Path(reason.rsplit(": ", 1)[1]).is_file(), reason


@pytest.mark.parametrize("op", sorted(CPU_FRONT_ENDS))
def test_the_forced_torch_path_says_why(op, monkeypatch):
    monkeypatch.setenv(CPU_FALLBACK_ENV, "1")
    front_end = CPU_FRONT_ENDS[op]()
    assert front_end.backend == "torch"
    assert front_end.backend_reason == f"{CPU_FALLBACK_ENV} is set"


SHOW_REASON = ("import torch\nfrom accelops.ops import CPUAdam\n"
               "print(CPUAdam([torch.nn.Parameter(torch.zeros(2))]).backend_reason)\n")


def test_a_fresh_process_says_build_then_the_next_says_cache(tmp_path):
    env = dict(os.environ, ACCELOPS_CACHE_DIR=str(tmp_path / "cache"))
    env.pop(CPU_FALLBACK_ENV, None)
    said = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", SHOW_REASON], capture_output=True, text=True, env=env,
                             timeout=600)
        assert run.returncode == 0, run.stderr
        said.append(run.stdout.strip())
    assert f"loaded from {ORIGINS['build']}: {tmp_path / 'cache'}" in said[0], said
    assert f"loaded from {ORIGINS['cache']}: {tmp_path / 'cache'}" in said[1], said


class _FakeModule:
    __file__ = "/site-packages/accelops/ops_prebuilt/accelops_cpu_adam_avx2.so"


def test_a_prebuilt_module_is_named_as_such(monkeypatch):
    from accelops.accelerator import get_accelerator
    from accelops.op_builder.pipeline import Loaded

    monkeypatch.delenv(CPU_FALLBACK_ENV, raising=False)
    builder_class = type(get_accelerator().create_op_builder("CPUAdamBuilder"))
    monkeypatch.setattr(builder_class, "load_with_origin",
                        lambda self, verbose=True: Loaded(_FakeModule(), "prebuilt", "avx2"))
    loader = KernelLoader(builder_class, "unused {reason}", CPU_FALLBACK_ENV)
    assert loader.backend == "kernel"
    assert loader.backend_reason == (f"the compiled cpu_adam op runs (CPU tier avx2), loaded from the prebuilt "
                                     f"module installed with accelops: {_FakeModule.__file__}")
    assert loader.reason is None  # the torch path's reason stays None while the kernel runs


def test_an_op_loads_through_the_builder_next_to_it(monkeypatch):
    """Loading asks neither the accelerator nor the op registry: the front end's loader holds the builder class
    of its own folder (``accelops/ops/<op>/build.py``)."""
    import accelops.accelerator as accelerator
    from accelops.ops import registry
    from accelops.op_builder.pipeline import Loaded
    from accelops.ops.cpu_adam.build import CPUAdamBuilder

    def refuse(*args, **kwargs):
        raise AssertionError("an op load went through a lookup by name")

    monkeypatch.delenv(CPU_FALLBACK_ENV, raising=False)
    monkeypatch.setattr(accelerator, "get_accelerator", refuse)
    monkeypatch.setattr(registry, "builder_class", refuse)
    monkeypatch.setattr(registry, "builders", refuse)
    monkeypatch.setattr(CPUAdamBuilder, "load_with_origin",
                        lambda self, verbose=True: Loaded(_FakeModule(), "cache", "avx2"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed load would warn
        assert KernelLoader(CPUAdam._BUILDER, "failed: {reason}", CPU_FALLBACK_ENV).backend == "kernel"
    assert CPUAdam._BUILDER is CPUAdamBuilder


class _KernelLoaderStub:
    """A loaded CUDA op, as FusedAdam's and FusedLion's loaders are on a GPU."""

    kernel_reason = "the compiled fused_adam op runs (variant cuda), loaded from the JIT cache: /c/x.so"
    reason = None

    def module(self):
        return object()


@pytest.mark.parametrize("front_end", [FusedAdam, FusedLion])
def test_the_fused_optimizers_give_the_loaders_reason_on_the_kernel_path(front_end, monkeypatch):
    monkeypatch.setattr(front_end._STEP, "loader", _KernelLoaderStub())
    opt = front_end([torch.nn.Parameter(torch.zeros(3))])
    assert opt.backend == "torch" and opt.backend_reason == "no fused kernel for device cpu"
    monkeypatch.setattr(opt, "_devices", lambda: {"cuda"})  # as if the params were on a GPU
    assert opt.backend == "kernel" and opt.backend_reason == _KernelLoaderStub.kernel_reason
