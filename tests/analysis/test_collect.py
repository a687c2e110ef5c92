"""Statistics of the instrumented pass on models whose loop head and router are forced by hand."""
import numpy as np
import pytest
import torch

from versatileffn.analysis import (collect, ffn_flops_summary, find_versatile_layers, flops_config, layer_table,
                                   sample_cos_matrix, token_lambda_ranking)
from versatileffn.analysis.collect import sequences, token_quantities
from versatileffn.analysis.summarize import by_position
from versatileffn.ffn import VersatileFFNConfig, ffn_config_from_name
from versatileffn.ffn import VersatileFFN
from versatileffn.flops import swiglu_flops
from versatileffn.model import VersatileLM, model_config

from analysis_fixtures import forced_model


def test_every_token_runs_the_forced_loop_count(token_stream):
    model = forced_model(cat_id=None, loops_other=3, experts=(2, 6))
    traces, rows = collect(model, token_stream, seq_len=16, batch_size=3)
    n = rows.size
    assert n == (len(token_stream) // 16) * 16
    for t in traces:
        assert t.summary["loop_histogram"] == [0, 0, n, 0]
        assert t.summary["mean_loops"] == 3.0
        assert t.summary["mean_lambda"] == pytest.approx(0.25)  # (L_max - 3) / L_max
        assert t.summary["expert_load"] == [0, 0, 0.5, 0, 0, 0, 0.5, 0]
        assert t.width_tokens == n  # lambda > 0: every token runs the width path
        assert (t.loops == 3).all() and np.allclose(t.lam, 0.25)


def test_forced_statistics_per_token_and_per_layer(token_stream, cat_id):
    model = forced_model(cat_id=cat_id, loops_cat=4, loops_other=2, experts=(1, 5))
    traces, rows = collect(model, token_stream, seq_len=16, batch_size=4)
    is_cat = rows == cat_id
    n, n_cat = rows.size, int(is_cat.sum())
    assert 0 < n_cat < n
    n_other = n - n_cat
    flops = ffn_flops_summary([t.summary for t in traces], flops_config(model))
    table = layer_table(traces, flops["per_layer"])
    base, width = swiglu_flops(32, 64), 2 * swiglu_flops(32, 8)  # micro: d 32, SwiGLU 64, 8 experts of 8
    # this implementation: masked down projection + router for width tokens, loop head for every token
    impl_width, impl_head = 2 * 32 * 64 + 2 * 32 * 8, 2 * 32 * 4
    for t, row in zip(traces, table):
        # the layer's own statistics
        assert row["loop_histogram"] == [0, n_other, 0, n_cat]
        assert row["mean_loops"] == pytest.approx((2 * n_other + 4 * n_cat) / n)
        assert row["mean_lambda"] == pytest.approx(0.5 * n_other / n)
        assert row["lambda_histogram"] == {"0": n_cat, "0.5": n_other}
        # tokens with lambda = 0 skip the width path, so only the others' assignments count
        assert row["expert_load"] == [0, 0.5, 0, 0, 0, 0.5, 0, 0]
        assert row["width_fraction"] == pytest.approx(n_other / n)
        assert row["ffn_flops_per_token"] == pytest.approx((base * (2 * n_other + 4 * n_cat) + width * n_other) / n)
        assert row["ffn_flops_implementation"] == pytest.approx(
            (base * (2 * n_other + 4 * n_cat) + impl_width * n_other) / n + impl_head)
        # per-token values from the pre-hook agree with the layer's statistics
        np.testing.assert_array_equal(t.loops, np.where(is_cat, 4, 2))
        np.testing.assert_allclose(t.lam, np.where(is_cat, 0.0, 0.5))
    assert flops["ffn_flops_per_token"] == pytest.approx(sum(r["ffn_flops_per_token"] for r in table))
    assert flops["paper_formula_flops"] == pytest.approx(flops["ffn_flops_per_token"])  # Table 2 formula, gated
    assert flops["dense_ffn_flops_per_token"] == 2 * base
    loops_pos = np.asarray(by_position(traces, "loops"))
    np.testing.assert_allclose(loops_pos[0], np.where(is_cat, 4, 2).mean(axis=0))


def test_branch_outputs_reproduce_the_layer_forward():
    """y = lambda Y_width + (1 - lambda) Y_depth (Eq. 3) from the hook's pieces equals the layer's own eval forward."""
    torch.manual_seed(1)
    cfg = VersatileFFNConfig(d_model=16, d_hidden=32, n_experts=4, top_k=2, max_loops=4)
    layer = VersatileFFN(cfg).eval()
    with torch.no_grad():
        layer.loop_predictor.weight.normal_(std=1.0)  # spread the predicted loops over 1..4
    h = torch.randn(2, 24, 16)
    q = token_quantities(layer, h)
    assert len(set(q["loops"].flatten().tolist())) >= 3
    lam = q["lam"].unsqueeze(-1)
    with torch.no_grad():
        y = layer(h)
    torch.testing.assert_close(lam * q["y_width"] + (1 - lam) * q["y_depth"], y, rtol=1e-5, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(q["y_width"], q["y_depth"], dim=-1)
    torch.testing.assert_close(q["cos_out"], cos)


def test_depth_only_ablation_has_no_width_quantities(token_stream):
    model = forced_model(cat_id=None, loops_other=2, ffn="versatile-depth")
    traces, _ = collect(model, token_stream, seq_len=16)
    assert traces[0].cos_out is None and traces[0].sample_width is None
    assert (traces[0].loops == 2).all()
    row = layer_table(traces)[0]
    assert row["mean_cos_width_depth"] is None and "expert_load" not in row


def test_sample_heatmap_diagonal_is_the_same_token_cosine(token_stream):
    torch.manual_seed(0)
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile"))).eval()
    traces, rows = collect(model, token_stream, seq_len=16, batch_size=2, sample_index=3)
    m = np.asarray(sample_cos_matrix(traces[1], n_positions=10))
    assert m.shape == (10, 10)
    np.testing.assert_allclose(np.diag(m), traces[1].cos_out[3, :10], rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(m) <= 1 + 1e-6)


def test_word_ranking_puts_the_forced_token_at_low_lambda(token_stream, cat_id, tokenizer):
    model = forced_model(cat_id=cat_id, loops_cat=4, loops_other=1)
    traces, rows = collect(model, token_stream, seq_len=16)
    ranking = token_lambda_ranking(traces[0], rows, tokenizer, top=5, min_count=2, skip_ids={tokenizer.eos_id})
    assert ranking["low"][0] == {"token": "cat", "count": int((rows == cat_id).sum()), "mean_lambda": 0.0,
                                 "mean_loops": 4.0}
    assert all(e["mean_lambda"] == 0.75 and e["token"] != "cat" for e in ranking["high"])
    assert ranking["high"][0]["token"] == "the"  # ties broken by frequency
    assert ranking["distinct_lambda"]
    assert all(e["count"] >= 2 for e in ranking["low"] + ranking["high"])


def test_works_on_a_wrapper_without_the_lm_methods(token_stream):
    """A converted HF model only has to hold VersatileFFN modules; the layers are found via model.modules()."""

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids).logits

    model = Wrapper(forced_model(cat_id=None, loops_other=3))
    assert [n for n, _ in find_versatile_layers(model)] == ["inner.blocks.0.ffn", "inner.blocks.1.ffn"]
    traces, rows = collect(model, token_stream, seq_len=16)
    assert traces[0].summary["loop_histogram"] == [0, 0, rows.size, 0]
    stats = [t.summary for t in traces]  # FLOPs from an equivalent config built from the layers
    assert ffn_flops_summary(stats, flops_config(model)) == ffn_flops_summary(stats, model.inner.config)


def test_clear_errors():
    dense = VersatileLM(model_config("micro", ffn_config_from_name("dense")))
    with pytest.raises(ValueError, match="no VersatileFFN layers"):
        find_versatile_layers(dense)
    with pytest.raises(ValueError, match="1-D"):
        sequences(np.zeros((2, 2)), 4)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sequences(np.zeros(1), 4)
    assert sequences(np.arange(10), 4).shape == (2, 4)
    assert sequences(np.arange(3), 8).shape == (1, 3)
    with pytest.raises(ValueError, match="sample index"):
        collect(forced_model(None, loops_other=1), np.arange(20), seq_len=8, sample_index=5)


@pytest.mark.parametrize("ffn, figures", [
    ("versatile-width", {"expert_load"}),
    ("versatile-ungated", {"loops_per_layer", "loop_histogram", "lambda_distribution", "expert_load",
                           "loops_vs_position", "cos_sample_heatmap", "cos_layers_positions", "cos_per_layer",
                           "wordcloud_low_lambda", "wordcloud_high_lambda"}),
])
@pytest.mark.plotting
def test_ablation_modes_get_the_pictures_their_paths_allow(ffn, figures, tmp_path, token_stream, tokenizer):
    from versatileffn.analysis import run_analysis

    model = forced_model(cat_id=None, loops_other=2, ffn=ffn)
    result = run_analysis(model, tokenizer, token_stream, tmp_path, seq_len=16, sweep=False, progress=False)
    assert set(result["figures"]) == figures
    row = result["layers"][0]
    assert row["expert_load"] == [0, 0.5, 0, 0.5, 0, 0, 0, 0]
    if ffn == "versatile-ungated":  # lambda fixed at 0.5, every token on both paths
        assert row["lambda_histogram"] == {"0.5": row["tokens"]} and row["width_fraction"] == 1.0
        assert not result["word_cloud"]["distinct_lambda"]  # the report says the low/high split is arbitrary
        assert "split into low and high is arbitrary" in (tmp_path / "report.html").read_text()
    else:
        assert "mean_loops" not in row and result["flops"]["mean_loops_all_layers"] is None
