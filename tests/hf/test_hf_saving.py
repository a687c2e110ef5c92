"""save -> load round trips (registered classes and trust_remote_code), tokenizer files, the convert CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")

from versatileffn.cli import main
from versatileffn.hf import convert_dense_model, is_converted_hf_dir, load_converted, save_converted

REPO = Path(__file__).resolve().parents[2]


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(97)}
    Tokenizer(models.WordLevel(vocab, unk_token="t0")).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))


def test_folders_saved_with_a_tau_buffer_still_load(make_dense, ffn_options, tmp_path):
    """Before tau became a schedule, every converted layer saved its annealed tau."""
    from safetensors.torch import load_file

    save_converted(convert_dense_model(make_dense("llama"), ffn_options), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    save_file({**state, **{f"model.layers.{i}.versatile_ffn.tau": torch.tensor(0.3) for i in range(2)}}, weights,
              metadata={"format": "pt"})
    loaded = load_converted(tmp_path / "m")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert float(loaded.versatile_layers()[0].tau) == pytest.approx(5.0)  # the schedule's step 0


def test_save_load_round_trip_weights_bit_exact(arch, make_dense, ffn_options, input_ids, tmp_path, trained):
    model = trained(convert_dense_model(make_dense(arch), ffn_options), input_ids)
    save_converted(model, tmp_path / "m")
    assert {"model.safetensors", "config.json", "modeling_versatileffn.py"} <= {p.name for p in (tmp_path / "m").iterdir()}
    with torch.no_grad():
        ref = model(input_ids).logits
    for kwargs in ({}, {"trust_remote_code": True}):
        loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", **kwargs).eval()
        assert type(loaded) is type(model)
        saved_sd, loaded_sd = model.state_dict(), loaded.state_dict()
        assert saved_sd.keys() == loaded_sd.keys()
        assert all(torch.equal(saved_sd[k], loaded_sd[k]) for k in saved_sd)
        assert all(torch.equal(a.expert_membership, b.expert_membership)
                   for a, b in zip(model.versatile_layers(), loaded.versatile_layers()))
        with torch.no_grad():  # weights are bit-exact; CPU GEMMs on mmap-loaded buffers may round differently
            torch.testing.assert_close(loaded(input_ids).logits, ref, rtol=0, atol=1e-5)


SCRIPT_REMOTE = """
import sys, torch, transformers
from safetensors.torch import load_file
d, exp = sys.argv[1], load_file(sys.argv[2])
try:
    transformers.AutoModelForCausalLM.from_pretrained(d)
    raise SystemExit("plain from_pretrained must fail before versatileffn is imported")
except (ValueError, KeyError):
    pass
m = transformers.AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
sd = load_file(d + "/model.safetensors")
assert sd.keys() == m.state_dict().keys() and all(torch.equal(v, m.state_dict()[k]) for k, v in sd.items())
with torch.no_grad():
    torch.testing.assert_close(m(exp["ids"]).logits, exp["logits"], rtol=0, atol=1e-5)
print("ok", type(m).__name__)
"""

SCRIPT_REGISTERED = """
import sys, versatileffn, torch
assert "transformers" not in sys.modules  # importing versatileffn does not import transformers
from transformers import AutoModelForCausalLM
from safetensors.torch import load_file
d, exp = sys.argv[1], load_file(sys.argv[2])
m = AutoModelForCausalLM.from_pretrained(d).eval()
sd = load_file(d + "/model.safetensors")
assert sd.keys() == m.state_dict().keys() and all(torch.equal(v, m.state_dict()[k]) for k, v in sd.items())
with torch.no_grad():
    torch.testing.assert_close(m(exp["ids"]).logits, exp["logits"], rtol=0, atol=1e-5)
print("ok", type(m).__name__)
"""


def test_fresh_interpreter_loads_with_remote_code_and_after_import(newest_arch, make_dense, ffn_options,
                                                                   input_ids, tmp_path):
    model = convert_dense_model(make_dense(newest_arch), ffn_options)
    save_converted(model, tmp_path / "m")
    with torch.no_grad():
        save_file({"ids": input_ids, "logits": model(input_ids).logits}, str(tmp_path / "expected.safetensors"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    for script in (SCRIPT_REMOTE, SCRIPT_REGISTERED):
        res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m"), str(tmp_path / "expected.safetensors")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"ok {type(model).__name__}" in res.stdout


def test_convert_cli_round_trip_and_tokenizer_files(make_dense, input_ids, tmp_path, capsys):
    dense = make_dense("llama", tie_word_embeddings=True)  # SmolLM-style tied embeddings
    dense.save_pretrained(tmp_path / "dense")
    _write_tokenizer(tmp_path / "dense")
    rc = main(["convert", "--from", str(tmp_path / "dense"), "--out", str(tmp_path / "conv"), "--n-experts", "4",
               "--top-k", "1", "--max-loops", "2", "--mode", "gated"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["identity_max_abs_diff"] == 0.0 and report["layers"] == 2
    assert report["versatile_ffn"] == {"n_experts": 4, "top_k": 1, "max_loops": 2, "mode": "gated"}
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "conv" / name).read_bytes() == (tmp_path / "dense" / name).read_bytes()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "conv")
    assert tok.convert_tokens_to_ids("t5") == 5
    conv = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "conv")
    assert conv.versatile_layers()[0].config.top_k == 1 and conv.versatile_layers()[0].config.max_loops == 2

    assert main(["convert", "--export-dense", "--from", str(tmp_path / "conv"), "--out", str(tmp_path / "back")]) == 0
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert (tmp_path / "back" / "tokenizer.json").is_file()
    back_sd, dense_sd = back.state_dict(), dense.state_dict()
    assert back_sd.keys() == dense_sd.keys() and all(torch.equal(back_sd[k], dense_sd[k]) for k in back_sd)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids).logits, dense(input_ids).logits, rtol=0, atol=1e-5)


def test_convert_cli_errors_are_one_clear_message(make_dense, tmp_path, capsys):
    make_dense("llama").save_pretrained(tmp_path / "dense")
    assert main(["convert", "--from", str(tmp_path / "dense"), "--out", str(tmp_path / "o"), "--n-experts", "5"]) == 2
    err = capsys.readouterr().err
    assert "versatileffn convert: error:" in err and "divisible by n_experts=5" in err
    assert main(["convert", "--from", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["convert", "--export-dense", "--from", str(tmp_path / "dense"), "--out", str(tmp_path / "o")]) == 2
    assert "not a converted VersatileFFN model" in capsys.readouterr().err
    assert not is_converted_hf_dir(tmp_path / "dense") and not is_converted_hf_dir(tmp_path / "missing")
    save_converted(convert_dense_model(tmp_path / "dense"), tmp_path / "conv")
    assert main(["convert", "--from", str(tmp_path / "conv"), "--out", str(tmp_path / "o")]) == 2
    assert "already a VersatileFFN model" in capsys.readouterr().err
    assert is_converted_hf_dir(tmp_path / "conv")
    loaded = load_converted(tmp_path / "conv", dtype=torch.bfloat16)
    assert not loaded.training and next(loaded.parameters()).dtype == torch.bfloat16
    assert all(m.tau.dtype == torch.float32 for m in loaded.versatile_layers())
    assert not (tmp_path / "o").exists()
