"""The project's evaluator reads a converted folder (``import versatileffn`` registers the model types)."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from versatileffn.cli import main
from versatileffn.hf import convert_dense_model, save_converted
from versatileffn.tokenizer import load_tokenizer


@pytest.mark.olmo_eval
def test_versatileffn_eval_reads_a_converted_model(tmp_path):
    tok = load_tokenizer("olmo")
    cfg = transformers.LlamaConfig(vocab_size=50304, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=128)
    torch.manual_seed(0)
    dense_dir, conv_dir = tmp_path / "tiny-llama", tmp_path / "tiny-llama-versatile"
    transformers.LlamaForCausalLM(cfg).save_pretrained(dense_dir)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok.tok, eos_token="<|endoftext|>").save_pretrained(dense_dir)
    save_converted(convert_dense_model(dense_dir, {"n_experts": 4, "max_loops": 2}), conv_dir,
                   tokenizer_source=dense_dir)
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(conv_dir), "--tasks", "sciq", "--limit", "2", "--no-progress",
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["model"]["kind"] == "hf" and rec["model"]["model_type"] == "versatileffn_llama"
    assert rec["tasks"]["sciq"]["n"] == 2
    # converted models report what VersatileLM reports: new parameters, executed loops, FFN FLOPs
    assert rec["params"]["added_over_dense"] == 2 * 32 * (4 + 2)  # router (N=4) + loop head (L=2) per layer
    layers = rec["ffn_stats"]["sciq"]
    assert len(layers) == 2 and all(sum(s["loop_histogram"]) == s["tokens"] > 0 for s in layers)
    assert rec["flops"]["all_tasks"]["paper"] == pytest.approx(rec["flops"]["all_tasks"]["formula"])


def test_ffn_model_config_drives_the_flop_accounting(make_dense, ffn_options, input_ids):
    from versatileffn.flops import base_ffn_flops_per_token, executed_ffn_flops

    model = convert_dense_model(make_dense("qwen2"), ffn_options)
    cfg = model.ffn_model_config()
    assert (cfg.d_model, cfg.d_hidden, cfg.n_layers, cfg.ffn.n_experts, cfg.ffn.max_loops) == (32, 64, 2, 4, 3)
    model.reset_ffn_stats()
    with torch.no_grad(), model.identity_mode():
        model(input_ids)
    flops = executed_ffn_flops(cfg, model.ffn_stats())
    # one loop per token, and (gated, l < L_max) the width path: base cost plus the MoE-like width cost
    assert flops["mean_loops"] == 1.0 and flops["frac_below_max"] == 1.0
    assert flops["paper"] == pytest.approx(flops["formula"]) and flops["paper"] > base_ffn_flops_per_token(cfg)


def test_ffn_model_config_keeps_every_layer_option(make_dense, ffn_options):
    """The equivalent ModelConfig holds the layers' own config (no option dropped on the way, e.g. depth_grad)."""
    model = convert_dense_model(make_dense("llama"), {**ffn_options, "depth_grad": "exact", "tau_decay": 0.5})
    layer = model.versatile_layers()[0].config
    assert model.ffn_model_config().ffn_layer_config() == layer and layer.depth_grad == "exact"
