import pytest

from versatileffn.tokenizer import load_tokenizer


@pytest.mark.olmo_eval
def test_paper_tokenizer_offline(tmp_path):
    tok = load_tokenizer("olmo")
    assert tok.vocab_size == 50280 and tok.eos_id == 50279
    ids = tok.encode("VersatileFFN reuses the same weights.")
    assert tok.decode(ids) == "VersatileFFN reuses the same weights."
    tok.save(tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path).encode("hello world") == tok.encode("hello world")


def test_missing_and_corrupt_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="could not read tokenizer"):
        load_tokenizer(bad)
