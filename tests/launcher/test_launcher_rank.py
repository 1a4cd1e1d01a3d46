"""The per-rank helper's pure parts: core lists, shares, local rank from each launcher's variables."""

import pytest

from accelops.launcher import LaunchError
from accelops.launcher.rank import cores_for_rank, local_rank_and_size, main, parse_core_list, user_argv


def test_parse_core_list():
    assert parse_core_list("0,2-4, 7") == [0, 2, 3, 4, 7]
    for bad in ("", "a", "3-1", "1-", "0,0"):
        with pytest.raises(LaunchError, match="--bind_core_list"):
            parse_core_list(bad)


def test_cores_for_rank_equal_contiguous_shares():
    assert [cores_for_rank(range(8), r, 3) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(LaunchError, match="2 core\\(s\\) for 4 ranks"):
        cores_for_rank([0, 1], 0, 4)


@pytest.mark.parametrize("environ, expected", [
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, (1, 2)),
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, (1, 4)),
    ({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"}, (0, 2)),
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2"}, (1, 2)),
    ({}, (0, 1)),
])
def test_local_rank_from_every_launcher(environ, expected):
    assert local_rank_and_size(environ) == expected


def test_user_argv():
    assert user_argv("t.py", ["x"], 2, False, False, python="py") == ["py", "-u", "t.py", "--local_rank=2", "x"]
    assert user_argv("pkg.m", [], None, True, False, python="py") == ["py", "-u", "-m", "pkg.m"]
    assert user_argv("./run.sh", ["x"], 0, False, True) == ["./run.sh", "--local_rank=0", "x"]


def test_main_usage_errors(capsys):
    assert main(["script.py"]) == 2
    assert main(["--bogus", "--", "script.py"]) == 2
    assert main(["--"]) == 2
    assert main(["--no_python", "--", "/nonexistent/program"]) == 127
    assert "cannot run '/nonexistent/program'" in capsys.readouterr().err
