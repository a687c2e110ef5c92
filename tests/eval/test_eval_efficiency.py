import pytest
import torch

from versatileffn.ffn import ffn_config_from_name
from versatileffn.eval.efficiency import flop_accounting, merge_layer_stats, parameter_counts
from versatileffn.eval.scoring import score_requests
from versatileffn.flops import executed_ffn_flops, paper_formula_flops, versatile_layer_flops
from versatileffn.model import model_config

from .conftest import micro_lm


@pytest.mark.parametrize("preset,ffn,expected_m", [
    ("paper-354m", "dense", 377.49), ("paper-720m", "dense", 849.35), ("paper-354m", "moe", 471.86),
    ("paper-720m", "moe", 1061.69), ("paper-354m", "loop2", 754.97), ("paper-354m", "loop6", 2264.92)])
def test_static_table2_counts(preset, ffn, expected_m):
    # paper Table 2 (k-Loop: k x the rounded base there, 754.98 / 2264.96; exact k x 377.487 here)
    cfg = model_config(preset, ffn_config_from_name(ffn))
    # the paper sums rounded parts (720M MoE: 849.35 + 212.34 = 1061.69; exact 1061.683)
    assert executed_ffn_flops(cfg, [])["paper"] / 1e6 == pytest.approx(expected_m, abs=0.01)


def test_paper_formula_reproduces_table2_from_its_own_statistics():
    cfg = model_config("paper-354m", ffn_config_from_name("versatile"))
    # all tokens at L_max=4: 4 x base, no width path; the paper's 1236.08M needs N_mean, P with
    # 377.487 N + 94.372 P = 1236.08, e.g. P = 0.5 -> N_mean = 3.1495
    assert paper_formula_flops(cfg, 4.0, 0.0) / 1e6 == pytest.approx(1509.95, abs=0.01)
    n = (1236.08e6 - 0.5 * (471.8592e6 - 377.48736e6)) / 377.48736e6
    assert paper_formula_flops(cfg, n, 0.5) / 1e6 == pytest.approx(1236.08, abs=1e-6)


def test_exact_count_by_hand_and_equal_to_formula():
    cfg = model_config("micro", ffn_config_from_name("versatile"))  # d 32, hidden 64, 2 layers, N 8, K 2, L 4
    F, Fe = 6 * 32 * 64, 6 * 32 * 8
    stats = [{"tokens": 10, "loop_histogram": [4, 0, 3, 3]}, {"tokens": 10, "loop_histogram": [0, 0, 0, 10]}]
    per_layer = versatile_layer_flops(cfg, stats[0]["loop_histogram"], 10)
    assert per_layer["paper"] == F * (4 + 9 + 12) + 7 * 2 * Fe
    assert per_layer["implementation"] == F * 25 + 7 * (2 * 32 * 64 + 2 * 32 * 8) + 10 * 2 * 32 * 4
    out = executed_ffn_flops(cfg, stats)
    assert out["paper"] == pytest.approx((F * 25 + 14 * Fe) / 10 + 4 * F)
    assert out["mean_loops"] == pytest.approx((25 + 40) / 20) and out["frac_below_max"] == pytest.approx(7 / 20)
    assert out["formula"] == pytest.approx(out["paper"])  # equal layer shapes: the formula is exact
    assert [(e["mean_loops"], e["frac_below_max"]) for e in out["per_layer"]] == [(2.5, 0.7), (4.0, 0.0)]
    with pytest.raises(ValueError, match="no tokens"):
        executed_ffn_flops(cfg, [{"tokens": 0, "loop_histogram": [0] * 4}] * 2)


def _force_loops(model, loop: int | None):
    """Dimension 0 of the residual stream is pinned at 100 in every layer (embedding column 0 = 100; the
    attention output and every FFN's down projection write nothing into it); the loop head reads only that
    dimension, so every token picks ``loop`` (None: zero head -> all logits tie -> loop 1)."""
    with torch.no_grad():
        model.embed.weight[:, 0] = 100.0
        for block in model.blocks:
            block.attn.o_proj.weight[0].zero_()
            block.ffn.down_proj.weight[0].zero_()
            block.ffn.loop_predictor.weight.zero_()
            if loop is not None:
                block.ffn.loop_predictor.weight[loop - 1, 0] = 1.0


@pytest.mark.parametrize("loop", [None, 3, 4])
def test_executed_flops_from_forced_loop_counts(loop, byte_tok):
    model = micro_lm()
    _force_loops(model, loop)
    model.reset_ffn_stats()
    score_requests(model, byte_tok, [("Question: forced loops\nAnswer:", " yes"), ("Question: forced loops\nAnswer:",
                                                                                   " no")])
    stats = model.ffn_stats()
    l_hat = loop or 1
    n = stats[0]["tokens"]
    assert all(s["loop_histogram"] == [n if i + 1 == l_hat else 0 for i in range(4)] for s in stats)
    F, Fe = 6 * 32 * 64, 6 * 32 * 8
    width = 2 if l_hat < 4 else 0  # top-K experts when lambda > 0
    acc = flop_accounting(model, {"toy": stats})
    assert acc["all_tasks"]["paper"] == 2 * (l_hat * F + width * Fe)
    assert acc["all_tasks"]["implementation"] == 2 * (l_hat * F + (2 * 32 * 64 + 2 * 32 * 8 if width else 0)
                                                      + 2 * 32 * 4)
    assert acc["per_task"]["toy"]["paper"] == acc["all_tasks"]["paper"]
    assert acc["all_tasks"]["formula"] == pytest.approx(acc["all_tasks"]["paper"])


def test_merge_layer_stats():
    a = [{"tokens": 3, "loop_histogram": [1, 2]}]
    b = [{"tokens": 5, "loop_histogram": [5, 0]}]
    assert merge_layer_stats({"a": a, "b": b}) == [{"tokens": 8, "loop_histogram": [6, 2]}]


def test_parameter_counts():
    p = parameter_counts(micro_lm())
    assert p["added_over_dense"] == 2 * 32 * (8 + 4)  # router d x N + loop head d x L_max per layer
    assert p["total"] == p["dense_base"] + p["added_over_dense"]
    assert parameter_counts(micro_lm("dense"))["added_over_dense"] == 0
