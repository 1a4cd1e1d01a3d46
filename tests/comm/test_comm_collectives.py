"""Real process groups on gloo over loopback: 2 and 4 processes, env://, tcp://, file://, SLURM variables."""
import socket

import pytest

from comm_workers import parse, run_ranks, torchrun_env
from helpers import free_port


@pytest.mark.parametrize("n", [2, 4])
def test_collectives_on_real_process_groups(n, tmp_path):
    port, tcp_port = free_port(), free_port()
    results = parse(run_ranks(n, "collectives", lambda r: torchrun_env(
        r, n, port, COMM_TEST_DIR=tmp_path, COMM_TEST_TCP_PORT=tcp_port), timeout_s=120))
    total = n * (n + 1) / 2
    for rank, res in enumerate(results):
        assert res["info"] == {"rank": rank, "world_size": n, "local_rank": rank, "backend": "gloo",
                               "init_method": "env://", "source": "torchrun"}
        assert res["again_same"] is True
        assert res["helpers"] == [rank, n, rank, True]
        assert res["all_reduce_sum"] == [total, 10.0 * n * (n - 1) / 2]
        assert res["all_reduce_max"] == [n - 1.0, 0.0]
        assert res["broadcast"] == [n - 1.0] * 3
        assert res["all_gather"] == [[float(r), 2.0 * r] for r in range(n)]
        assert res["reduce_scatter"] == [float(sum(src * 100 + rank for src in range(n)))] * 2
        assert res["reduce_scatter_tensor"] == [float(sum(rank + src for src in range(n)))]
        assert res["send_recv"] == float((rank - 1) % n)
        assert res["isend_irecv"] == 7.0 * ((rank - 1) % n)
        assert res["marker_after_barrier"] is True
        assert res["after_destroy"] == [False, 1]
        assert res["tcp"] == [f"tcp://127.0.0.1:{tcp_port}", total]
        assert res["file"] == ["file://" + str(tmp_path / "filestore"), total]


def _free_port_in(lo, hi):
    for port in range(lo, hi):
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
                return port
            except OSError:
                continue
    pytest.skip(f"no free port in [{lo}, {hi})")


def test_two_ranks_from_slurm_variables(tmp_path):
    # As srun would start them: the master is the first node of the list, the port follows the job id.
    port = _free_port_in(15000 + 7000, 15000 + 8000)
    job_id = 20000 * 3 + (port - 15000)
    results = parse(run_ranks(2, "launched_allreduce", lambda r: {
        "SLURM_PROCID": r, "SLURM_NTASKS": 2, "SLURM_LOCALID": r, "SLURM_JOB_NODELIST": "localhost,node[2-9]",
        "SLURM_JOB_ID": job_id, "COMM_TEST_DIR": tmp_path}, timeout_s=90))
    for rank, res in enumerate(results):
        assert res["info"] == {"rank": rank, "world_size": 2, "local_rank": rank, "backend": "gloo",
                               "init_method": "env://", "source": "slurm"}
        assert res["sum"] == 3.0
        assert res["exported"] == {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                                   "MASTER_ADDR": "localhost", "MASTER_PORT": str(port)}
