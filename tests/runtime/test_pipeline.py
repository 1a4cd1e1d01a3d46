"""``deepspeed.pipe`` on ``torch.distributed.pipelining``: a small GPT built from ``LayerSpec``s with a tied
embedding trains on 2 ranks (2 stages) and 4 ranks (2 stages x 2 data-parallel, and 4 stages) to the fp32
losses of the same model trained whole with torch's AdamW, for each partition method and schedule; the cases
are in ``pipeline_worker.py``."""
import pytest

from engine_workers import run_ranks

TOL = 2e-5
TWO = [{"name": "p2_1f1b_parameters", "kind": "pipeline", "stages": 2, "schedule": "1f1b", "method": "parameters"},
       {"name": "p2_gpipe_uniform", "kind": "pipeline", "stages": 2, "schedule": "gpipe", "method": "uniform"},
       {"name": "p2_type_ckpt", "kind": "pipeline", "stages": 2, "method": "type:block", "interval": 1},
       {"name": "p1", "kind": "pipeline", "stages": 1},
       {"name": "p2_fp16", "kind": "pipeline", "stages": 2, "precision": "fp16", "tol": 1e-4},
       {"name": "p2_bf16", "kind": "pipeline", "stages": 2, "precision": "bf16", "tol": 1e-3},
       {"name": "dropout", "kind": "pipeline_dropout", "stages": 2},
       {"name": "data", "kind": "pipeline_data", "stages": 2}]
FOUR = [{"name": "p2x2", "kind": "pipeline", "stages": 2},
        {"name": "p2x2_zero1", "kind": "pipeline", "stages": 2, "zero": 1, "schedule": "gpipe"},
        {"name": "p4_type", "kind": "pipeline", "stages": 4, "method": "type:block", "schedule": "gpipe"}]


@pytest.fixture(scope="module")
def two_ranks():
    return run_ranks(2, TWO, timeout_s=400)


@pytest.fixture(scope="module")
def four_ranks():
    return run_ranks(4, FOUR, timeout_s=400)


def _close(got, want, tol=TOL):
    return all(abs(a - b) <= tol * max(1.0, abs(b)) for a, b in zip(got, want)) and len(got) == len(want)


@pytest.mark.parametrize("case", [c for c in TWO if c["kind"] == "pipeline"], ids=lambda c: c["name"])
def test_two_ranks_train_like_the_whole_model(two_ranks, case):
    """fp32 within 2e-5 of the whole model's losses; fp16 (loss-scaled) and bf16 autocast within 1e-4, 1e-3."""
    name, tol = case["name"], case.get("tol", TOL)
    for rank, results in enumerate(two_ranks):
        got = results[name]
        assert _close(got["losses"], got["reference"], tol), (rank, got)
        assert _close([got["eval"]], [got["reference_eval"]], tol), (rank, got)
        # return_logits: the last stage's outputs of every micro-batch, None on the other stages
        assert got["logits"] == ([4 * 2, 5, 13] if got["last"] else None), (rank, got["logits"])
        assert got["steps"] == 3 and got["samples"] == 3 * 2 * 4 * (2 // max(1, len(got["parts"]) - 1))


def test_partition_methods_cut_where_deepspeed_cuts(two_ranks):
    results = two_ranks[0]
    # 6 layers: tied embedding, 4 blocks, tied head. parameters: the embedding counts on both ends.
    assert results["p2_1f1b_parameters"]["parts"] == [0, 3, 6]
    assert results["p2_gpipe_uniform"]["parts"] == [0, 3, 6]
    assert results["p2_type_ckpt"]["parts"] == [0, 3, 6]  # two Blocks per stage
    assert results["p1"]["parts"] == [0, 6]


def test_activation_checkpointing_gives_the_same_losses_with_dropout(two_ranks):
    for results in two_ranks:
        got = results["dropout"]
        assert got["with"] == got["without"], got


def test_train_batch_reads_the_engines_own_loader(two_ranks):
    for results in two_ranks:
        got = results["data"]
        assert got["has_loader"] and got["loader"] == got["by_hand"], got


@pytest.mark.parametrize("name", [c["name"] for c in FOUR])
def test_four_ranks_train_like_the_whole_model(four_ranks, name):
    for rank, results in enumerate(four_ranks):
        got = results[name]
        assert _close(got["losses"], got["reference"]), (rank, got)
    assert all(r[name]["sharded"] == (name == "p2x2_zero1") for r in four_ranks)  # ZeRO-1: FSDP2 over dp
    if name.startswith("p2x2"):
        assert [(r[name]["stage"], r[name]["dp_rank"]) for r in four_ranks] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    else:
        assert four_ranks[0][name]["parts"] == [0, 2, 3, 4, 6]


def test_a_two_stage_checkpoint_resumes_on_one_stage_and_on_two(tmp_path):
    save = run_ranks(2, [{"name": "r", "kind": "pipeline_resume", "stages": 2, "mode": "save", "dir": str(tmp_path)}])
    one = run_ranks(1, [{"name": "r", "kind": "pipeline_resume", "stages": 1, "mode": "load", "dir": str(tmp_path)}])
    two = run_ranks(2, [{"name": "r", "kind": "pipeline_resume", "stages": 2, "mode": "load", "dir": str(tmp_path)}])
    expected = save[0]["r"]["third"]
    assert one[0]["r"]["steps"] == 3 and two[1]["r"]["steps"] == 3
    assert abs(one[0]["r"]["third"] - expected) <= 1e-6 and abs(two[1]["r"]["third"] - expected) <= 1e-6


def test_to_torch_gives_the_whole_model(tmp_path):
    import torch

    from accelops.checkpoint import to_torch_state_dict

    run_ranks(2, [{"name": "r", "kind": "pipeline_resume", "stages": 2, "mode": "save", "dir": str(tmp_path)}])
    state = to_torch_state_dict(str(tmp_path))
    assert sorted(state) == sorted(["tied_modules.embed.weight"] + [f"{i}.{p}" for i in range(1, 5) for p in
                                                                   ("fc.weight", "fc.bias", "norm.weight", "norm.bias")])
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_rank_0_writes_each_batchs_mean_loss_to_the_monitor(tmp_path):
    import csv

    results = run_ranks(2, [{"name": "m", "kind": "pipeline_monitor", "stages": 2, "dir": str(tmp_path)}])
    with open(tmp_path / "pipe" / "Train_Samples_train_loss.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["step", "train_loss"]
    losses = results[0]["m"]["losses"]
    assert [int(r[0]) for r in rows[1:]] == [8, 16]  # global samples after each batch (micro 2 x 4 micro-batches)
    assert all(abs(float(r[1]) - loss) <= 1e-6 for r, loss in zip(rows[1:], losses)) and len(rows) == 3
