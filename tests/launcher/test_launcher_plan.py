"""Plans and exact commands: per-node torchrun, ssh/pdsh wrapping, mpirun/srun lines, devices."""
import shlex
import sys

import pytest

from accelops.launcher import LaunchError
from accelops.launcher.kinds import choose_launcher
from launcher_fakes import FakeAccelerator

TWO_NODES = "worker-0 slots=4\nworker-1 slots=4\n"


def torchrun(nnodes, node_rank, nproc, addr="worker-0", port=29500):
    return [sys.executable, "-u", "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
            f"--nproc_per_node={nproc}", f"--master_addr={addr}", f"--master_port={port}"]


def local_guard(save_pid=None):
    """The node guard in front of the local torchrun (it watches ds_launch: this process)."""
    import os
    return [sys.executable, "-u", "-m", "accelops.launcher.guard", "--node=localhost",
            *([f"--save_pid={save_pid}"] if save_pid else []), f"--parent={os.getpid()}", "--"]


def test_local_default_one_rank_per_device(plan_for):
    plan = plan_for(user=("train.py", "--lr", "0.1"))
    assert plan.launcher == "local" and plan.master_addr == "127.0.0.1" and plan.world_size == 4
    [command] = plan.commands
    assert command.argv == local_guard() + torchrun(1, 0, 4, "127.0.0.1") + [
        "train.py", "--local_rank=${local_rank}", "--lr", "0.1"]
    assert command.env == {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "LOCAL_SIZE": "4", "CROSS_RANK": "0", "CROSS_SIZE": "1"}


def test_cpu_host_num_gpus_starts_n_ranks(plan_for):
    cpu = FakeAccelerator("cpu", count=1, visible=(), prefixes=("OMP",))
    plan = plan_for("--num_gpus", "3", accelerator=cpu, environ={"CUDA_VISIBLE_DEVICES": "7"})
    assert plan.world_size == 3 and plan.visible_devices_var is None
    assert plan.commands[0].argv == local_guard() + torchrun(1, 0, 3, "127.0.0.1") + [
        "train.py", "--local_rank=${local_rank}"]
    assert plan.commands[0].env == {"LOCAL_SIZE": "3", "CROSS_RANK": "0", "CROSS_SIZE": "1"}
    assert plan_for(accelerator=cpu).world_size == 1


def test_launching_node_visible_devices_are_honoured(plan_for):
    environ = {"CUDA_VISIBLE_DEVICES": "2,3,5"}
    plan = plan_for(environ=environ)
    assert plan.world_size == 3 and plan.nodes[0].devices == ["2", "3", "5"]
    assert plan_for("--include", "localhost:0,2", environ=environ).commands[0].env["CUDA_VISIBLE_DEVICES"] == "2,5"
    assert plan_for("--num_gpus", "2", environ=environ).commands[0].env["CUDA_VISIBLE_DEVICES"] == "2,3"
    with pytest.raises(LaunchError, match="--include: host 'localhost' has no slot 3"):
        plan_for("--include", "localhost:3", environ=environ)


def test_visible_devices_index_on_every_node(plan_for, hostfile):
    plan = plan_for("-H", hostfile(TWO_NODES), "--num_gpus", "2", environ={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert [n.devices for n in plan.nodes] == [["4", "5"], ["4", "5"]]
    with pytest.raises(LaunchError, match="host 'worker-0' slot 2: CUDA_VISIBLE_DEVICES=4,5 on this node lists only 2"):
        plan_for("-H", hostfile(TWO_NODES), environ={"CUDA_VISIBLE_DEVICES": "4,5"})


def test_rocm_variable(plan_for):
    rocm = FakeAccelerator(visible=("HIP_VISIBLE_DEVICES",))
    plan = plan_for(accelerator=rocm, environ={"CUDA_VISIBLE_DEVICES": "1,2"})
    assert plan.commands[0].env["HIP_VISIBLE_DEVICES"] == "1,2"


def _remote_words(remote):
    """The remote command as the remote shell splits it: cd, export, exec torchrun."""
    cd, exports, exec_ = remote.split(" && ")
    return shlex.split(cd), shlex.split(exports), shlex.split(exec_)


def test_two_nodes_ssh(plan_for, hostfile, tmp_path):
    environ = {"NCCL_DEBUG": "INFO", "NCCL_SOCKET_IFNAME": "eth 0", "PYTHONPATH": "/lib", "HOME": "/root",
               "CUDA_VISIBLE_DEVICES": ""}
    plan = plan_for("-H", hostfile(TWO_NODES), "--include", "worker-0:1,3@worker-1", "--launcher", "SSH",
                    "--launcher_args", "-p 2222 -o 'StrictHostKeyChecking no'", environ=environ,
                    user=("train.py", "a b", "$X"))
    assert plan.launcher == "ssh" and plan.master_addr == "worker-0" and plan.world_size == 6
    assert [(n.host, n.slots, n.ranks) for n in plan.nodes] == [("worker-0", [1, 3], [0, 1]),
                                                                 ("worker-1", [0, 1, 2, 3], [2, 3, 4, 5])]
    for node, command in zip(plan.nodes, plan.commands):
        assert command.argv[:5] == ["ssh", "-p", "2222", "-o", "StrictHostKeyChecking no"]
        assert command.argv[5] == node.host and command.argv[6] == node.remote and command.env == {}
        cd, exports, argv = _remote_words(node.remote)
        assert cd == ["cd", str(tmp_path)]
        assert exports[0] == "export"
        assigned = dict(word.split("=", 1) for word in exports[1:])
        assert assigned["NCCL_SOCKET_IFNAME"] == "eth 0" and assigned["NCCL_DEBUG"] == "INFO"
        assert assigned["PYTHONPATH"] == f"{tmp_path}:/lib"
        assert "HOME" not in assigned
        assert assigned["CROSS_RANK"] == str(node.node_rank) and assigned["CROSS_SIZE"] == "2"
        guard = [sys.executable, "-u", "-m", "accelops.launcher.guard", f"--node={node.host}", "--"]
        assert argv == ["exec"] + guard + torchrun(2, node.node_rank, len(node.slots)) + [
            "train.py", "--local_rank=${local_rank}", "a b", "$$X"]
    assert dict(w.split("=") for w in _remote_words(plan.nodes[0].remote)[1][1:])["CUDA_VISIBLE_DEVICES"] == "1,3"


def test_two_nodes_pdsh_keeps_user_ssh_args(plan_for, hostfile):
    environ = {"PDSH_SSH_ARGS_APPEND": "-p 2222", "NCCL_X": "100%"}
    plan = plan_for("-H", hostfile(TWO_NODES), "--launcher_args", "-u 30", environ=environ,
                    which=lambda name: "/usr/bin/pdsh" if name == "pdsh" else None)
    assert (plan.launcher, plan.reason) == ("pdsh", "pdsh is installed")
    for node, command in zip(plan.nodes, plan.commands):
        assert command.argv == ["pdsh", "-S", "-f", "1024", "-w", node.host, "-u", "30",
                                node.remote.replace("%", "%%")]
        assert command.env == {"PDSH_RCMD_TYPE": "ssh"}   # PDSH_SSH_ARGS_APPEND is inherited, untouched
        assert "NCCL_X=100%" in node.remote
    assert plan_for("-H", hostfile(TWO_NODES), environ={"PDSH_RCMD_TYPE": "rsh"},
                    which=lambda name: name).commands[0].env == {}


def test_dry_run_report_two_nodes(plan_for, hostfile):
    from accelops.launcher.cli import format_plan
    plan = plan_for("-H", hostfile(TWO_NODES), "--num_gpus", "2", "--launcher", "ssh")
    text = format_plan(plan)
    assert "launcher: ssh (--launcher)" in text and "world size: 4 rank(s) on 2 node(s)" in text
    for node in plan.nodes:
        assert f"node {node.node_rank}: host {node.host}\n  slots: 0,1\n  ranks: {2 * node.node_rank}.." in text
        assert "  CUDA_VISIBLE_DEVICES: 0,1" in text
        assert f"  remote command: {node.remote}" in text
        assert f"  command: {plan.commands[node.node_rank].shell()}" in text


def test_one_remote_node_runs_there(plan_for, hostfile):
    plan = plan_for("-H", hostfile("gpu-box slots=2\n"))
    assert plan.launcher == "ssh" and plan.commands[0].argv[:2] == ["ssh", "gpu-box"]
    assert plan.master_addr == "gpu-box"


def test_local_hostfile_node_runs_locally_unless_forced(plan_for, hostfile):
    path = hostfile("localhost slots=2\n")
    plan = plan_for("-H", path, "--launcher", "pdsh")
    assert plan.launcher == "local" and "--force_multi" in plan.reason
    forced = plan_for("-H", path, "--force_multi", "--launcher", "pdsh")
    assert forced.launcher == "pdsh" and forced.commands[0].argv[5] == "localhost"
    assert forced.master_addr not in ("localhost", "127.0.0.1")   # remote ranks must reach it


def test_choose_launcher():
    local = lambda h: h == "localhost"  # noqa: E731
    assert choose_launcher(None, ["a", "b"], False, local, lambda n: None) == ("ssh", "pdsh is not installed")
    with pytest.raises(LaunchError, match="--launcher 'rsh' is not one of ssh, pdsh, openmpi, mpich, slurm"):
        choose_launcher("rsh", ["a"], False, local, lambda n: None)


def test_user_command_variants(plan_for, tmp_path):
    (tmp_path / "pkg").mkdir()
    tail = lambda plan: plan.commands[0].argv[len(local_guard()) + 9:]  # noqa: E731
    assert tail(plan_for("--no_local_rank", user=("train.py", "x"))) == ["train.py", "x"]
    assert tail(plan_for("--module", user=("pkg.train", "x"))) == [
        "--module", "pkg.train", "--local_rank=${local_rank}", "x"]
    assert tail(plan_for("--no_python", user=("train.py", "$x"))) == ["--no_python", "train.py",
                                                                       "--local_rank=${local_rank}", "$$x"]
    assert tail(plan_for("--no_python", user=("bash", "-c", "echo $1"), which=lambda n: "/bin/" + n)) == [
        "--no_python", "bash", "--local_rank=${local_rank}", "-c", "echo $$1"]
    logged = plan_for("--enable_each_rank_log", "/logs")
    assert tail(logged)[:2] == ["--log_dir=/logs", "--redirects=3"]
    bound = plan_for("--bind_cores_to_rank", "--bind_core_list", "0-3", user=("train.py", "$y"))
    assert tail(bound) == ["--module", "accelops.launcher.rank", "--bind_cores_to_rank", "--bind_core_list=0-3", "--",
                           "train.py", "$$y"]


@pytest.mark.parametrize("flags, user, message", [
    ((), ("missing.py",), "user script 'missing.py' does not exist"),
    ((), ("pkg",), "user script 'pkg' is a folder"),
    (("--no_python",), ("no-such-program",), "user script 'no-such-program' does not exist"),
    (("--module", "--no_python"), ("x",), "--module and --no_python exclude each other"),
    (("--master_port", "0"), ("train.py",), "--master_port must be in 1..65535"),
    (("--launcher_args", "'unclosed"), ("train.py",), "--launcher_args"),
    (("-H", "/nonexistent/hostfile"), ("train.py",), "hostfile '/nonexistent/hostfile' .* does not exist"),
])
def test_preflight_errors(plan_for, tmp_path, flags, user, message):
    (tmp_path / "pkg").mkdir()
    with pytest.raises(LaunchError, match=message):
        plan_for(*flags, user=user)


def test_no_devices_and_no_hostfile(plan_for):
    with pytest.raises(LaunchError, match="no hostfile and no devices on this host: accelerator 'cuda' counts 0"):
        plan_for(accelerator=FakeAccelerator(count=0))


def test_deepspeed_env_reaches_remote_and_local_ranks(plan_for, hostfile, tmp_path):
    (tmp_path / ".deepspeed_env").write_text("NCCL_DEBUG=WARN\nMY_VAR=has spaces\n")
    remote = plan_for("-H", hostfile(TWO_NODES), environ={"NCCL_DEBUG": "INFO"})
    assert remote.env_files == [str(tmp_path / ".deepspeed_env")]
    assert "MY_VAR='has spaces'" in remote.nodes[1].remote and "NCCL_DEBUG=WARN" in remote.nodes[1].remote
    local = plan_for()
    assert local.commands[0].env["MY_VAR"] == "has spaces"


def test_openmpi_command(plan_for, hostfile):
    plan = plan_for("-H", hostfile(TWO_NODES), "--launcher", "openmpi", "--num_gpus", "2",
                    environ={"NCCL_DEBUG": "INFO", "PATH": "/bin"}, user=("train.py", "x"))
    [command] = plan.commands
    assert command.node is None and command.env == {}
    argv = command.argv
    assert argv[:8] == ["mpirun", "--allow-run-as-root", "-np", "4", "-H", "worker-0:2,worker-1:2", "--bind-to", "none"]
    pairs = [argv[i + 1] for i, word in enumerate(argv) if word == "-x"]
    assert "PATH" in pairs and "NCCL_DEBUG=INFO" in pairs and "CUDA_VISIBLE_DEVICES=0,1" in pairs
    assert "MASTER_ADDR=worker-0" in pairs and "MASTER_PORT=29500" in pairs
    assert argv[-7:] == [sys.executable, "-u", "-m", "accelops.launcher.rank", "--", "train.py", "x"]


def test_mpi_needs_the_same_devices_on_every_node(plan_for, hostfile):
    with pytest.raises(LaunchError, match="--launcher openmpi gives every node the same devices"):
        plan_for("-H", hostfile(TWO_NODES), "--launcher", "openmpi", "--include", "worker-0:0@worker-1:1")


def test_mpich_and_slurm_commands(plan_for, hostfile):
    path = hostfile(TWO_NODES)
    mpich = plan_for("-H", path, "--launcher", "mpich", "--no_local_rank", environ={"NCCL_X": "a,b"}).commands[0].argv
    assert mpich[:7] == ["mpirun", "-n", "8", "-ppn", "4", "-hosts", "worker-0,worker-1"]
    assert "-genv NCCL_X a,b" in " ".join(mpich)
    assert mpich[-3:] == [sys.executable, "-u", "train.py"]
    slurm = plan_for("-H", path, "--launcher", "slurm", "--launcher_args=--partition=gpu",
                     environ={"NCCL_X": "a,b"}).commands[0]
    assert slurm.argv[:6] == ["srun", "--nodes=2", "--ntasks-per-node=4", "--kill-on-bad-exit=1",
                              "--nodelist=worker-0,worker-1", "--partition=gpu"]
    assert slurm.env["NCCL_X"] == "a,b" and slurm.env["MASTER_ADDR"] == "worker-0"
    with pytest.raises(LaunchError, match="--launcher slurm needs the same number of slots on every node"):
        plan_for("-H", path, "--launcher", "slurm", "--include", "worker-0:0@worker-1:0,1",
                 accelerator=FakeAccelerator("cpu", visible=()))


def test_remote_nodes_run_under_the_node_guard(plan_for, hostfile):
    import os
    plan = plan_for("-H", hostfile(TWO_NODES), "--launcher", "ssh", "--save_pid")
    for node in plan.nodes:
        exec_ = _remote_words(node.remote)[2]
        assert exec_[:7] == ["exec", sys.executable, "-u", "-m", "accelops.launcher.guard", f"--node={node.host}",
                             f"--save_pid={os.getpid()}"]
        assert exec_[7] == "--" and exec_[8:12] == [sys.executable, "-u", "-m", "torch.distributed.run"]
    local = plan_for("--save_pid")   # the local node's guard watches ds_launch instead of its stdin
    assert local.commands[0].argv[:len(local_guard(os.getpid()))] == local_guard(os.getpid())


@pytest.mark.parametrize("args", ["-n", "-nT", "-p 22 -n", "-4n", "-f"])
def test_ssh_options_that_close_the_remote_input_are_refused(plan_for, hostfile, args):
    with pytest.raises(LaunchError, match=r"--launcher_args: ssh option -[nf] in '-\w*' would close or detach"):
        plan_for("-H", hostfile(TWO_NODES), "--launcher", "ssh", f"--launcher_args={args}")
    with pytest.raises(LaunchError, match=r"PDSH_SSH_ARGS_APPEND: ssh option -[nf]"):
        plan_for("-H", hostfile(TWO_NODES), "--launcher", "pdsh", environ={"PDSH_SSH_ARGS_APPEND": args})


def test_ssh_options_with_values_are_fine(plan_for, hostfile):
    plan = plan_for("-H", hostfile(TWO_NODES), "--launcher", "ssh",
                    "--launcher_args", "-p 2222 -o 'ProxyJump nfs-gw' -i ~/.ssh/n_key -lnobody -F /dev/null")
    assert plan.ssh_args == ["-p", "2222", "-o", "ProxyJump nfs-gw", "-i", "~/.ssh/n_key", "-lnobody", "-F",
                             "/dev/null"]
    pdsh = plan_for("-H", hostfile(TWO_NODES), "--launcher", "pdsh", "--launcher_args", "-f 8",
                    environ={"PDSH_SSH_ARGS_APPEND": "-p 2222"})
    assert pdsh.ssh_args == ["-p", "2222"] and pdsh.launcher_args == ["-f", "8"]   # -f is pdsh's fan-out here
