"""A wheel and an sdist built from a fresh copy of the tree hold every module; the wheel imports from itself.

The copy holds only what git tracks (what a fresh clone has), so files left in the working tree by
earlier builds cannot hide a missing package. Slow: each test builds with pip.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: installed package -> source folder (setup.py's mapping)
ROOTS = {"accelops": "accelops", "accelops.accelerator": "accelerator", "accelops.op_builder": "op_builder"}

pytestmark = pytest.mark.slow


def tracked_files():
    """Paths (relative to the repo) that a fresh clone has: git's list, else the tree without build output."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {"build", "dist", ".git", "__pycache__", ".pytest_cache"}
        return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(REPO).parts) and p.suffix not in (".so", ".pyc")]


def expected_modules():
    """Installed module names (``accelops.comm.init``) of every Python file under the mapped roots."""
    modules = set()
    for package, folder in ROOTS.items():
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules.add(".".join([package, *parts]))
    return modules


def expected_packages():
    return sorted(m for m in expected_modules() if (REPO / module_file(m)).name == "__init__.py")


def module_file(module):
    """The source path (relative to the repo) of an installed module name."""
    for package, folder in sorted(ROOTS.items(), key=lambda kv: -len(kv[0])):
        if module == package or module.startswith(package + "."):
            rest = module[len(package):].lstrip(".").split(".") if module != package else []
            base = Path(folder, *rest)
            return base / "__init__.py" if (REPO / base).is_dir() else base.with_suffix(".py")
    raise KeyError(module)


@pytest.fixture(scope="module")
def fresh_tree(tmp_path_factory):
    """A copy of the tracked files, as a fresh clone would have them."""
    tree = tmp_path_factory.mktemp("clone") / "accelops"
    for name in tracked_files():
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return tree


def build_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("DS_BUILD_")}


def pip_wheel(source, out, env=None):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(out),
                    str(source)], check=True, env=env or build_env(), capture_output=True, text=True)
    return next(Path(out).glob("*.whl"))


def wheel_modules(names):
    return {n[:-3].replace("/", ".").replace(".__init__", "") for n in names if n.endswith(".py")}


def test_wheel_holds_every_module_and_imports_from_itself(fresh_tree, tmp_path):
    wheel = pip_wheel(fresh_tree, tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    missing = expected_modules() - wheel_modules(names)
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    assert any(n.startswith("accelops/csrc/") and n.endswith(".cu") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith("accelops/prebuilt/") or n == "accelops/build_info.json" for n in names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = ("import importlib, json, sys\n"
            "files = {m: importlib.import_module(m).__file__ for m in json.loads(sys.argv[1])}\n"
            "print(json.dumps(files))\n")
    env = {**build_env(), "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(expected_packages())], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    elsewhere = {m: f for m, f in files.items() if not f.startswith(str(site))}
    assert not elsewhere, f"imported from outside the installed wheel: {elsewhere}"


def test_sdist_holds_every_module_the_tests_and_the_license(fresh_tree, tmp_path):
    out = tmp_path / "sdist"
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=fresh_tree, capture_output=True, text=True,
                            env=build_env())
    assert result.returncode == 0, result.stderr
    sdist = out / result.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    wanted = {str(module_file(m)) for m in expected_modules()}
    assert not wanted - names, f"sources missing from the sdist: {sorted(wanted - names)}"
    tests = {n for n in tracked_files() if n.startswith("tests/")}
    assert not tests - names, f"tests missing from the sdist: {sorted(tests - names)[:10]}"
    assert {"LICENSE", "README.md", "setup.py", "pyproject.toml"} <= names
    assert not any(n.endswith((".so", ".pyc")) for n in names)


def test_a_plain_build_after_a_prebuild_ships_no_stale_ops(fresh_tree, tmp_path):
    """pip builds a local folder in place (its build/ folder stays): a later build without DS_BUILD_* must not
    pick up the earlier build's compiled ops or build_info.json."""
    env = {**build_env(), "DS_BUILD_CPU_LION": "1", "DS_BUILD_CPU_TIERS": "scalar", "MAX_JOBS": "2"}
    first = pip_wheel(fresh_tree, tmp_path / "first", env)
    with zipfile.ZipFile(first) as zf:
        assert any(n.startswith("accelops/prebuilt/") for n in zf.namelist())
    plain = pip_wheel(fresh_tree, tmp_path / "plain")
    with zipfile.ZipFile(plain) as zf:
        stale = [n for n in zf.namelist() if n.startswith("accelops/prebuilt/") or n == "accelops/build_info.json"]
    assert not stale, f"a build without DS_BUILD_* shipped {stale}"
    assert "-none-any" in plain.name


def test_inplace_prebuild_loads_and_an_edited_source_builds_instead(fresh_tree, tmp_path):
    """``setup.py build_ext --inplace`` (what an editable DS_BUILD install runs) puts the op into the source
    tree, where it loads without compiling; after a source edit its source key differs, so the op builds
    from source and says why."""
    fresh_tree = shutil.copytree(fresh_tree, tmp_path / "tree")  # this test edits its tree
    env = {**build_env(), "DS_BUILD_CPU_LION": "1", "DS_BUILD_CPU_TIERS": "scalar", "MAX_JOBS": "2"}
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=fresh_tree, env=env,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    assert json.loads((fresh_tree / "accelops" / "build_info.json").read_text())["ops"]["cpu_lion"]["variants"] == [
        "scalar"]
    code = ("import sys, accelops\n"
            "accelops.__path__.append(sys.argv[1])  # the source tree's folder mapping, as an editable install has\n"
            "from accelops.op_builder import get_builder_class, prebuilt\n"
            "builder = get_builder_class('cpu_lion')()\n"
            "loaded = builder.load_with_origin(verbose=False)\n"
            "print(loaded.origin, loaded.variant)\n"
            "print(prebuilt.prebuilt_status(builder)['reason'], file=sys.stderr)\n")
    run_env = {**build_env(), "PYTHONPATH": str(fresh_tree), "ACCELOPS_CPU_TIER": "scalar",
               "ACCELOPS_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", code, str(fresh_tree)], capture_output=True, text=True, env=run_env,
                           cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["prebuilt", "scalar"]
    source = fresh_tree / "csrc" / "cpu" / "lion" / "cpu_lion.cpp"
    source.write_text(source.read_text() + "\n// edited after the prebuild\n")
    edited = subprocess.run([sys.executable, "-c", code, str(fresh_tree)], capture_output=True, text=True,
                            env=run_env, cwd=tmp_path)
    assert edited.returncode == 0, edited.stderr
    assert edited.stdout.split() == ["build", "scalar"]
    assert "built from other sources or flags than this install's" in edited.stderr
