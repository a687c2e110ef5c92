import pytest
import torch

from versatileffn import VersatileLM, ffn_config_from_name, model_config
from versatileffn.flops import base_ffn_flops_per_token, moe_ffn_flops_per_token, paper_formula_flops

PAPER = {  # FACTS.md parameter counts (M)
    ("paper-354m", "dense"): 354.71, ("paper-354m", "versatile"): 354.90, ("paper-354m", "moe"): 543.59,
    ("paper-720m", "dense"): 720.81, ("paper-720m", "versatile"): 721.09, ("paper-720m", "moe"): 1145.69,
}


@pytest.mark.parametrize("preset, ffn", list(PAPER))
def test_paper_parameter_counts_within_0_05_percent(preset, ffn):
    with torch.device("meta"):
        model = VersatileLM(model_config(preset, ffn_config_from_name(ffn)))
    got = model.num_params() / 1e6
    assert abs(got - PAPER[preset, ffn]) / PAPER[preset, ffn] < 5e-4, got


def test_paper_ffn_flops():
    c354, c720 = model_config("paper-354m", ffn_config_from_name("moe")), model_config("paper-720m")
    assert round(base_ffn_flops_per_token(c354) / 1e6, 2) == 377.49
    assert round(base_ffn_flops_per_token(c720) / 1e6, 2) == 849.35
    assert round(moe_ffn_flops_per_token(c354) / 1e6, 2) == 471.86
    # Table 2's formula: with 1 loop everywhere and all tokens below L_max it is Base + (MoE - Base)
    assert paper_formula_flops(c354, 1.0, 1.0) == moe_ffn_flops_per_token(c354)


@pytest.mark.parametrize("ffn", ["dense", "moe", "loop2", "versatile", "versatile-width"])
def test_lm_forward_backward_and_aux_loss(ffn):
    model = VersatileLM(model_config("micro", ffn_config_from_name(ffn)))
    ids = torch.randint(0, 256, (2, 12))
    out = model(ids[:, :-1], targets=ids[:, 1:])
    assert out.logits.shape == (2, 11, 256) and out.loss.ndim == 0
    assert (out.aux_loss is not None) == (ffn in ("moe", "versatile", "versatile-width"))
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name


@pytest.mark.parametrize("ffn", ["dense", "versatile", "moe"])
def test_generate_with_and_without_cache_agree(ffn):
    model = VersatileLM(model_config("micro", ffn_config_from_name(ffn), qk_norm=True, n_kv_heads=2))
    prompt = torch.randint(0, 256, (3, 5))
    a = model.generate(prompt, max_new_tokens=10, use_cache=True)
    b = model.generate(prompt, max_new_tokens=10, use_cache=False)
    assert torch.equal(a, b) and a.shape == (3, 15)


def test_chunked_prefill_matches_full_forward():
    from versatileffn import KVCache
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile"))).eval()
    ids = torch.randint(0, 256, (2, 10))
    full = model(ids).logits
    cache = KVCache(model.config, 2, 10, "cpu", torch.float32)
    first = model(ids[:, :6], cache=cache).logits
    second = model(ids[:, 6:], cache=cache).logits
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-5)


def test_loop_cap_and_stats_through_the_lm():
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile"))).eval()
    model.set_inference_loop_cap(1)
    model.reset_ffn_stats()
    model(torch.randint(0, 256, (2, 8)))
    for s in model.ffn_stats():
        assert s["loop_histogram"] == [16, 0, 0, 0] and s["mean_lambda"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="loop cap"):
        model.set_inference_loop_cap(0)


def test_temperature_step_reaches_every_layer():
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile")))
    model.set_temperature_step(1)
    assert all(float(m.tau) == pytest.approx(5.0 * 0.99984) for m in model.versatile_layers())


def test_bad_inputs():
    model = VersatileLM(model_config("micro"))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.randint(0, 256, (12,)))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randint(0, 256, (1, 65)))
    with pytest.raises(ValueError, match="unknown model preset"):
        model_config("paper-1b")


def test_packed_forward_equals_the_sequences_run_alone():
    """Two sequences in one row (own positions, block-causal mask, padding): the same logits as run alone, and
    the FFN statistics count the real tokens only."""
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile"))).eval()
    a, b = torch.randint(0, 256, (5,)), torch.randint(0, 256, (3,))
    ids = torch.cat([a, b, torch.zeros(2, dtype=torch.long)])[None]
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]])
    seq = torch.tensor([0] * 5 + [1] * 3 + [-1, -2])
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    mask = ((seq[:, None] == seq[None, :]) & causal)[None, None]
    real = (seq >= 0)[None]
    model.reset_ffn_stats()
    with torch.no_grad():
        out = model(ids, positions=positions, attn_mask=mask, token_mask=real,
                    logits_at=(torch.zeros(8, dtype=torch.long), torch.arange(8)))
        alone = torch.cat([model(a[None]).logits[0], model(b[None]).logits[0]])
    assert out.logits.shape == (8, 256)
    torch.testing.assert_close(out.logits, alone, rtol=1e-5, atol=1e-5)
    model.reset_ffn_stats()
    with torch.no_grad():
        model(ids, positions=positions, attn_mask=mask, token_mask=real)
    assert all(s["tokens"] == 8 for s in model.ffn_stats())
    with pytest.raises(ValueError, match="max_seq_len"):
        model(ids, positions=positions + 60, attn_mask=mask)


def test_packing_layout_equals_its_mask_and_host_inputs_stay_on_the_host():
    """forward(packing=(group, branch)) = forward(attn_mask=the mask it stands for); positions and token_mask on
    the host; attn_mask and packing together are an error."""
    from versatileffn.model import packed_attention_mask

    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile"))).eval()
    ids = torch.randint(1, 256, (2, 9))
    group = torch.tensor([[0, 0, 0, 0, 0, 1, 1, -1, -1], [0, 0, 0, 0, 0, 0, 0, 0, 0]])
    branch = torch.tensor([[0, 0, 1, 2, 2, 0, 1, 0, 0], [0, 0, 0, 0, 1, 1, 2, 3, 3]])
    positions = torch.tensor([[0, 1, 2, 2, 3, 0, 1, 0, 0], [0, 1, 2, 3, 4, 5, 4, 4, 5]])
    mask = packed_attention_mask(group, branch)
    assert mask[0, 0, 4].tolist() == [True, True, False, True, True, False, False, False, False]
    assert mask[0, 0, 7].tolist() == [False] * 7 + [True, False]  # padding sees itself only
    with torch.no_grad():
        a = model(ids, positions=positions, packing=(group, branch), token_mask=group >= 0).logits
        b = model(ids, positions=positions, attn_mask=mask, token_mask=group >= 0).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not both"):
        model(ids, attn_mask=mask, packing=(group, branch))
