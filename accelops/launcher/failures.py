"""Reading a failed node's output: which rank failed, with what exit code, and the user's last lines.

Pure functions over lists of output lines (without the host prefix). They understand the failure
reports of the engines ``ds_launch`` runs:

* torchrun's ``ChildFailedError`` summary (``Root Cause (first observed failure):`` then
  ``rank : 1 (local_rank: 0)`` and ``exitcode : 7 (pid: ...)``);
* Open MPI's ``mpirun`` (``Process name: [[job,1],RANK]`` and ``Exit code: N``);
* ``srun`` (``srun: error: HOST: task RANK: Exited with exit code N``).
"""
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

#: How many of the user's lines a failure report shows.
TAIL_LINES = 20

_TORCHRUN_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S*torch/distributed/")
_ROOT_CAUSE = "Root Cause (first observed failure):"
_TR_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)")
_TR_CODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_TR_HOST = re.compile(r"^\s*host\s*:\s*(\S+)")
_MPI_RANK = re.compile(r"Process name:\s*\[\[\d+,\d+\],(\d+)\]")
_MPI_CODE = re.compile(r"^\s*Exit code:\s*(\d+)")
_OMP_NOTICE = "Setting OMP_NUM_THREADS environment variable for each process"
_STARS = re.compile(r"^\*{20,}\s*$")
_SRUN = re.compile(r"srun: error: (\S+): tasks? (\d+)(?:[-,]\S*)?: Exited with exit code (\d+)")


@dataclass
class RankFailure:
    """The first failed rank a report names: global ``rank``, ``local_rank`` and ``host`` when
    known, and its ``exit_code`` as a shell reports it (128+N for a rank killed by signal N)."""

    rank: Optional[int]
    exit_code: Optional[int]
    local_rank: Optional[int] = None
    host: Optional[str] = None

    def describe(self) -> str:
        """``'rank 1 (local rank 0) exited with code 7'``, leaving out what is unknown."""
        who = "a rank" if self.rank is None else f"rank {self.rank}"
        if self.local_rank is not None:
            who += f" (local rank {self.local_rank})"
        if self.exit_code is None:
            return f"{who} failed"
        return f"{who} exited with code {self.exit_code}"


def _shell_code(code: int) -> int:
    """torchrun reports a signal N as exit code -N; a shell says 128+N."""
    return 128 - code if code < 0 else code


def find_failure(lines: Sequence[str]) -> Optional[RankFailure]:
    """The failed rank named by a torchrun, Open MPI or srun report in ``lines``, else ``None``."""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].strip() == _ROOT_CAUSE:
            failure = RankFailure(None, None)
            for line in lines[index + 1:index + 10]:
                if _TR_RANK.match(line):
                    failure.rank, failure.local_rank = map(int, _TR_RANK.match(line).groups())
                elif _TR_CODE.match(line):
                    failure.exit_code = _shell_code(int(_TR_CODE.match(line).group(1)))
                elif _TR_HOST.match(line):
                    failure.host = _TR_HOST.match(line).group(1)
            return failure
    for index, line in enumerate(lines):
        match = _MPI_RANK.search(line)
        if match:
            failure = RankFailure(int(match.group(1)), None)
            for after in lines[index + 1:index + 4]:
                if _MPI_CODE.match(after):
                    failure.exit_code = int(_MPI_CODE.match(after).group(1))
            return failure
        match = _SRUN.search(line)
        if match:
            return RankFailure(int(match.group(2)), int(match.group(3)), host=match.group(1))
    return None


def user_tail(lines: Sequence[str], count: int = TAIL_LINES) -> List[str]:
    """The last ``count`` lines of ``lines`` less torchrun's own output: its agent log lines, its
    ``OMP_NUM_THREADS`` notice, and the ``ChildFailedError`` traceback and summary at the end, so the
    rank's own error shows."""
    lines = list(lines)
    for index in range(len(lines) - 1, -1, -1):
        if "ChildFailedError" in lines[index]:
            start = max((i for i in range(index) if lines[i].startswith("Traceback (most recent call last)")),
                        default=index)
            lines = lines[:start]
            break
    kept = [line for line in lines if not _TORCHRUN_LOG.match(line)]
    for index in range(len(kept) - 1, 0, -1):  # torchrun's OMP_NUM_THREADS notice, between two star lines
        if kept[index].startswith(_OMP_NOTICE) and index + 1 < len(kept) and _STARS.match(kept[index - 1]) \
                and _STARS.match(kept[index + 1]):
            start = index - 2 if index >= 2 and not kept[index - 2].strip() else index - 1
            del kept[start:index + 2]
    return kept[-count:]
