import numpy as np
import pytest
import torch

from versatileffn.data.prepare import prepare, train_bpe
from versatileffn.train import load_run_config

WORDS = ("the river bends north past the old mill where children learn to swim in summer and skate "
         "in winter while the miller counts sacks of grain and sings about the weather").split()


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models are latency-bound: one intra-op thread avoids spin-waiting on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory):
    """A prepared token folder (BPE of 300 entries) of simple repetitive English-like text."""
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 60)))) + "." for _ in range(400)]
    out = tmp_path_factory.mktemp("tokens")
    tok = train_bpe(docs, 300)
    prepare(docs_source(out, docs), out, tok, val_fraction=0.1, progress=False)
    return out


def docs_source(out, docs):
    import json

    f = out / "docs.jsonl"
    f.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return [f]


def micro_config(token_dir, out_dir, ffn_kind="dense", *extra):
    """The micro model (d 32, 2 layers) on token_dir: 4 sequences of 32 tokens per step, 2 micro-batches."""
    from versatileffn.config import FFN_NAMES

    overrides = [f"model.{k}={v}" for k, v in dict(vocab_size=320, d_model=32, n_layers=2, n_heads=4, d_hidden=64,
                                                      max_seq_len=64).items()]
    overrides += [f"model.ffn.{k}={v}" for k, v in FFN_NAMES[ffn_kind].items()]
    overrides += [f"data.path={token_dir}", "data.seq_len=32", f"train.out_dir={out_dir}", "train.max_steps=6",
                  "train.global_batch_tokens=128", "train.micro_batch_size=2", "train.lr=1e-2", "train.log_every=1",
                  "train.eval_tokens=512", "train.progress=false", "train.tensorboard=false"]
    return load_run_config(None, overrides + list(extra))
