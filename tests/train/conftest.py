import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # train_helpers (pytest runs with --import-mode=importlib)

from versatileffn.data.prepare import prepare, train_bpe

WORDS = ("the river bends north past the old mill where children learn to swim in summer and skate "
         "in winter while the miller counts sacks of grain and sings about the weather").split()


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
