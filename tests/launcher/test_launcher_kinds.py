"""The launcher kinds' descriptions agree with the commands they build."""
from accelops.launcher.commands import EveryRank
from accelops.launcher.kinds import KINDS, LAUNCHERS, get_kind


def test_launchers_are_every_kind_but_local_in_deepspeeds_order():
    assert LAUNCHERS == ("ssh", "pdsh", "openmpi", "mpich", "slurm")
    assert get_kind("local").local and get_kind("local").per_node and get_kind("local").program is None


def test_each_kind_starts_the_program_it_needs():
    job = EveryRank("x", [("a", 2), ("b", 2)], {"K": "V"}, ["python", "train.py"])
    for name, kind in KINDS.items():
        if kind.local:
            assert kind.reach is None and kind.every_rank is None
            continue
        assert (kind.reach is None) != (kind.every_rank is None), name
        argv = kind.reach("a", "true", []) if kind.per_node else kind.every_rank(job).argv
        assert argv[0] == kind.program, name
