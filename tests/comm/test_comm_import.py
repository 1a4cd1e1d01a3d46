"""Importing accelops.comm imports no torch and starts nothing."""
import json
import subprocess
import sys

PROBE = """
import json, sys, threading
events = []
sys.addaudithook(lambda e, a: events.append(e) if e in ("subprocess.Popen", "os.fork", "socket.bind",
                                                        "socket.connect") else None)
import accelops.comm
from accelops.comm import init_distributed, resolve_launch_env, all_reduce, ReduceOp, isend, barrier
assert all_reduce.__defaults__[0] is ReduceOp.SUM
print(json.dumps({"torch": [m for m in sys.modules if m == "torch" or m.startswith("torch.")],
                  "mpi4py": "mpi4py" in sys.modules, "threads": threading.active_count(), "events": events}))
"""


def test_import_comm_is_side_effect_free():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"torch": [], "mpi4py": False, "threads": 1, "events": []}
    assert result.stderr == ""
