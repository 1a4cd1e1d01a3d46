"""The Python versions we claim (pyproject's requires-python and classifiers, the README) agree with each other
and with what torch at our floor supports."""
import importlib.metadata
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _minimum(requires_python):
    match = re.fullmatch(r">=\s*3\.(\d+)", requires_python.split("#")[0].strip())
    assert match, f"requires-python should be '>=3.N', got {requires_python!r}"
    return 3, int(match.group(1))


def test_classifiers_start_at_requires_python_and_leave_no_gap():
    project = _project()
    low = _minimum(project["requires-python"])
    minors = sorted(int(c.rsplit(".", 1)[1]) for c in project["classifiers"]
                    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert minors and (3, minors[0]) == low, (minors, low)
    assert minors == list(range(minors[0], minors[-1] + 1)), minors
    assert "Programming Language :: Python :: 3 :: Only" in project["classifiers"]


def test_readme_names_the_same_minimum():
    low = _minimum(_project()["requires-python"])
    assert f"On a fresh machine (Python {low[0]}.{low[1]}+," in (ROOT / "README.md").read_text()


def test_requires_python_is_what_torch_at_our_floor_needs():
    from accelops.op_builder.setup_support import TORCH_FLOOR

    installed = importlib.metadata.version("torch")
    if ".".join(installed.split("+")[0].split(".")[:2]) != TORCH_FLOOR:
        pytest.skip(f"torch {installed} is not the floor {TORCH_FLOOR}; its Python range may differ")
    torch_needs = importlib.metadata.metadata("torch")["Requires-Python"]
    assert torch_needs and _minimum(torch_needs) == _minimum(_project()["requires-python"]), torch_needs
