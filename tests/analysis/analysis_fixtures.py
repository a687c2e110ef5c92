"""A micro LM with hand-set loop-head and router weights, so every statistic has a known value, plus a tiny BPE
tokenizer trained in the test (no hub, no files outside tmp_path)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from versatileffn.ffn import ffn_config_from_name
from versatileffn.model import VersatileLM, model_config
from versatileffn.tokenizer import Tokenizer

SENTENCES = [
    "the cat sat on the mat and the dog ran to the park",
    "a cat can clean the cup and cut the bread with a knife",
    "we will make tea and use water from the river",
    "the dog and the cat will remove the mat from the park",
] * 4
CAT = "cat"


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<|endoftext|>", "[UNK]"], show_progress=False)
    tok.train_from_iterator(SENTENCES, trainer)
    return Tokenizer(tok, "test-bpe")


def forced_model(cat_id: int | None, loops_cat: int = 4, loops_other: int = 1, experts=(1, 3),
                 ffn: str = "versatile", n_layers: int = 2) -> VersatileLM:
    """Micro LM whose every VersatileFFN picks ``loops_cat`` loops for token ``cat_id`` and ``loops_other`` for
    every other token, and routes every token to ``experts`` (top-2).

    The residual stream carries two huge embedding features that every layer passes on almost unchanged
    (attention and FFN updates are ~0.2 and ~1e-3 with the 0.02 init): dim 0 = +100 for every token, dim 1 =
    +50 for ``cat`` and -50 otherwise. The heads read only these features: loop-head row l-1 = e_0 + e_1
    (loops_cat) or e_0 - e_1 (loops_other); router rows of the chosen experts = e_0 * (2, 1).
    """
    torch.manual_seed(0)
    model = VersatileLM(model_config("micro", ffn_config_from_name(ffn), n_layers=n_layers))
    d = model.config.d_model
    with torch.no_grad():
        model.embed.weight[:, 0] = 100.0
        model.embed.weight[:, 1] = -50.0
        if cat_id is not None:
            model.embed.weight[cat_id, 1] = 50.0
        for layer in model.versatile_layers():
            if layer.loop_predictor is not None:
                w = torch.zeros(layer.max_loops, d)
                w[loops_other - 1, 0], w[loops_other - 1, 1] = 1.0, -1.0
                w[loops_cat - 1, 0], w[loops_cat - 1, 1] = 1.0, 1.0
                layer.loop_predictor.weight.copy_(w)
            if layer.router is not None:
                w = torch.zeros(layer.n_experts, d)
                w[experts[0], 0], w[experts[1], 0] = 2.0, 1.0
                layer.router.weight.copy_(w)
    return model.eval()


@pytest.fixture
def cat_id(tokenizer) -> int:
    ids = tokenizer.encode(CAT)
    assert len(ids) == 1, "the test tokenizer must keep 'cat' as one token"
    return ids[0]


@pytest.fixture
def token_stream(tokenizer) -> np.ndarray:
    ids = [t for s in SENTENCES for t in (*tokenizer.encode(s), tokenizer.eos_id)]
    return np.asarray(ids, dtype=np.int64)


def fake_validation(model, tokens, seq_len, batch_size=8, device=None, max_tokens=None, n_bytes=None):
    """Stand-in with the eval module's API: mean next-token loss over non-overlapping rows."""
    toks = torch.as_tensor(np.asarray(tokens[:max_tokens] if max_tokens else tokens, dtype=np.int64))
    n = (len(toks) - 1) // seq_len
    x = toks[: n * seq_len].view(n, seq_len)
    y = toks[1: n * seq_len + 1].view(n, seq_len)
    with torch.no_grad():
        loss = float(model(x, targets=y).loss)
    return {"loss": loss, "ppl": float(np.exp(loss)), "bpb": None, "tokens": int(x.numel()), "tokens_per_s": 0.0}


def fake_tasks(model, tokenizer, tasks=None, limit=None, batch_size=16, device=None, progress=True):
    """Stand-in with the eval module's API: 'accuracy' = mean executed loops of layer 0 / L_max on one prompt."""
    model.reset_ffn_stats()
    ids = torch.tensor([tokenizer.encode("the cat sat on the mat")])
    with torch.no_grad():
        model(ids)
    s = model.ffn_stats()[0]
    acc = s["mean_loops"] / len(s["loop_histogram"])
    res = {t: {"acc": acc, "acc_per_char": acc, "primary_metric": "acc", "primary": acc, "n": 1} for t in tasks}
    return {"tasks": res, "average": acc, "ffn_stats": {t: model.ffn_stats() for t in tasks}}

