"""Hostfile parsing and its preflight errors."""
import pytest

from accelops.launcher import LaunchError
from accelops.launcher.hostfile import is_local_host, local_pool, parse_hostfile, read_hostfile


def test_parses_hosts_in_order_with_comments_and_blank_lines():
    text = "# cluster\n\nworker-1 slots=4\n  worker-0   slots=8  # the big one\nworker-2 slots=2 max_slots=4\n"
    assert list(parse_hostfile(text).items()) == [("worker-1", 4), ("worker-0", 8), ("worker-2", 2)]


@pytest.mark.parametrize("line, message", [
    ("worker-0", "expected 'HOST slots=N'"),
    ("worker-0 4", "expected 'HOST slots=N'"),
    ("worker-0 gpus=4", "expected 'HOST slots=N'"),
    ("worker-0 slots=four", "slots must be a positive integer, got 'four'"),
    ("worker-0 slots=-1", "slots must be a positive integer, got '-1'"),
    ("worker-0 slots=0", "slots must be a positive integer, got '0'"),
    ("worker:0 slots=2", "is not a host name"),
])
def test_bad_line_names_file_line_number_and_text(line, message):
    with pytest.raises(LaunchError) as info:
        parse_hostfile(f"# header\nok slots=1\n{line}\n", source="/job/hostfile")
    assert f"/job/hostfile:3: {line!r}" in str(info.value)
    assert message in str(info.value)


def test_duplicate_host_names_both_lines():
    with pytest.raises(LaunchError, match=r"hf:3: 'a slots=2': host 'a' is listed twice \(first on line 1\)"):
        parse_hostfile("a slots=1\nb slots=1\na slots=2\n", source="hf")


def test_empty_hostfile_is_an_error():
    with pytest.raises(LaunchError, match="no 'HOST slots=N' line"):
        parse_hostfile("# nothing\n\n", source="hf")


def test_missing_default_hostfile_means_local(monkeypatch):
    monkeypatch.setattr("accelops.launcher.hostfile.DEFAULT_HOSTFILE", "/nonexistent/hostfile")
    assert read_hostfile(None) is None


def test_missing_explicit_hostfile_is_an_error(tmp_path):
    with pytest.raises(LaunchError, match="does not exist"):
        read_hostfile(str(tmp_path / "nope"))
    with pytest.raises(LaunchError, match="is a folder"):
        read_hostfile(str(tmp_path))


def test_local_pool_and_local_hosts():
    assert dict(local_pool(2, "x")) == {"localhost": 2}
    with pytest.raises(LaunchError, match="no hostfile and no devices on this host: cuda counts 0"):
        local_pool(0, "cuda counts 0")
    names = {"node7.cluster": True, "node7": True}
    assert all(is_local_host(h, names) for h in ("localhost", "127.0.0.1", "node7", "node7.cluster"))
    assert not is_local_host("node8", names)
