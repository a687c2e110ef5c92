"""Converted models in the evaluator and in MoE tooling: loop statistics of real tokens only, reset per task
(issue 15, item 4); the MoE config names and ``output_router_logits`` (Mixtral / Qwen2-MoE / OLMoE)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from versatileffn.eval.scoring import evaluate_tasks, score_token_requests
from versatileffn.ffn.common import switch_balance_loss
from versatileffn.hf import convert_dense_model

from .conftest import tiny_dense


def _requests(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = [(3, 2), (9, 4), (5, 1), (12, 3), (2, 6)]
    return [(torch.randint(3, 97, (c,), generator=g).tolist(), torch.randint(3, 97, (k,), generator=g).tolist())
            for c, k in lengths]


def test_padded_batches_count_only_real_tokens_and_score_as_unpadded(norm_arch, make_dense, ffn_options, trained,
                                                                     input_ids):
    model = trained(convert_dense_model(make_dense(norm_arch), ffn_options), input_ids)
    pairs = _requests()
    real = sum(len(c) + len(k) - 1 for c, k in pairs)
    model.reset_ffn_stats()
    alone = score_token_requests(model, pairs, batch_size=1)  # no padding at all
    assert [s["tokens"] for s in model.ffn_stats()] == [real] * 2
    model.reset_ffn_stats()
    padded = score_token_requests(model, pairs, batch_size=5)  # one batch, right-padded to the longest request
    stats = model.ffn_stats()
    assert [s["tokens"] for s in stats] == [real] * 2
    assert all(sum(s["loop_histogram"]) == real for s in stats)
    for a, b in zip(alone, padded):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4) and b.n_tokens == a.n_tokens


def test_token_mask_leaves_padding_to_the_attention_half(make_dense, ffn_options, input_ids):
    model = convert_dense_model(make_dense("llama"), ffn_options).eval()
    mask = torch.ones_like(input_ids, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        full, masked = model(input_ids).logits, model(input_ids, token_mask=mask).logits
    torch.testing.assert_close(masked[mask], full[mask], rtol=0, atol=1e-5)
    assert not torch.allclose(masked[~mask], full[~mask])


@pytest.mark.olmo_eval
def test_eval_statistics_reset_per_task(tmp_path):
    from versatileffn.tokenizer import load_tokenizer

    dense = tiny_dense("llama", vocab_size=50304, max_position_embeddings=256)  # the OLMo tokenizer's vocabulary
    model = convert_dense_model(dense, {"n_experts": 4, "max_loops": 2})
    tok = load_tokenizer("olmo")
    both = evaluate_tasks(model, tok, ["sciq", "arc_easy"], limit=2, progress=False)["ffn_stats"]
    for task in ("sciq", "arc_easy"):
        alone = evaluate_tasks(model, tok, [task], limit=2, progress=False)["ffn_stats"][task]
        assert [s["tokens"] for s in both[task]] == [s["tokens"] for s in alone]


def test_moe_names_in_the_config_are_read_only_aliases(arch, make_dense, ffn_options):
    config = convert_dense_model(make_dense(arch), {**ffn_options, "balance_loss_coef": 0.01}).config
    assert (config.num_experts, config.num_experts_per_tok, config.max_loops) == (4, 2, 3)
    assert config.router_aux_loss_coef == 0.01
    assert "num_experts" not in config.to_dict()  # one source of truth: versatile_ffn
    with pytest.raises(AttributeError):
        config.num_experts = 8


def test_output_router_logits_follows_the_moe_convention(norm_arch, make_dense, ffn_options, input_ids):
    model = convert_dense_model(make_dense(norm_arch), {**ffn_options, "balance_loss_coef": 0.1})
    coef = model.config.router_aux_loss_coef
    plain = model.eval()(input_ids, labels=input_ids)
    out = model(input_ids, labels=input_ids, output_router_logits=True)
    assert type(out).__name__ == "MoeCausalLMOutputWithPast"
    assert len(out.router_logits) == 2 and out.router_logits[0].shape == (input_ids.numel(), 4)
    expected = sum(switch_balance_loss(lg, lg.topk(2, dim=-1).indices) for lg in out.router_logits)
    torch.testing.assert_close(out.aux_loss, expected)
    torch.testing.assert_close(out.loss, plain.loss + coef * out.aux_loss)
    torch.testing.assert_close(out.logits, plain.logits)
    # training: the layers' own balance losses (already in the gradient) are the reported one, counted once
    torch.manual_seed(0)
    out = model.train()(input_ids, labels=input_ids, output_router_logits=True)
    torch.testing.assert_close(coef * out.aux_loss.detach(), model.aux_loss().float())
    out.loss.backward()
    assert model.model.layers[0].versatile_ffn.router.weight.grad is not None
    model.config.output_router_logits = True  # the config default, as in Mixtral
    assert model.eval()(input_ids).router_logits is not None
    assert isinstance(model(input_ids, return_dict=False), tuple)
