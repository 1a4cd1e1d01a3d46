"""ds_report --verify shows the op table as it is after the checks: an op they built is cached."""
import os
import subprocess
import sys

import pytest



def _fake_row(name, built):
    return {"name": name, "builder": "FakeBuilder", "kind": "cpu", "variant": "scalar", "source":
            "cache" if built else "build", "prebuilt": None, "compatible": True, "reasons": [], "warnings": [],
            "cached": built, "cache_detail": "/cache/entry" if built else "not built", "torch_path": None,
            "abi_floor": "2.13"}


def test_rows_are_read_again_after_the_checks(monkeypatch):
    from accelops import report
    from accelops.report import op_rows, verify

    state = {"built": False, "rows_read": 0}

    def rows():
        state["rows_read"] += 1
        return [_fake_row("fake_op", state["built"])]

    def verify_ops(rows_before):
        assert rows_before[0]["cached"] is False  # the checks get the state before them
        state["built"] = True
        return [{"name": "fake_op", "status": "PASS", "load_s": 1.0, "check_s": 0.1, "detail": "ok",
                 "origin": "build", "variant": "scalar"}]

    monkeypatch.setattr(op_rows, "op_rows", rows)
    monkeypatch.setattr(verify, "verify_ops", verify_ops)
    facts = report.collect(verify=True)
    assert state["rows_read"] == 2
    assert facts["ops"][0]["cached"] is True and facts["ops"][0]["source"] == "cache"
    text = "\n".join(report.render_text(facts, colour=False))
    assert "ops (after --verify; JIT" in text
    row = next(line for line in text.splitlines() if line.startswith("fake_op ") and "torch>=" in line)
    assert row.split()[-1] == "cache" and " yes " in row, row

    plain = "\n".join(report.render_text(report.collect(verify=False), colour=False))
    assert "after --verify" not in plain


def _cache_without(op_name, cache):
    """A private cache holding the entries this process's cache has, except ``op_name``'s, so that ``--verify``
    builds that op (and any other op not cached yet)."""
    import shutil

    from accelops.op_builder import jit_cache

    cache.mkdir(mode=0o700)
    source = jit_cache.cache_root(create=False)
    for entry in source.glob("accelops_*") if source.is_dir() else []:
        if entry.is_dir() and ".tmp-" not in entry.name and not entry.name.startswith(f"accelops_{op_name}_"):
            shutil.copytree(entry, cache / entry.name)


@pytest.mark.slow
def test_an_op_built_by_verify_shows_cached_in_the_table(tmp_path):
    cache = tmp_path / "cache"
    _cache_without("cpu_adam", cache)
    env = dict(os.environ, ACCELOPS_CACHE_DIR=str(cache))
    result = subprocess.run([sys.executable, "-m", "accelops", "--verify"], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    verified = next(line for line in lines if line.startswith("cpu_adam ") and " PASS " in line)
    assert "build module" in verified, verified  # the check built it ...
    table_row = next(line for line in lines if line.startswith("cpu_adam ") and "torch>=" in line)
    cells = table_row.split()
    assert cells[-1] == "cache" and cells[5] == "yes", table_row  # ... and the table says it is cached now
