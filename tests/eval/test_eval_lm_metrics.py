import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from versatileffn.eval import validation_metrics

from .conftest import micro_lm


def _brute(model, tokens, seq_len, n_pred):
    nll = 0.0
    for s in range(0, n_pred, seq_len):
        n = min(seq_len, n_pred - s)
        x = torch.tensor(tokens[s:s + n], dtype=torch.long)[None]
        y = torch.tensor(tokens[s + 1:s + 1 + n], dtype=torch.long)
        with torch.no_grad():
            nll += F.cross_entropy(model(x).logits[0].float(), y, reduction="sum").item()
    return nll


def test_loss_ppl_bpb_against_brute_force():
    model = micro_lm()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, size=151).astype(np.uint16)  # 150 predictions: 4 windows of 40 (last 30)
    out = validation_metrics(model, tokens, seq_len=40, batch_size=3, n_bytes=600)
    nll = _brute(model, tokens, 40, 150)
    assert out["tokens"] == 150
    assert out["loss"] == pytest.approx(nll / 150, rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(nll / 150), rel=1e-5)
    assert out["bpb"] == pytest.approx(nll / math.log(2) / 600, rel=1e-5)
    assert out["tokens_per_s"] > 0


def test_max_tokens_and_missing_bytes():
    model = micro_lm()
    tokens = np.arange(101) % 256
    out = validation_metrics(model, tokens, seq_len=16, max_tokens=50)
    assert out["tokens"] == 50 and out["bpb"] is None
    assert out["loss"] == pytest.approx(_brute(model, tokens, 16, 50) / 50, rel=1e-5)


def test_bad_inputs():
    model = micro_lm()
    with pytest.raises(ValueError, match="seq_len"):
        validation_metrics(model, np.arange(10), seq_len=0)
    with pytest.raises(ValueError, match="1-D array"):
        validation_metrics(model, np.arange(1), seq_len=4)
