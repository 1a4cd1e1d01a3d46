"""A busy rendezvous port is a sentence, not a traceback: the port is held by a socket of the test."""
import errno
import json
import os
import socket
import sys
from contextlib import contextmanager

import pytest

from accelops.launcher import LaunchError
from accelops.launcher.ports import DEFAULT_MASTER_PORT, port_in_use, settle_master_port
from helpers import free_port
from launcher_fakes import clean_env, install_standins, launch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX sockets and sessions")

# Each rank writes the rendezvous port it was given.
SCRIPT = r'''
import json, os
with open(f"port{os.environ['RANK']}.json", "w") as fd:
    json.dump({"port": int(os.environ["MASTER_PORT"])}, fd)
'''


@contextmanager
def held(port, address="0.0.0.0"):
    """A listening socket on ``port``, as a server of another job holds it."""
    sock = socket.socket()
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            pytest.skip(f"port {port} is in use by another process here; this test needs to hold it itself")
        raise
    sock.listen()
    try:
        yield port
    finally:
        sock.close()


def test_port_in_use_sees_a_listening_socket_on_any_address():
    for address in ("0.0.0.0", "127.0.0.1"):
        with held(free_port(), address) as port:
            assert port_in_use(port)
        assert not port_in_use(port)


def test_settle_master_port(plan_for, hostfile, capsys):
    busy = {DEFAULT_MASTER_PORT}
    in_use = busy.__contains__
    local = plan_for()
    rebuilt = []

    def rebuild(port):
        rebuilt.append(port)
        return plan_for("--master_port", str(port))
    new = settle_master_port(local, None, rebuild, in_use=in_use)
    assert rebuilt == [new.master_port] and new.master_port != DEFAULT_MASTER_PORT
    assert capsys.readouterr().err == (f"ds_launch: port {DEFAULT_MASTER_PORT} is in use on this host; using free "
                                       f"port {new.master_port} (--master_port chooses one)\n")
    assert settle_master_port(local, None, rebuild, in_use=lambda port: False) is local

    with pytest.raises(LaunchError, match=r"^--master_port 29500 is in use on this host \(localhost, node 0, where "
                                          r"the rendezvous listens\); pass a free port$"):
        settle_master_port(plan_for("--master_port", "29500"), 29500, rebuild, in_use=in_use)
    two = plan_for("-H", hostfile("localhost slots=1\nworker-1 slots=1\n"))
    with pytest.raises(LaunchError, match=r"^port 29500 \(the default --master_port\) is in use on this host "
                                          r"\(localhost, node 0, .*\); pass --master_port with a free port$"):
        settle_master_port(two, None, rebuild, in_use=in_use)
    remote = plan_for("-H", hostfile("worker-0 slots=1\nworker-1 slots=1\n"))   # node 0 elsewhere: not checked
    assert settle_master_port(remote, None, rebuild, in_use=in_use) is remote
    assert len(rebuilt) == 1


def test_one_node_without_master_port_takes_a_free_port_when_29500_is_busy(tmp_path):
    (tmp_path / "ranks.py").write_text(SCRIPT)
    with held(DEFAULT_MASTER_PORT):
        result = launch(["--num_gpus", "2", "ranks.py"], cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    ports = {json.loads((tmp_path / f"port{rank}.json").read_text())["port"] for rank in range(2)}
    assert len(ports) == 1 and DEFAULT_MASTER_PORT not in ports
    assert (f"ds_launch: port {DEFAULT_MASTER_PORT} is in use on this host; using free port {ports.pop()} "
            "(--master_port chooses one)\n") in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_master_port_given_on_the_command_line_stops_before_starting(tmp_path):
    (tmp_path / "ranks.py").write_text(SCRIPT)
    with held(free_port()) as port:
        result = launch(["--num_gpus", "2", "--master_port", str(port), "ranks.py"], cwd=tmp_path, env=clean_env())
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"ds_launch: error: --master_port {port} is in use on this host (localhost, node 0, "
                             "where the rendezvous listens); pass a free port\n")
    assert not (tmp_path / "port0.json").exists()


@pytest.mark.parametrize("given", [False, True])
def test_multi_node_job_with_node_0_here_stops_before_starting(tmp_path, given):
    """Two nodes through the stand-in ssh, node 0 this host: one line, no ssh call, no rank."""
    (tmp_path / "ranks.py").write_text(SCRIPT)
    (tmp_path / "hostfile").write_text("localhost slots=1\nnode2 slots=1\n")
    log = tmp_path / "ssh.log"
    bin_dir = install_standins(tmp_path / "bin")
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STANDIN_SSH_LOG=str(log))
    with held(free_port() if given else DEFAULT_MASTER_PORT) as port:
        flags = ["--master_port", str(port)] if given else []
        result = launch(["-H", "hostfile", "--launcher", "ssh", *flags, "ranks.py"], cwd=tmp_path, env=env)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    what = f"--master_port {port}" if given else f"port {port} (the default --master_port)"
    assert line.startswith(f"ds_launch: error: {what} is in use on this host (localhost, node 0"), line
    assert "--master_port" in line
    assert not log.exists() and not (tmp_path / "port0.json").exists()
