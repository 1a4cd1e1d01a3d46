"""SLURM node-list expansion without scontrol."""
import pytest

from accelops.comm import expand_nodelist, first_host


@pytest.mark.parametrize("nodelist,hosts", [
    ("node01", ["node01"]),
    ("node[001-004,007],gpu5", ["node001", "node002", "node003", "node004", "node007", "gpu5"]),
    ("a-[1-2]b", ["a-1b", "a-2b"]),
    ("r[1-2]-n[08-10]", ["r1-n08", "r1-n09", "r1-n10", "r2-n08", "r2-n09", "r2-n10"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("x[3],y,z[01-02]", ["x3", "y", "z01", "z02"]),
    (" a , b ", ["a", "b"]),
])
def test_expand(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts
    assert first_host(nodelist) == hosts[0]


def test_first_host_of_a_huge_list_is_lazy():
    assert first_host("n[0000000-9999999]") == "n0000000"


@pytest.mark.parametrize("bad", ["", "n[1-", "n1-]", "n[a-b]", "n[3-1]", "n[[1]]", "n[1--2]", "n[1-\u00b2]",
                                 "n[\u0661-\u0663]", "n[\uff11]"])
def test_malformed_lists_raise_value_error(bad):
    with pytest.raises(ValueError):
        expand_nodelist(bad) if bad else first_host(bad)
