"""Prebuilds: DS_BUILD_* selection, and a wheel built here whose op loads without compiling."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from accelops.op_builder import ALL_OPS, OpBuildError, cpu_tier, op_library, prebuilt

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def build_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("DS_BUILD_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_nothing_requested_means_no_prebuild(build_env):
    assert not prebuilt.requested()
    build_env.setenv("DS_BUILD_OPS", "0")
    assert not prebuilt.requested()
    build_env.setenv("DS_BUILD_CPU_TIERS", "avx2")
    assert not prebuilt.requested()


def test_build_ops_skips_incompatible_with_reason(build_env):
    build_env.setenv("DS_BUILD_OPS", "1")
    build_env.setenv("DS_BUILD_CPU_LAYER_NORM", "0")
    build_env.setattr(torch.version, "cuda", None)
    chosen, notes = prebuilt.plan(ALL_OPS)
    assert chosen["cpu_adam"] == cpu_tier.platform_tiers()
    assert "cpu_layer_norm" not in chosen and "fused_adam" not in chosen
    assert any(n.startswith("skipped op fused_adam:") and "CPU-only build" in n for n in notes)


def test_forced_op_that_cannot_build_fails_loudly(build_env):
    build_env.setenv("DS_BUILD_FUSED_ADAM", "1")
    build_env.setattr(torch.version, "cuda", None)
    with pytest.raises(OpBuildError, match="DS_BUILD_FUSED_ADAM=1 but op fused_adam: .*CPU-only build"):
        prebuilt.plan(ALL_OPS)


def test_bad_tier_list(build_env):
    build_env.setenv("DS_BUILD_OPS", "1")
    build_env.setenv("DS_BUILD_CPU_TIERS", "avx2,sse9")
    with pytest.raises(ValueError, match="unknown tiers \\['sse9'\\]"):
        prebuilt.plan(ALL_OPS)


def test_no_torch_in_build_env_says_no_build_isolation(tmp_path):
    script = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, %r); "
              "from op_builder.setup_support import setup_kwargs; setup_kwargs()" % str(REPO))
    env = {**os.environ, "DS_BUILD_OPS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode != 0 and "--no-build-isolation" in result.stderr


@pytest.mark.slow
def test_prebuilt_wheel_loads_without_compiling(tmp_path):
    tier = cpu_tier.detect_tier()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS_BUILD_")}
    env.update(DS_BUILD_CPU_LION="1", DS_BUILD_CPU_TIERS=f"{tier},scalar", MAX_JOBS="2")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w",
                    str(tmp_path / "wheel"), str(REPO)], check=True, env=env, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    assert "-py3-none-" in wheel.name and not wheel.name.endswith("-any.whl")  # platform only, no Python ABI
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    floor = op_library.abi_floor()
    assert f"Requires-Dist: torch>={floor}" in metadata  # the ABI floor, not a pin
    with zipfile.ZipFile(wheel) as zf:
        info = json.loads(zf.read("accelops/build_info.json"))
        objects = [n for n in zf.namelist() if n.startswith("accelops/prebuilt/")]
    variants = {name: entry["variants"] for name, entry in info["ops"].items()}
    assert variants == {"cpu_lion": [tier, "scalar"]} and info["torch"] == torch.__version__
    assert info["abi_floor"] == floor
    builder = ALL_OPS["cpu_lion"]()  # each module records the source key of what it was built from
    assert info["ops"]["cpu_lion"]["source_keys"] == {v: builder.source_key(v) for v in (tier, "scalar")}
    assert len(objects) == 2
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    check = (
        "import subprocess, torch.utils.cpp_extension as c\n"
        "def forbidden(*a, **k): raise AssertionError('compiled or spawned a process')\n"
        "c.load = subprocess.Popen = forbidden\n"
        "from accelops.accelerator import get_accelerator\n"
        "m = get_accelerator().create_op_builder('CPULionBuilder').load()\n"
        "print(m.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "ACCELOPS_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(target / "accelops" / "prebuilt" / f"accelops_cpu_lion_{tier}"))
    # A later torch loads it too (the stable ABI); an older one than its floor skips it, with the reason.
    later = check.replace("from accelops", "import torch; torch.__version__ = '2.99.0'\nfrom accelops")
    result = subprocess.run([sys.executable, "-c", later], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    older = check.replace("from accelops", "import torch; torch.__version__ = '2.1.0'\nfrom accelops")
    env["CXX"] = "/nonexistent/c++"  # and no compiler, so the load fails naming both causes
    result = subprocess.run([sys.executable, "-c", older], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "prebuilt module skipped: built against torch" in result.stderr and "no C++ compiler" in result.stderr
    # ds_report --verify where nothing can compile: the prebuilt op is checked (PASS), never skipped.
    env["PATH"] = str(tmp_path / "empty-bin")  # no compiler, no ninja; the interpreter is called by full path
    (tmp_path / "empty-bin").mkdir()
    env["ACCELOPS_CPU_TIER"] = "scalar"  # the other installed variant, so the report must show scalar
    report = subprocess.run([sys.executable, "-m", "accelops", "--verify", "--json"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=600)
    facts = json.loads(report.stdout)
    rows = {row["name"]: row for row in facts["ops"]}
    assert not rows["cpu_lion"]["compatible"] and rows["cpu_lion"]["source"] == "prebuilt", rows["cpu_lion"]
    assert rows["cpu_lion"]["variant"] == "scalar"
    verify = {entry["name"]: entry for entry in facts["verify"]}
    assert verify["cpu_lion"]["status"] == "PASS", verify["cpu_lion"]
    assert (verify["cpu_lion"]["origin"], verify["cpu_lion"]["variant"]) == ("prebuilt", "scalar")
    assert verify["cpu_adam"]["status"] == "SKIP" and "not buildable" in verify["cpu_adam"]["detail"]
    assert report.returncode == 0, report.stderr  # one op passed, none failed


def _info(**overrides):
    floor = op_library.abi_floor()
    info = {"torch": torch.__version__, "abi_floor": floor, "cuda": torch.version.cuda, "hip": torch.version.hip,
            "accelerator": "cuda",
            "ops": {"cpu_adam": {"variants": ["avx512", "avx2", "scalar"]}}}
    info.update(overrides)
    return info


def test_prebuilt_cpu_op_ignores_the_accelerator_and_takes_the_best_installed_tier(monkeypatch):
    monkeypatch.delenv("ACCELOPS_CPU_TIER", raising=False)
    monkeypatch.setattr(cpu_tier, "supported_tiers", lambda: ["avx512", "avx2", "scalar"])
    builder = ALL_OPS["cpu_adam"]()
    # built on a CUDA host, used on a CPU-only one; a wheel without the avx512 tier falls back to avx2
    assert prebuilt._choose(_info(), builder) == ("avx512", None)
    only = _info(ops={"cpu_adam": {"variants": ["avx2", "scalar"]}})
    assert prebuilt._choose(only, builder) == ("avx2", None)


def test_prebuilt_mismatches_and_malformed_info_are_reasons(monkeypatch):
    builder = ALL_OPS["cpu_adam"]()
    variant, reason = prebuilt._choose(_info(abi_floor="99.0"), builder)
    assert variant is None and reason.startswith("built against torch 99.0's stable ABI, newer than this torch")
    variant, reason = prebuilt._choose(_info(abi_floor=None), builder)
    assert variant is None and "records no ABI floor" in reason
    variant, reason = prebuilt._choose(_info(ops={"cpu_adam": {"tiers": "avx2"}}), builder)
    assert variant is None and "no valid variant list for op cpu_adam" in reason
    monkeypatch.setenv("ACCELOPS_CPU_TIER", "scalar")
    assert prebuilt._choose(_info(ops={"cpu_adam": {"variants": ["avx2"]}}), builder) == (
        None, "no build for this machine's scalar (built: avx2)")


def test_unknown_op_variable_is_an_error_naming_the_known_ops(build_env):
    build_env.setenv("DS_BUILD_CPU_ADAMM", "1")
    with pytest.raises(ValueError, match="DS_BUILD_CPU_ADAMM: no such op; known: .*DS_BUILD_CPU_ADAM,"):
        prebuilt.plan(ALL_OPS)
    build_env.setenv("DS_BUILD_CPU_ADAMM", "0")  # a DeepSpeed recipe excluding an op accelops lacks
    build_env.setenv("DS_BUILD_OPS", "1")
    build_env.setattr(torch.version, "cuda", None)
    chosen, notes = prebuilt.plan(ALL_OPS)
    assert "cpu_adam" in chosen and "ignored DS_BUILD_CPU_ADAMM=0: accelops has no such op" in notes


def test_a_tier_foreign_to_the_platform_is_an_error_before_building(build_env, monkeypatch):
    build_env.setenv("DS_BUILD_OPS", "1")
    build_env.setenv("DS_BUILD_CPU_TIERS", "neon")
    monkeypatch.setattr(cpu_tier, "platform_tiers", lambda machine="": ["avx512", "avx2", "scalar"])
    monkeypatch.setattr(ALL_OPS["cpu_adam"], "is_compatible", lambda self, verbose=False: pytest.fail("checked ops"))
    with pytest.raises(ValueError, match="neon cannot be built on this platform; its tiers are avx512, avx2, scalar"):
        prebuilt.plan(ALL_OPS)


def test_a_prebuild_that_builds_nothing_says_why(build_env, monkeypatch, capsys):
    from accelops.op_builder import setup_support

    build_env.setenv("DS_BUILD_OPS", "1")
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    kwargs = setup_support.setup_kwargs()
    assert "ext_modules" not in kwargs and kwargs["install_requires"] == setup_support.REQUIREMENTS
    err = capsys.readouterr().err
    assert "skipped op cpu_adam: no C++ compiler" in err and "none can be built here" in err


def test_a_prebuilt_module_of_other_sources_is_not_used(monkeypatch):
    builder = ALL_OPS["cpu_adam"]()
    tier = builder.variant()
    info = _info(ops={"cpu_adam": {"variants": [tier], "source_keys": {tier: "0" * 64}}})
    monkeypatch.setattr(prebuilt, "read_build_info", lambda: info)
    status = prebuilt.prebuilt_status(builder)
    assert status["installed"] and not status["usable"] and "built from other sources or flags" in status["reason"]
    info["ops"]["cpu_adam"]["source_keys"][tier] = builder.source_key(tier)
    assert prebuilt.prebuilt_status(builder)["usable"]


def test_a_cpu_op_built_with_cpu_torch_loads_under_any_later_torch_build(monkeypatch):
    monkeypatch.delenv("ACCELOPS_CPU_TIER", raising=False)
    monkeypatch.setattr(cpu_tier, "supported_tiers", lambda: ["avx2", "scalar"])
    built_on_cpu = _info(torch="2.13.0+cpu", abi_floor="2.13", cuda=None, hip=None, accelerator="cpu",
                         ops={"cpu_adam": {"variants": ["avx2"]}, "fused_adam": {"variants": ["cuda"]}})
    for later in ("2.13.0+cu130", "2.13.1+cu130", "2.14.1+cu130", "3.0.0"):
        monkeypatch.setattr(torch, "__version__", later)
        monkeypatch.setattr(torch.version, "cuda", "13.0")
        assert prebuilt._choose(built_on_cpu, ALL_OPS["cpu_adam"]()) == ("avx2", None), later
    variant, reason = prebuilt._choose(built_on_cpu, ALL_OPS["fused_adam"](accelerator_name="cuda"))
    assert variant is None and reason == "built for CUDA major None, this machine has 13"
    built_on_cu128 = dict(built_on_cpu, cuda="12.8", accelerator="cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.9")  # the same CUDA major: usable
    assert prebuilt._choose(built_on_cu128, ALL_OPS["fused_adam"](accelerator_name="cuda")) == ("cuda", None)
    monkeypatch.setattr(torch, "__version__", "2.12.0+cu128")  # older than the floor
    assert prebuilt._choose(built_on_cpu, ALL_OPS["cpu_adam"]())[1].startswith("built against torch 2.13's")
