"""Variables every rank gets: forwarding, .deepspeed_env lookup, quoting for the remote shell."""
import json
import os
import subprocess
import sys

import pytest

from accelops.launcher import LaunchError
from accelops.launcher.commands import pdsh_command, remote_shell_command
from accelops.launcher.environment import (env_files, export_command, forwarded_env, launching_devices,
                                           parse_env_file, read_env_files, slot_devices)

NASTY = {
    "NCCL_SPACES": "a b  c",
    "NCCL_QUOTES": "it's \"quoted\"",
    "NCCL_DOLLAR": "$HOME ${PATH} $(whoami) `id` $$",
    "NCCL_MISC": "back\\slash; rm -rf /tmp/nothing & | > < * ? ~ # !",
    "NCCL_NEWLINE": "line1\nline2",
    "NCCL_PERCENT": "%h %u %n 100%% %",
    "NCCL_EMPTY": "",
    "NCCL_UNICODE": "ünïcødé",
}
DUMP = ("import json, os, sys; print(json.dumps({'env': {k: v for k, v in os.environ.items() if k.startswith('NCCL_')},"
        " 'argv': sys.argv[1:]}))")
ARGS = ["plain", "two words", "it's", "$HOME", "a\"b", "%n", "--flag=x y", ""]


def _run_remote(remote):
    """What ssh does with the remote command: the remote login shell runs it once."""
    result = subprocess.run(["bash", "-c", remote], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent-home"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_remote_command_round_trips_values_and_args_through_bash(tmp_path):
    remote = remote_shell_command(str(tmp_path), NASTY, [sys.executable, "-c", DUMP, *ARGS])
    assert _run_remote(remote) == {"env": NASTY, "argv": ARGS}


def _pdsh_substitute(arg, host="worker-1", user="me", rank=1):
    """pdsh's pipecmd_format_arg: %h, %u, %n replaced, %% -> %, other %X kept."""
    out, i = [], 0
    while i < len(arg):
        if arg[i] == "%" and i + 1 < len(arg):
            nxt = arg[i + 1]
            out.append({"h": host, "u": user, "n": str(rank), "%": "%"}.get(nxt, "%" + nxt))
            i += 2
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


def test_pdsh_command_survives_pdsh_percent_substitution(tmp_path):
    remote = remote_shell_command(str(tmp_path), NASTY, [sys.executable, "-c", DUMP, *ARGS])
    sent = pdsh_command("worker-1", remote, [])[-1]
    assert _pdsh_substitute(sent) == remote
    assert _run_remote(_pdsh_substitute(sent)) == {"env": NASTY, "argv": ARGS}


def test_export_command_rejects_bad_names():
    assert export_command({}) == ""
    with pytest.raises(LaunchError, match="'BAD-NAME' is not a valid environment variable name"):
        export_command({"BAD-NAME": "x"})


def test_forwarded_env_prefixes_and_skips():
    environ = {"NCCL_DEBUG": "INFO", "PYTHONPATH": "/x", "UCX_TLS": "tcp", "MV2_X": "1", "CUDA_VISIBLE_DEVICES": "1",
               "CUDA_HOME": "/cuda", "HOME": "/root", "NCCL-BAD": "x", "OTHER": "y"}
    got = forwarded_env(environ, ("NCCL", "PYTHON", "UCX", "MV2", "CUDA"), skip={"CUDA_VISIBLE_DEVICES"})
    assert got == {"CUDA_HOME": "/cuda", "MV2_X": "1", "NCCL_DEBUG": "INFO", "PYTHONPATH": "/x", "UCX_TLS": "tcp"}


def test_parse_env_file():
    text = "# comment\n\nNCCL_IB_DISABLE=1\n A = x y \nexport B=v=w\nC=\"quoted value\"\nD='single'\nE=\"\nF=\n"
    assert dict(parse_env_file(text, "f")) == {"NCCL_IB_DISABLE": "1", "A": "x y", "B": "v=w", "C": "quoted value",
                                               "D": "single", "E": "\"", "F": ""}


@pytest.mark.parametrize("line", ["NO_EQUALS", "BAD-KEY=1", "=value", "1X=2"])
def test_parse_env_file_errors_name_line(line):
    with pytest.raises(LaunchError, match=rf"envfile:2: {line!r}: expected KEY=VALUE"):
        parse_env_file(f"OK=1\n{line}\n", "envfile")


def test_env_file_lookup_order(tmp_path):
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    assert env_files({}, str(cwd), str(home)) == []
    (home / ".deepspeed_env").write_text("A=home\nB=home\n")
    assert env_files({}, str(cwd), str(home)) == [str(home / ".deepspeed_env")]
    (cwd / ".deepspeed_env").write_text("A=work\n")
    files = env_files({}, str(cwd), str(home))
    assert files == [str(home / ".deepspeed_env"), str(cwd / ".deepspeed_env")]
    assert dict(read_env_files(files)) == {"A": "work", "B": "home"}   # the working folder wins
    assert env_files({}, str(home), str(home)) == [str(home / ".deepspeed_env")]  # one folder, read once


def test_ds_env_file_overrides_the_name_or_path(tmp_path):
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    (cwd / ".deepspeed_env").write_text("A=default\n")
    (cwd / "my_env").write_text("A=named\n")
    (tmp_path / "abs_env").write_text("A=absolute\n")
    assert env_files({"DS_ENV_FILE": "my_env"}, str(cwd), str(home)) == [str(cwd / "my_env")]
    assert env_files({"DS_ENV_FILE": str(tmp_path / "abs_env")}, str(cwd), str(home)) == [str(tmp_path / "abs_env")]
    assert env_files({"DS_ENV_FILE": "other"}, str(cwd), str(home)) == []
    with pytest.raises(LaunchError, match="DS_ENV_FILE='/nonexistent/env': no such file"):
        env_files({"DS_ENV_FILE": "/nonexistent/env"}, str(cwd), str(home))


def test_launching_devices_and_slot_indexing():
    names = ["CUDA_VISIBLE_DEVICES"]
    assert launching_devices({}, names) is None
    assert launching_devices({"CUDA_VISIBLE_DEVICES": ""}, names) is None
    launching = launching_devices({"CUDA_VISIBLE_DEVICES": "2, 3,GPU-abc"}, names)
    assert launching == ("CUDA_VISIBLE_DEVICES", ["2", "3", "GPU-abc"])
    assert slot_devices("h", [0, 2], launching) == ["2", "GPU-abc"]
    assert slot_devices("h", [0, 2], None) == ["0", "2"]
    with pytest.raises(LaunchError, match="host 'h' slot 3: CUDA_VISIBLE_DEVICES=2,3,GPU-abc on this node lists "
                                          "only 3 device"):
        slot_devices("h", [3], launching)
    with pytest.raises(LaunchError, match="empty entry"):
        launching_devices({"CUDA_VISIBLE_DEVICES": "0,,1"}, names)
    assert launching_devices({"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "5"},
                             ["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"]) == ("HIP_VISIBLE_DEVICES", ["1"])
