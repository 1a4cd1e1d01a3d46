"""ds_report where numpy does not import: one numpy row says so; torch's "Failed to initialize NumPy" warning
(raised by torch at every import without numpy) stays out of the report and out of --verify's children."""
import json
import os
import subprocess
import sys

import pytest

TORCH_WARNING = "Failed to initialize NumPy"


@pytest.fixture
def no_numpy_env(tmp_path):
    """An environment whose Python cannot import numpy (a package on PYTHONPATH that raises
    ModuleNotFoundError, as a missing numpy does)."""
    stub = tmp_path / "no_numpy" / "numpy"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'numpy\'", name="numpy")\n')
    path = os.pathsep.join(p for p in (str(stub.parent), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    check = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert check.returncode == 0 and TORCH_WARNING in check.stderr, "the stub should reproduce torch's warning"
    return env


def _report(*args, env):
    return subprocess.run([sys.executable, "-m", "accelops", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_the_report_has_one_numpy_row_and_not_torchs_warning(no_numpy_env):
    result = _report(env=no_numpy_env)
    assert result.returncode == 0, result.stderr
    assert TORCH_WARNING not in result.stderr, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("numpy ")]
    assert len(rows) == 1 and "not available" in rows[0] and "pip install numpy" in rows[0], result.stdout
    assert f"UserWarning: {TORCH_WARNING}" not in result.stdout, result.stdout  # the row's text quotes it, once

    facts = json.loads(_report("--json", env=no_numpy_env).stdout)
    assert facts["numpy"]["version"] is None and "No module named 'numpy'" in facts["numpy"]["reason"]
    assert not any(TORCH_WARNING in w for w in facts["warnings"]), facts["warnings"]


def test_with_numpy_the_row_shows_its_version():
    numpy = pytest.importorskip("numpy")
    result = _report("--json", env=dict(os.environ))
    assert json.loads(result.stdout)["numpy"] == {"version": numpy.__version__, "reason": None}


def test_a_verify_child_does_not_repeat_torchs_warning(no_numpy_env, monkeypatch, capfd):
    from accelops.report.verify import _verify_in_child

    for name, value in no_numpy_env.items():
        monkeypatch.setenv(name, value)
    result = _verify_in_child({"name": "cpu_adam"})
    assert result["status"] == "PASS", result
    assert TORCH_WARNING not in capfd.readouterr().err


def test_numpy_is_a_dependency():
    from accelops.op_builder.setup_support import REQUIREMENTS

    assert "numpy" in REQUIREMENTS
