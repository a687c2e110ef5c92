"""The analysis on converted Hugging Face models (VersatileFFN modules inside a transformers decoder)."""
import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("versatileffn.hf.convert")

from versatileffn.analysis import collect, ffn_flops_summary, flops_config  # noqa: E402
from versatileffn.cli import main  # noqa: E402

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=0, pad_token_id=0)
ARCHS = [a for a, c in (("llama", "LlamaConfig"), ("olmo2", "Olmo2Config")) if hasattr(transformers, c)]


def converted(arch: str):
    cfg = getattr(transformers, {"llama": "LlamaConfig", "olmo2": "Olmo2Config"}[arch])(**TINY)
    torch.manual_seed(0)
    dense = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    model = hf.convert_dense_model(dense, {"n_experts": 4, "top_k": 2, "max_loops": 3})
    with torch.no_grad():  # spread the predicted loops so every statistic has several values
        for layer in model.versatile_layers():
            layer.loop_predictor.weight.normal_(std=1.0)
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_per_token_loops_match_the_layer_statistics(arch, token_stream):
    model = converted(arch)
    traces, rows = collect(model, token_stream % 97, seq_len=16)
    assert len(traces) == 2
    for t, s in zip(traces, model.ffn_stats()):
        hist = np.bincount(t.loops.reshape(-1) - 1, minlength=3).tolist()
        assert hist == t.summary["loop_histogram"] == s["loop_histogram"]
        assert len(set(t.loops.reshape(-1).tolist())) >= 2
        assert np.isfinite(t.cos_out).all()
    if hasattr(model, "ffn_model_config"):  # FLOPs use the model's own FFN config
        assert flops_config(model) == model.ffn_model_config()
    flops = ffn_flops_summary([t.summary for t in traces], flops_config(model))
    assert flops["dense_ffn_flops_per_token"] == 2 * 6 * 32 * 64 and flops["ffn_flops_per_token"] > 0


@pytest.mark.plotting
def test_cli_on_a_saved_converted_model(tmp_path, tokenizer, token_stream):
    assert tokenizer.vocab_size <= TINY["vocab_size"]
    folder = hf.save_converted(converted("llama"), tmp_path / "hf")
    tokenizer.save(folder / "tokenizer.json")
    txt = tmp_path / "t.txt"
    txt.write_text(tokenizer.decode(token_stream.tolist()))
    out = tmp_path / "out"
    assert main(["analyze", "--model", str(folder), "--data", str(txt), "--out", str(out), "--seq-len", "16",
                 "--quiet"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert result["model"]["versatile_layers"] == 2 and result["model"]["max_loops"] == 3
    flops = [r["ffn_flops_per_token"] for r in result["loop_cap_sweep"]]
    assert flops == sorted(flops)  # caps 1, 2, 3, none: more loops allowed, never fewer FLOPs
    assert (out / "report.html").stat().st_size > 10_000
