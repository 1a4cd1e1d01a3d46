"""ds_report / python -m accelops: sections, JSON vs text, missing tools, --verify, flags, colour."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accelops.op_builder import CPUOpBuilder, all_ops

ANSI = "\033["


def run_report(*args, env=None, timeout=600):
    """Run ``python -m accelops`` with ``args``; returns the CompletedProcess (text, piped)."""
    return subprocess.run([sys.executable, "-m", "accelops", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout)


def env_without(tmp_path):
    """An environment with no compiler, no ninja and no CUDA toolkit reachable (an empty PATH folder)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = dict(os.environ, PATH=str(bin_dir), CXX=str(tmp_path / "no-such-c++"), CUDA_HOME=str(tmp_path / "no-cuda"))
    env.pop("CUDA_PATH", None)
    return env


@pytest.fixture(scope="module")
def plain():
    return run_report()


@pytest.fixture(scope="module")
def as_json():
    result = run_report("--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plain_report_has_every_section_and_op(plain):
    assert plain.returncode == 0, plain.stderr
    for heading in ("accelops environment", "accelerator", "ops (JIT"):
        assert heading in plain.stdout
    for label in ("accelops ", "python ", "torch ", "nvcc ", "c++ compiler", "ninja ", "cpu op tier",
                  "communication backend", "devices "):
        assert f"\n{label}" in plain.stdout, f"missing row {label!r}"
    for name in all_ops():
        assert f"\n{name} " in plain.stdout


def test_plain_report_is_quiet_and_uncoloured_when_piped(plain):
    assert plain.stderr == "", "the report must print nothing outside the report"
    assert ANSI not in plain.stdout


def test_console_script_gives_the_same_report(plain):
    script = Path(sys.executable).with_name("ds_report")
    if not script.exists():
        pytest.fail(f"ds_report console script not installed next to {sys.executable}; run pip install -e .")
    # The script's interpreter may be spelled python3 where the tests run python (a venv): compare the facts.
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    def without_interpreter(text):
        return [line for line in text.splitlines() if not line.startswith("python ")]

    assert without_interpreter(result.stdout) == without_interpreter(plain.stdout)
    as_script = json.loads(subprocess.run([str(script), "--json"], capture_output=True, text=True, timeout=300).stdout)
    here = json.loads(run_report("--json").stdout)
    for facts in (as_script, here):
        executable = Path(facts["python"].pop("executable"))
        assert executable.parent == Path(sys.executable).parent, executable
    assert as_script == here


def test_json_matches_the_text(plain, as_json):
    import torch

    from accelops import __version__
    from accelops.accelerator import get_accelerator

    assert as_json["schema"] == 1
    assert as_json["accelops"]["version"] == __version__
    assert as_json["torch"]["version"] == torch.__version__ and torch.__version__ in plain.stdout
    accelerator = get_accelerator()  # the same environment chooses the same accelerator
    assert as_json["accelerator"]["name"] == accelerator.name
    assert as_json["accelerator"]["communication_backend"] == accelerator.communication_backend_name()
    assert f"\naccelerator            {accelerator.name} (" in plain.stdout
    assert f"cpu op tier            {as_json['cpu']['tier']} " in plain.stdout
    lines = plain.stdout.splitlines()
    assert [row["name"] for row in as_json["ops"]] == sorted(all_ops())
    for row in as_json["ops"]:
        line = next(line for line in lines if line.startswith(row["name"] + " "))
        assert ("[OKAY]" in line) == row["compatible"], line
        for reason in row["reasons"]:
            assert f"not compatible: {reason}" in plain.stdout


def test_cuda_ops_say_why_on_cpu_only_torch(as_json):
    import torch

    if torch.version.cuda or torch.version.hip:
        pytest.skip("this torch has CUDA/ROCm")
    cuda_rows = [row for row in as_json["ops"] if row["kind"] == "cuda"]
    assert cuda_rows, "expected the CUDA ops in the registry"
    for row in cuda_rows:
        assert not row["compatible"] and "CPU-only build" in row["reasons"][0]


def test_ops_with_a_torch_path_say_they_still_run(plain, as_json):
    """FusedAdam runs on CPU tensors through its torch step: the report says so next to 'not compatible'."""
    rows = {row["name"]: row for row in as_json["ops"]}
    assert "pure-torch" in rows["fused_adam"]["torch_path"] and rows["cpu_adam"]["torch_path"] is None
    if not rows["fused_adam"]["compatible"]:
        line = next(line for line in plain.stdout.splitlines() if line.startswith("fused_adam "))
        assert line.endswith("torch path")
        assert "runs without it: FusedAdam steps with its pure-torch path" in plain.stdout


def test_missing_compiler_ninja_and_toolkit_become_rows_with_reasons(tmp_path):
    env = env_without(tmp_path)
    result = run_report("--json", env=env)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert not facts["cxx_compiler"]["found"] and "is not on PATH" in facts["cxx_compiler"]["reason"]
    assert not facts["ninja"]["found"] and "ninja not found" in facts["ninja"]["reason"]
    assert not facts["cuda_compiler"]["found"] and "nvcc not found" in facts["cuda_compiler"]["reason"]
    for row in facts["ops"]:
        assert not row["compatible"]
        text = " ".join(row["reasons"])
        assert "no C++ compiler" in text and "ninja is not installed" in text, row
    text = run_report(env=env)
    assert text.returncode == 0, text.stderr
    assert "not compatible: no C++ compiler" in text.stdout


def test_hide_flags(tmp_path):
    hidden = run_report("--hide_operator_status")
    assert hidden.returncode == 0 and "ops (JIT" not in hidden.stdout and "accelerator" in hidden.stdout
    env = env_without(tmp_path)  # every op has reasons here
    assert "not compatible:" in run_report(env=env).stdout
    quiet = run_report("--hide_errors_and_warnings", env=env)
    assert quiet.returncode == 0 and "ops (JIT" in quiet.stdout and "not compatible:" not in quiet.stdout


def test_odd_tool_output_and_bad_settings_become_rows(tmp_path):
    odd = tmp_path / "odd-c++"
    odd.write_text("#!/bin/sh\nprintf '\\377\\376 not utf-8\\n'\n")
    odd.chmod(0o755)
    env = dict(os.environ, CXX=str(odd), DS_ACCELERATOR="bogus", LOCAL_SIZE="abc")
    result = run_report("--json", env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    facts = json.loads(result.stdout)
    assert facts["cxx_compiler"]["found"] and "not utf-8" in facts["cxx_compiler"]["version"]
    assert facts["accelerator"]["name"] is None and "bogus" in facts["accelerator"]["reason"]
    text = run_report(env=env)
    assert text.returncode == 0 and "selection failed" in text.stdout and "bogus" in text.stdout


def test_verify_passes_for_the_cpu_ops():
    result = run_report("--verify", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    verify = {entry["name"]: entry for entry in json.loads(result.stdout)["verify"]}
    for name, cls in all_ops().items():
        if cls.KIND == "cpu":
            assert verify[name]["status"] == "PASS", verify[name]
            assert "max abs diff" in verify[name]["detail"]
        else:
            assert verify[name]["status"] in ("SKIP", "PASS"), verify[name]


def test_verify_fails_with_exit_1_when_a_front_end_falls_back():
    # With the fallback forced, the CPU front ends never run their ops: --verify must say FAIL.
    env = dict(os.environ, ACCELOPS_CPU_OPS_FALLBACK="1")
    result = run_report("--verify", "--json", env=env)
    assert result.returncode == 1, result.stdout
    verify = {entry["name"]: entry for entry in json.loads(result.stdout)["verify"]}
    cpu_ops = [name for name, cls in all_ops().items() if issubclass(cls, CPUOpBuilder)]
    for name in cpu_ops:  # the CPU ops with a front end that can fall back
        assert verify[name]["status"] == "FAIL" and "pure-torch fallback" in verify[name]["detail"], verify[name]
    assert verify["pin_memory"]["status"] == "PASS", verify["pin_memory"]  # no pure-torch path to fall back to
    text = run_report("--verify", env=env)
    assert text.returncode == 1 and f"verify: {len(cpu_ops)} failed" in text.stdout


def test_a_crashing_verify_child_is_a_fail_row(tmp_path, monkeypatch):
    from accelops.report import verify as report_verify

    crasher = tmp_path / "crash"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(0o755)
    monkeypatch.setattr(report_verify.sys, "executable", str(crasher))
    result = report_verify._verify_in_child({"name": "cpu_adam", "compatible": True})
    assert result["status"] == "FAIL" and "killed by SIGSEGV" in result["detail"]


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch, as_json):
    from accelops.report import render_text
    from accelops.report.text import use_colour

    class Terminal:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Terminal())
    assert any(ANSI in line for line in render_text(as_json, colour=True))
    assert not any(ANSI in line for line in render_text(as_json, colour=False))


def test_a_broken_builder_becomes_a_row_not_a_crash():
    from accelops.op_builder import CPUOpBuilder
    from accelops.report.op_rows import op_row

    class Broken(CPUOpBuilder):
        NAME = "broken"

        def is_compatible(self, verbose=False):
            raise OSError("probe exploded")

    row = op_row("broken", Broken)
    assert row["compatible"] is False and row["reasons"] == ["compatibility check failed: probe exploded"]


def test_unknown_flag_is_a_usage_error():
    result = run_report("--no-such-flag")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_device_count_errors_and_the_prebuilt_line_are_in_the_text():
    result = run_report(env=dict(os.environ, LOCAL_SIZE="abc"))
    assert result.returncode == 0, result.stderr
    assert "\ndevices                unknown (LOCAL_SIZE must be a positive integer, got 'abc')" in result.stdout
    assert "\nprebuilt ops " in result.stdout


@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
def test_a_closed_or_full_stdout_is_one_line_on_stderr_and_a_non_zero_exit(redirect):
    if redirect == ">/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    command = f'exec "{sys.executable}" -m accelops {redirect}'
    result = subprocess.run(["sh", "-c", command], capture_output=False, stderr=subprocess.PIPE, text=True,
                            timeout=300)
    assert result.returncode == 74, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ds_report: "), result.stderr
    assert "Traceback" not in result.stderr


def test_verify_that_checks_nothing_is_not_a_pass(tmp_path):
    import re

    env = env_without(tmp_path)  # no compiler, no ninja
    env["ACCELOPS_CACHE_DIR"] = str(tmp_path / "empty-cache")  # nothing cached either
    result = run_report("--verify", env=env)
    assert result.returncode == 1, result.stdout[-2000:]
    assert re.search(r"verify: nothing was checked \(0 passed, \d+ skipped\)", result.stdout), result.stdout[-2000:]


def test_verify_with_an_unusable_cpu_tier_skips_the_tiered_ops(tmp_path):
    """ACCELOPS_CPU_TIER=sse9 and nothing cached: every CPU-tier op is skipped; host ops (pin_memory), which have
    no tier, are still built and checked."""
    import torch

    if torch.version.cuda or torch.version.hip:
        pytest.skip("the GPU ops do not depend on the CPU tier")
    env = dict(os.environ, ACCELOPS_CPU_TIER="sse9", ACCELOPS_CACHE_DIR=str(tmp_path / "empty-cache"))
    result = run_report("--verify", "--json", env=env)
    verify = {entry["name"]: entry for entry in json.loads(result.stdout)["verify"]}
    for name, cls in all_ops().items():
        expected = "SKIP" if issubclass(cls, CPUOpBuilder) or cls.KIND == "cuda" else "PASS"
        assert verify[name]["status"] == expected, verify[name]
