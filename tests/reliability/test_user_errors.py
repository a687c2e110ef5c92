"""One clear message for every user error, a traceback for bugs (issue 14: "One clear message for every user
error"). Each case: exit code 2, one line without "Traceback", the files that were there untouched."""
import gzip
import shutil

import numpy as np
import pytest
from reliability_helpers import one_line_error, snapshot, write_config
from train_helpers import micro_config

from versatileffn.cli import main
from versatileffn.errors import UserError
from versatileffn.io import save_model


@pytest.fixture
def cfg_file(token_dir, tmp_path):
    return write_config(micro_config(token_dir, tmp_path / "run", "dense", "train.max_steps=1"), tmp_path / "c.yaml")


@pytest.mark.parametrize("edit, expected", [
    ("model: 5\n", "model must be a section (a mapping of keys to values); got 5"),
    ("model: [1, 2]\n", "model must be a section"),
    ("train: {max_steps: true}\n", "train.max_steps must be an integer; got True"),
    ("train: {tensorboard: 'no'}\n", "train.tensorboard must be true or false; got 'no'"),
    ("train: {lr: yes}\n", "train.lr must be a number; got True"),
    ("data: {path: [a]}\n", "data.path must be a single value, not a list"),
    ("- just\n- a list\n", "must hold a mapping at the top level"),
    ("model: {d_model: 32\n", "is not valid YAML"),
])
def test_bad_yaml_is_one_message(edit, expected, tmp_path, cli):
    f = tmp_path / "bad.yaml"
    f.write_text(edit)
    rc, _, err = cli("train", "--config", f, "--out", tmp_path / "run", "-q")
    assert rc == 2 and expected in one_line_error(err, "train")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, expected", [
    ("model.ffn=versatile", "model.ffn must be a section (a mapping such as {kind: ...}), not a single value"),
    ("model.ffn.kind=nope", "model.ffn.kind must be one of"),
    ("train=3", "train must be a section"),
    ("train.max_steps=true", "train.max_steps must be an integer; got True"),
    ("train.tensorboard=\"no\"", "train.tensorboard must be true or false; got 'no'"),
    ("train.lr", "must look like key=value"),
])
def test_bad_overrides_are_one_message(override, expected, cfg_file, tmp_path, cli):
    rc, _, err = cli("train", "--config", cfg_file, "--set", override, "-q")
    assert rc == 2 and expected in one_line_error(err, "train")


def test_non_utf8_files_are_named(cfg_file, token_dir, tmp_path, cli):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("train: {seed: 1}  # caf\xe9\n".encode("latin-1"))
    rc, _, err = cli("train", "--config", latin, "-q")
    assert rc == 2 and f"config file {latin} is not UTF-8 text" in one_line_error(err, "train")
    for name, data in (("notes.txt", b"fine line\n\nbad \xff\xfe bytes\n"),
                       ("rows.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')):
        src = tmp_path / name
        src.write_bytes(data)
        rc, _, err = cli("prepare-data", src, "--out", tmp_path / "data", "--tokenizer", token_dir, "-q")
        assert rc == 2 and f"{src}:" in (line := one_line_error(err, "prepare-data")) and "is not UTF-8 text" in line
    broken = tmp_path / "docs.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
    rc, _, err = cli("prepare-data", broken, "--out", tmp_path / "data", "--tokenizer", token_dir, "-q")
    assert rc == 2 and "is not a readable gzip file" in one_line_error(err, "prepare-data")
    assert not (tmp_path / "data").exists()


def test_token_ids_beyond_the_vocabulary_are_found_when_the_data_is_opened(token_dir, tmp_path, cli):
    data = tmp_path / "data"
    shutil.copytree(token_dir, data)
    ids = np.fromfile(data / "train.bin", dtype=np.uint16)
    ids[77] = 999
    ids.tofile(data / "train.bin")
    cfg = write_config(micro_config(data, tmp_path / "run", "dense", "train.max_steps=1"), tmp_path / "c.yaml")
    rc, _, err = cli("train", "--config", cfg, "-q")
    assert rc == 2
    line = one_line_error(err, "train")
    assert "split 'train' holds token id 999 at position 77, but model.vocab_size=320" in line
    assert not (tmp_path / "run").exists()


def test_corrupt_model_files_are_one_message(token_dir, tmp_path, cli):
    model = micro_config(token_dir, tmp_path / "r", "dense").model.build()
    save_model(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    rc, _, err = cli("eval", "--model", tmp_path / "m", "--tasks", "none", "--out", tmp_path / "r.json", "-q")
    assert rc == 2 and "could not read weights" in one_line_error(err, "eval") and "truncated" in err
    (tmp_path / "m" / "config.json").write_text('{"format": "versatileffn", "model": 5}')
    rc, _, err = cli("eval", "--model", tmp_path / "m", "--tasks", "none", "--out", tmp_path / "r.json", "-q")
    assert rc == 2 and "config.json has no 'model' section" in one_line_error(err, "eval")
    assert not (tmp_path / "r.json").exists()


def test_hugging_face_folders_without_weights_or_truncated(tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    hf = tmp_path / "hf"
    transformers.LlamaForCausalLM(cfg).save_pretrained(hf)
    weights = hf / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    for command in (["eval", "--model", hf, "--tasks", "none", "--out", tmp_path / "r.json"],
                    ["convert", "--from", hf, "--out", tmp_path / "conv"]):
        rc, _, err = cli(*command, "-q")
        assert rc == 2 and f"could not read weights {weights} (truncated or corrupt)" in one_line_error(err, command[0])
    weights.unlink()
    rc, _, err = cli("eval", "--model", hf, "--tasks", "none", "--out", tmp_path / "r.json", "-q")
    assert rc == 2 and f"{hf} holds no model weights" in one_line_error(err, "eval")
    assert not (tmp_path / "conv").exists() and not (tmp_path / "r.json").exists()


def test_eval_out_is_checked_before_the_evaluation(tmp_path, cli):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rc, _, err = cli("eval", "--model", tmp_path / "no-such-model", "--out", blocker / "r.json", "-q")
    assert rc == 2 and "afile is a file, not a folder" in one_line_error(err, "eval")  # not the missing model
    rc, _, err = cli("eval", "--model", tmp_path / "no-such-model", "--out", tmp_path, "-q")
    assert rc == 2 and "it is a folder, not a file" in one_line_error(err, "eval")


def test_bugs_keep_their_traceback_and_debug_shows_it(cfg_file, monkeypatch, capsys):
    import versatileffn.cli.info as info

    def buggy(*a):
        return {}["missing"]  # an internal bug: KeyError

    monkeypatch.setattr(info, "describe", buggy)
    with pytest.raises(KeyError):
        main(["info"])

    def not_ours(*a):
        return int("twelve")  # a ValueError, but not raised by a `raise` of the package

    monkeypatch.setattr(info, "describe", not_ours)
    with pytest.raises(ValueError):
        main(["info"])
    with pytest.raises(UserError, match="train.lr must be a number"):
        main(["--debug", "train", "--config", str(cfg_file), "--set", "train.lr=oops"])
    with pytest.raises(UserError):
        main(["train", "--config", str(cfg_file), "--set", "train.lr=oops", "--debug"])
    monkeypatch.setenv("VERSATILEFFN_DEBUG", "1")
    with pytest.raises(UserError):
        main(["train", "--config", str(cfg_file), "--set", "train.lr=oops"])


def test_resume_of_another_architecture_touches_nothing(token_dir, tmp_path, cli):
    from versatileffn.train import Trainer

    Trainer(micro_config(token_dir, tmp_path / "run", "dense", "train.max_steps=2")).train()
    before = snapshot(tmp_path / "run")
    rc, _, err = cli("train", "--out", tmp_path / "run", "--resume", "--ffn", "moe", "-q")
    assert rc == 2 and "does not fit this model" in one_line_error(err, "train")
    assert snapshot(tmp_path / "run") == before
