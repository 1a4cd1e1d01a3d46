"""Choosing the accelerator: priority on device presence, DS_ACCELERATOR, set_accelerator, plugins."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import accelops.accelerator as acc
from accelops.accelerator import real_accelerator
from accelops.accelerator.real_accelerator import builtin_backend_class


def fake_present(monkeypatch, *names):
    """Make the probes of ``names`` report a device and every other non-CPU probe report none."""
    for name in real_accelerator._BUILTIN_BACKENDS:
        if name == "cpu":
            continue
        present = name in names
        reason = f"fake {name} device" if present else f"no fake {name}"
        monkeypatch.setattr(builtin_backend_class(name), "probe", classmethod(lambda cls, p=present, r=reason: (p, r)))


def run_python(code, env_extra=None, pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env.update(env_extra or {})
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "present, expected",
    [
        (("cuda", "xpu", "npu"), "cuda"),
        (("xpu", "hpu"), "xpu"),
        (("hpu", "npu", "mps"), "hpu"),
        (("npu", "mps"), "npu"),
        (("mps",), "mps"),
        ((), "cpu"),
    ],
)
def test_detection_follows_priority(monkeypatch, present, expected):
    fake_present(monkeypatch, *present)
    chosen = acc.get_accelerator()
    assert chosen.name == expected
    selection = acc.accelerator_selection()
    assert selection.name == expected and selection.how == "detected"
    if expected == "cpu":
        assert "no accelerator device is present" in selection.reason
    else:
        assert selection.reason == f"fake {expected} device"
    assert [row.name for row in selection.probes][-1] == "cpu"
    assert acc.available_accelerators() == [name for name in ("cuda", "xpu", "hpu", "npu", "mps") if name in present] + ["cpu"]


def test_a_raising_probe_does_not_break_detection(monkeypatch):
    fake_present(monkeypatch)

    def broken(cls):
        raise OSError("driver exploded")

    monkeypatch.setattr(builtin_backend_class("cuda"), "probe", classmethod(broken))
    assert acc.get_accelerator().name == "cpu"
    cuda_row = next(row for row in acc.accelerator_selection().probes if row.name == "cuda")
    assert cuda_row.present is False and "driver exploded" in cuda_row.reason


def test_same_object_until_replaced(monkeypatch):
    first = acc.get_accelerator()
    assert acc.get_accelerator() is first
    replacement = builtin_backend_class("cpu")()
    acc.set_accelerator(replacement)
    assert acc.get_accelerator() is replacement
    assert acc.accelerator_selection().how == "set_accelerator"


def test_set_accelerator_takes_effect_for_earlier_importers():
    from accelops.accelerator import get_accelerator as imported_before

    replacement = builtin_backend_class("cpu")()
    acc.set_accelerator(replacement)
    assert imported_before() is replacement


@pytest.mark.parametrize("bad", [None, "cuda", object(), builtin_backend_class("cpu")])
def test_set_accelerator_rejects_non_accelerators(bad):
    with pytest.raises(TypeError, match="expects an accelops Accelerator instance"):
        acc.set_accelerator(bad)


def test_env_override_picks_the_named_backend(monkeypatch):
    fake_present(monkeypatch, "xpu")
    monkeypatch.setenv("DS_ACCELERATOR", "CPU")
    assert acc.get_accelerator().name == "cpu"
    assert acc.accelerator_selection().how == "env"


def test_unknown_env_value_lists_valid_names(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "tpu")
    with pytest.raises(ValueError) as error:
        acc.get_accelerator()
    message = str(error.value)
    assert "DS_ACCELERATOR='tpu' is not a known accelerator" in message
    for name in ("cpu", "cuda", "hpu", "mps", "npu", "xpu"):
        assert name in message


def test_vendor_backend_without_its_package_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "npu")
    with pytest.raises(RuntimeError, match="DS_ACCELERATOR=npu needs the torch_npu package"):
        acc.get_accelerator()


def test_env_var_in_a_fresh_process_cuda_without_gpu():
    """DS_ACCELERATOR=cuda is honoured on a GPU-less host (cross-compiling ops)."""
    result = run_python(
        """
        import json
        from accelops.accelerator import get_accelerator, accelerator_selection
        a = get_accelerator()
        s = accelerator_selection()
        print(json.dumps([a.name, a.communication_backend_name(), a.device_count(), s.how, s.reason]))
        """,
        {"DS_ACCELERATOR": "cuda"},
    )
    assert result.returncode == 0, result.stderr
    name, backend, count, how, reason = json.loads(result.stdout)
    assert (name, backend, how) == ("cuda", "nccl", "env")
    import torch

    if not torch.cuda.is_available():
        assert count == 0
        assert "cross-compile" in reason


def test_env_var_in_a_fresh_process_invalid():
    result = run_python("from accelops.accelerator import get_accelerator; get_accelerator()", {"DS_ACCELERATOR": "bogus"})
    assert result.returncode != 0
    assert "DS_ACCELERATOR='bogus' is not a known accelerator; valid names: cpu, cuda, hpu, mps, npu, xpu" in result.stderr


PLUGIN_SOURCE = '''
from accelops.accelerator.cpu_accelerator import CpuAccelerator


class FakeAccelerator(CpuAccelerator):
    """A third-party backend: a CPU look-alike with its own name."""

    name = "fakeaccel"
    priority = 50

    @classmethod
    def probe(cls):
        return True, "fakeaccel board found"

    def communication_backend_name(self):
        return "fakeccl"
'''


@pytest.fixture
def plugin_dir(tmp_path):
    """A tiny installed distribution that registers an accelerator through an entry point."""
    (tmp_path / "fake_accel_plugin").mkdir()
    (tmp_path / "fake_accel_plugin" / "__init__.py").write_text(PLUGIN_SOURCE)
    dist_info = tmp_path / "fake_accel_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-accel-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[accelops.accelerators]\nfakeaccel = fake_accel_plugin:FakeAccelerator\n"
    )
    return tmp_path


def test_plugin_is_discovered_and_wins_over_cpu(plugin_dir):
    result = run_python(
        """
        import json
        from accelops.accelerator import get_accelerator, accelerator_selection, accelerator_names
        a = get_accelerator()
        s = accelerator_selection()
        source = [row.source for row in s.probes if row.name == "fakeaccel"][0]
        print(json.dumps([a.name, a.communication_backend_name(), s.how, s.reason, source, accelerator_names()]))
        """,
        pythonpath=plugin_dir,
    )
    assert result.returncode == 0, result.stderr
    name, backend, how, reason, source, names = json.loads(result.stdout)
    assert (name, backend, how, reason) == ("fakeaccel", "fakeccl", "detected", "fakeaccel board found")
    assert source == "plugin:fake-accel-plugin"
    assert "fakeaccel" in names


def test_plugin_can_be_named_in_env(plugin_dir):
    result = run_python(
        "from accelops.accelerator import get_accelerator; print(get_accelerator().name)",
        {"DS_ACCELERATOR": "fakeaccel"},
        pythonpath=plugin_dir,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fakeaccel"


def chosen_and_plugin_reason(folder, dist, entry):
    """Install a distribution ``dist`` whose entry point is ``entry`` (``name = module:attr``) into
    ``folder``; in a fresh process return (the chosen accelerator, the probe reason of that plugin)."""
    dist_info = folder / f"{dist}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[accelops.accelerators]\n{entry}\n")
    name = entry.split("=")[0].strip()
    result = run_python(
        f"""
        from accelops.accelerator import get_accelerator, probe_accelerators
        print(get_accelerator().name)
        print([row.reason for row in probe_accelerators() if row.name == {name!r}][0])
        """,
        pythonpath=folder,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_broken_plugin_is_reported_not_fatal(tmp_path):
    chosen, reason = chosen_and_plugin_reason(tmp_path, "broken_plugin", "broken = no_such_module:Thing")
    assert chosen == "cpu"
    assert "plugin failed to load" in reason and "no_such_module" in reason


def test_plugin_with_a_non_integer_priority_is_reported_not_fatal(tmp_path):
    (tmp_path / "odd_plugin.py").write_text(
        "from accelops.accelerator.cpu_accelerator import CpuAccelerator\n"
        "class Odd(CpuAccelerator):\n    name = 'odd'\n    priority = 'high'\n")
    chosen, reason = chosen_and_plugin_reason(tmp_path, "odd_plugin", "odd = odd_plugin:Odd")
    assert chosen == "cpu" and reason == "plugin priority must be an int, got 'high'"
