"""``zero.Init``, ``GatheredParameters`` and ``engine.offload_states`` on 2 and 4 gloo ranks (the cases are in
``zero_init_worker.py``).

A model built inside ``zero.Init`` must start from exactly the values a plain construction gives under the
same seed and train to exactly the same fp32 losses, at every ZeRO stage, while no rank ever held it whole
before ``initialize`` (its parameters are empty, its parts add up to 1/world of it)."""
import pytest

from engine_workers import run_ranks

STAGES = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def two_ranks():
    cases = [{"name": f"zero_init_{s}", "kind": "zero_init", "stage": s} for s in STAGES]
    cases += [{"name": "mixed", "kind": "zero_init", "stage": 3, "replace": True},
              {"name": "module", "kind": "zero_init_module"}, {"name": "gathered", "kind": "gathered"}]
    cases += [{"name": f"offload_{s}", "kind": "offload_states", "stage": s} for s in (0, 1, 3)]
    return run_ranks(2, cases, timeout_s=400)


@pytest.mark.parametrize("stage", STAGES)
def test_a_model_built_inside_zero_init_trains_exactly_like_one_built_outside(two_ranks, stage):
    for rank, results in enumerate(two_ranks):
        got = results[f"zero_init_{stage}"]
        assert got["start_diff"] == 0.0, rank
        assert got["inside"] == got["outside"], (rank, got)
        built, full = got["built_inside"], got["built_outside"]["full_numel"]
        assert built["empty"] and built["full_numel"] == full
        assert built["part_numel"] < 0.6 * full  # this rank's parts: about half of the model


def test_parameters_built_outside_the_context_train_beside_zero_init_ones(two_ranks):
    for rank, results in enumerate(two_ranks):
        got = results["mixed"]
        assert got["built_inside"]["zero_params"] == 19 - 2  # all but the replaced fc1 weight and bias
        assert got["start_diff"] == 0.0 and got["inside"] == got["outside"], (rank, got)
        module = results["module"]
        assert module["all_zero"] and module["converted"] == module["plain"], (rank, module)


def test_four_ranks_train_exactly_alike_at_stage_3():
    results = run_ranks(4, [{"name": "zero_init_3", "kind": "zero_init", "stage": 3}], timeout_s=400)
    parts = [r["zero_init_3"]["built_inside"]["part_numel"] for r in results]
    for got in (r["zero_init_3"] for r in results):
        assert got["start_diff"] == 0.0 and got["inside"] == got["outside"], got
    assert sum(parts) == results[0]["zero_init_3"]["built_outside"]["full_numel"]  # the parts tile the model


def test_gathered_parameters_on_zero_init_parameters(two_ranks):
    for rank, results in enumerate(two_ranks):
        got = results["gathered"]
        assert got["parts"] == ([[4, 5], [4]] if rank == 0 else [[3, 5], [3]])  # torch.chunk of dim 0
        assert got["gathered_equal"], rank  # the full values are the plain construction's
        assert got["shape_after"] == [0]  # released on exit
        assert got["after_modifier"] == [3.0], rank  # rank 1's change reached every rank
        assert got["dropped_equal"], rank  # without modifier_rank a change is dropped
        assert got["plain_untouched"]
        assert got["nested"].startswith("RuntimeError") and "already gathered" in got["nested"]
        assert got["bad_rank"].startswith("ValueError") and "[0, 2)" in got["bad_rank"]
        assert got["bad_params"].startswith("TypeError")


def test_gathered_parameters_loads_a_pretrained_model_and_edits_an_engine(two_ranks):
    for rank, results in enumerate(two_ranks):
        got = results["gathered"]
        assert got["loaded_diff"] == 0.0, rank  # DeepSpeed's recipe: rank 0 loads, every rank gets it
        assert got["engine_full_shape"] == [12, 6] and got["engine_full_type"] == "Parameter"
        assert got["engine_restored_type"] == "DTensor"
        assert got["engine_after"] == [0.5], rank
        assert got["engine_trains"]


@pytest.mark.parametrize("stage", (0, 1, 3))
def test_offload_states_frees_memory_and_reloads_bit_exact(two_ranks, stage):
    for rank, results in enumerate(two_ranks):
        got = results[f"offload_{stage}"]
        assert got["counted"] > 0 and set(got["freed"]) == {0}, got["freed"]
        assert "reload_states" in got["refused"] and got["refused"].startswith("RuntimeError")
        assert got["bit_exact"], rank
        assert got["with"] == got["without"], rank
        assert "'weights' is not a state type" in got["bad_include"]
        assert got["nvme"].startswith("ValueError")
