"""Continued pre-training with the dense-preserving start: the model initialised from a dense checkpoint
(``train.init_from``) has the dense model's step-0 logits (converted HF models: tests/hf/test_hf_convert.py)."""
from __future__ import annotations

import pytest
import torch

from versatileffn import model_config
from versatileffn.ffn import ffn_config_from_dict
from versatileffn.io import save_model
from versatileffn.train.checkpoint import init_from_dense


@pytest.mark.parametrize("ffn", [{"kind": "versatile"}, {"kind": "versatile", "mode": "ungated"},
                                 {"kind": "loop", "n_loops": 4}])
def test_step0_logits_equal_the_dense_model(ffn, tmp_path):
    torch.manual_seed(0)
    dense = model_config("micro").build().eval()
    save_model(dense, tmp_path / "dense")
    ids = torch.randint(0, dense.config.vocab_size, (2, 24))
    torch.manual_seed(1)
    cfg = model_config("micro", ffn_config_from_dict({**ffn, "dense_preserving": True}))
    model = cfg.build()
    fresh = init_from_dense(model, tmp_path / "dense")
    assert any("loop_gain" in k for k in fresh)
    with torch.no_grad():
        want = dense(ids).logits
        torch.testing.assert_close(model.eval()(ids).logits, want, rtol=0, atol=1e-6)
        torch.manual_seed(2)
        torch.testing.assert_close(model.train()(ids).logits, want, rtol=0, atol=1e-6)
    # the paper's start (the same conversion without the option) does not
    paper = model_config("micro", ffn_config_from_dict(ffn)).build()
    init_from_dense(paper, tmp_path / "dense")
    with torch.no_grad():
        assert (paper.eval()(ids).logits - want).abs().max() > 1e-3

