"""resolve_launch_env: launcher variables -> rank, sizes, master; a pure function of a dict."""
import pytest

from accelops.comm import DistributedInitError, LaunchEnv, resolve_launch_env


def resolved(env):
    r = resolve_launch_env(env)
    return (r.source, r.rank, r.world_size, r.local_rank, r.local_world_size, r.master_addr, r.master_port)


def test_no_launcher_is_a_world_of_one_on_loopback():
    assert resolved({}) == ("single", 0, 1, 0, 1, "127.0.0.1", None)
    assert resolved({"MASTER_ADDR": "h", "MASTER_PORT": "1234"}) == ("single", 0, 1, 0, 1, "h", 1234)


def test_torchrun_variables():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
           "MASTER_ADDR": "node7", "MASTER_PORT": "29500"}
    assert resolved(env) == ("torchrun", 5, 8, 1, 4, "node7", 29500)


def test_torchrun_without_local_rank_defaults_to_zero_and_leaves_master_unknown():
    assert resolved({"RANK": "1", "WORLD_SIZE": "2"}) == ("torchrun", 1, 2, 0, None, None, None)


def test_open_mpi_on_one_host_uses_loopback():
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "3",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "MASTER_PORT": "2000"}
    assert resolved(env) == ("openmpi", 3, 4, 3, 4, "127.0.0.1", 2000)


def test_open_mpi_across_hosts_leaves_master_unknown():
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "3",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert resolved(env) == ("openmpi", 3, 8, 3, 4, None, None)


@pytest.mark.parametrize("local_var,size_var", [("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
                                                ("PMI_LOCAL_RANK", "PMI_LOCAL_SIZE")])
def test_mpich_and_intel_mpi_pmi_variables(local_var, size_var):
    env = {"PMI_RANK": "6", "PMI_SIZE": "8", local_var: "2", size_var: "4", "MASTER_ADDR": "a"}
    assert resolved(env) == ("pmi", 6, 8, 2, 4, "a", None)
    del env[local_var], env[size_var]
    assert resolved(env)[:5] == ("pmi", 6, 8, 0, None)


def test_slurm_master_is_first_host_and_port_follows_job_id():
    env = {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "gpu[003-004,010],login1", "SLURM_JOB_ID": "123456"}
    assert resolved(env) == ("slurm", 9, 16, 1, None, "gpu003", 15000 + 123456 % 20000)
    del env["SLURM_JOB_NODELIST"]
    env["SLURM_NODELIST"] = "a-[1-2]b"
    assert resolved(env)[5] == "a-1b"
    env.update(MASTER_ADDR="explicit", MASTER_PORT="4321")
    assert resolved(env)[5:] == ("explicit", 4321)


def test_slurm_batch_step_without_ntasks_is_not_a_launch():
    assert resolved({"SLURM_PROCID": "0", "SLURM_LOCALID": "0"})[0] == "single"


def test_priority_torchrun_over_mpi_over_slurm():
    # torchrun started by srun: one SLURM task per node, RANK differs from SLURM_PROCID and that is fine.
    env = {"RANK": "5", "WORLD_SIZE": "8", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "MASTER_ADDR": "m",
           "MASTER_PORT": "1"}
    assert resolved(env)[:3] == ("torchrun", 5, 8)
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert resolved(env)[:3] == ("openmpi", 1, 2)
    # Our own export after an MPI launch: RANK agrees with OMPI_*, torchrun wins, same numbers.
    env.update(RANK="1", WORLD_SIZE="2", LOCAL_RANK="0")
    assert resolved(env)[:4] == ("torchrun", 1, 2, 0)


def test_pure_function_reads_only_the_given_mapping(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = resolve_launch_env({})
    assert isinstance(result, LaunchEnv) and result.source == "single"


def _error(env):
    with pytest.raises(DistributedInitError) as info:
        resolve_launch_env(env)
    return str(info.value)


def test_conflicting_torchrun_and_open_mpi_ranks():
    msg = _error({"RANK": "1", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"})
    assert "RANK=1 but OMPI_COMM_WORLD_RANK=0" in msg
    assert "variables seen:" in msg and "OMPI_COMM_WORLD_SIZE='2'" in msg


def test_conflicting_world_sizes_and_local_ranks():
    assert "WORLD_SIZE=4 but PMI_SIZE=2" in _error({"RANK": "1", "WORLD_SIZE": "4", "PMI_RANK": "1", "PMI_SIZE": "2"})
    msg = _error({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "OMPI_COMM_WORLD_RANK": "1",
                  "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0"})
    assert "LOCAL_RANK=1 but OMPI_COMM_WORLD_LOCAL_RANK=0" in msg


@pytest.mark.parametrize("env,expected", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 must be less than WORLD_SIZE=2"),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK must be >= 0, got -1"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1, got 0"),
    ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'one'"),
    ({"RANK": "0", "WORLD_SIZE": "2.5"}, "WORLD_SIZE must be an integer, got '2.5'"),
    ({"RANK": "0"}, "RANK is set but WORLD_SIZE is not"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"},
     "LOCAL_RANK=2 must be less than LOCAL_WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "3"}, "LOCAL_WORLD_SIZE=3 must not exceed WORLD_SIZE=2"),
    ({"SLURM_PROCID": "4", "SLURM_NTASKS": "4"}, "SLURM_PROCID=4 must be less than SLURM_NTASKS=4"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "MASTER_PORT must be a TCP port (1-65535), got 70000"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "http"}, "MASTER_PORT must be an integer, got 'http'"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NODELIST": "n[1-"}, "unbalanced '['"),
])
def test_bad_values_name_the_variable_and_what_was_expected(env, expected):
    msg = _error(env)
    assert expected in msg
    assert "variables seen:" in msg
