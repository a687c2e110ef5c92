"""Executed FFN FLOPs from the statistics and the inference loop-cap sweep."""
import math

import pytest

from versatileffn.analysis import loop_cap_sweep
from versatileffn.flops import paper_formula_flops, swiglu_flops

from analysis_fixtures import fake_tasks, fake_validation, forced_model


def test_flops_fall_with_the_cap_on_a_forced_model(token_stream, tokenizer):
    model = forced_model(cat_id=None, loops_other=4)  # every token wants L_max = 4 loops (lambda = 0)
    rows = loop_cap_sweep(model, token_stream, seq_len=16, tokenizer=tokenizer, tasks=["t1", "t2"],
                          validation_fn=fake_validation, tasks_fn=fake_tasks)
    assert [r["cap"] for r in rows] == [1, 2, 3, 4, None]
    base, width = swiglu_flops(32, 64), 2 * swiglu_flops(32, 8)
    n_layers = 2
    # cap k < 4: k loops + the width path (lambda = (4 - k) / 4 > 0); cap 4 / none: 4 loops, no width path
    expected = [n_layers * (k * base + width) for k in (1, 2, 3)] + [n_layers * 4 * base] * 2
    assert [r["ffn_flops_per_token"] for r in rows] == pytest.approx(expected)
    flops = [r["ffn_flops_per_token"] for r in rows]
    assert all(a < b for a, b in zip(flops[:4], flops[1:4]))
    for r, k in zip(rows, (1, 2, 3, 4, 4)):
        assert r["mean_loops_per_layer"] == [k, k]
        assert r["paper_formula_flops"] == pytest.approx(paper_formula_flops(model.config, k, 1.0 if k < 4 else 0.0))
        assert r["accuracy"] == pytest.approx(k / 4)  # the fake benchmark reads the capped loops
        assert r["tasks"] == {"t1": pytest.approx(k / 4), "t2": pytest.approx(k / 4)}
        # two tasks of one question each: sqrt(2 * p (1 - p) / 1) / 2
        assert r["task_examples"] == {"t1": 1, "t2": 1}
        assert r["accuracy_stderr"] == pytest.approx(math.sqrt(2 * (k / 4) * (1 - k / 4)) / 2)
        assert r["task_ffn_flops_per_token"] == pytest.approx(r["ffn_flops_per_token"])
        assert r["val_tokens"] > 0 and r["val_loss"] > 0
    assert all(layer.runtime.loop_cap is None for layer in model.versatile_layers())  # restored


def test_sweep_restores_a_user_cap_and_accepts_custom_caps(token_stream):
    model = forced_model(cat_id=None, loops_other=3)
    model.set_inference_loop_cap(2)
    rows = loop_cap_sweep(model, token_stream, seq_len=16, caps=[None, 1], validation_fn=fake_validation)
    assert [r["mean_loops_per_layer"] for r in rows] == [[3, 3], [1, 1]]
    assert "accuracy" not in rows[0]
    assert all(layer.runtime.loop_cap == 2 for layer in model.versatile_layers())

