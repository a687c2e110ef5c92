"""Fast generation (versatileffn/generation.py): the static KV cache against full recomputation, left-padded
batches, EOS, sampling's support and seeds on the CPU; CUDA graph capture, graph == eager and a sync-free step on
CUDA."""
import pytest
import torch

from versatileffn import GenerationConfig, KVCache, VersatileLM, ffn_config_from_name, model_config
from versatileffn.errors import UserError
from versatileffn.generation import restrict_logits, sample

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def micro(ffn: str = "versatile", **overrides) -> VersatileLM:
    torch.manual_seed(0)
    return VersatileLM(model_config("micro", ffn_config_from_name(ffn), **overrides)).eval()


@pytest.mark.parametrize("ffn", ["dense", "versatile"])
def test_static_cache_decode_matches_full_recompute(ffn):
    model = micro(ffn, qk_norm=True, n_kv_heads=2)
    ids = torch.randint(0, 256, (2, 12))
    full = model(ids).logits
    cache = KVCache(model.config, 2, 16, "cpu", torch.float32)
    with torch.no_grad():
        steps = [model(ids[:, :7], cache=cache).logits]
        for t in range(7, 12):
            steps.append(model.decode_step(ids[:, t:t + 1], cache)[:, None])
            cache.advance(1)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    assert cache.pos == 12 and int(cache.slot) == 12


def test_left_padded_batch_equals_each_prompt_alone():
    model = micro("versatile", n_kv_heads=2)
    prompts = [[5, 17, 99, 3, 250, 8, 41], [7, 7], [200, 1, 64, 9]]
    got = GenerationConfig(max_new_tokens=9).build(model).generate(prompts)
    assert got.tokens.shape == (3, 7 + 9) and got.pad.tolist() == [0, 5, 3]
    for p, row in zip(prompts, got.rows()):
        alone = model.generate(torch.tensor([p]), max_new_tokens=9)[0].tolist()
        assert row == alone
    # the same through a tensor with an attention mask, and without the cache (full recomputation)
    mask = (got.tokens[:, :7] >= 0).long()
    mask[1, :5] = 0
    mask[2, :3] = 0
    assert torch.equal(model.generate(got.tokens[:, :7], 9, attention_mask=mask), got.tokens)
    assert torch.equal(model.generate(got.tokens[:, :7], 9, attention_mask=mask, use_cache=False), got.tokens)


def test_eos_stops_each_row_and_the_whole_generation():
    model = micro("versatile")
    prompt = torch.randint(1, 256, (2, 5))
    free = model.generate(prompt, max_new_tokens=12)
    eos = int(free[0, 5 + 2])  # row 0 stops after its 3rd new token
    out = model.generate(prompt, max_new_tokens=12, eos_id=eos)
    first = (free[:, 5:] == eos).long().argmax(1)  # each row's first eos (0 if none)
    for r in range(2):
        stop = int(first[r]) if bool((free[r, 5:] == eos).any()) else None
        if stop is None:
            assert torch.equal(out[r], free[r, :out.shape[1]])
        else:
            assert torch.equal(out[r, :5 + stop + 1], free[r, :5 + stop + 1])
            assert bool((out[r, 5 + stop:] == eos).all())
    alone = GenerationConfig(max_new_tokens=12, eos_id=eos, check_every=5).build(model).generate(prompt[:1])
    assert alone.tokens.shape[1] == 5 + 3 and int(alone.tokens[0, -1]) == eos


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    finite = lambda t: torch.isfinite(t).nonzero().tolist()  # noqa: E731
    assert finite(restrict_logits(logits, 2, None)) == [[0, 0], [0, 1], [1, 2], [1, 3]]
    assert finite(restrict_logits(logits, None, 0.7)) == [[0, 0], [0, 1], [1, 2], [1, 3]]
    assert finite(restrict_logits(logits, None, 0.5)) == [[0, 0], [1, 3]]
    assert finite(restrict_logits(logits, 3, 0.99)) == finite(restrict_logits(logits, 3, None))
    torch.manual_seed(0)
    wide = torch.randn(4, 256).repeat(500, 1)
    for top_k, top_p in ((5, None), (None, 0.3), (20, 0.5)):
        allowed = torch.isfinite(restrict_logits(wide[:4], top_k, top_p)).repeat(500, 1)
        drawn = sample(wide, 1.0, top_k, top_p)
        assert bool(allowed.gather(1, drawn[:, None]).all())
        assert len(set(drawn[::4].tolist())) > 1  # a draw, not the argmax
    assert torch.equal(sample(wide[:4], 0.0), wide[:4].argmax(-1))


def test_same_seed_same_text():
    model = micro("versatile")
    prompt = torch.randint(0, 256, (2, 4))
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=50, top_p=0.95)
    a = model.generate(prompt, seed=3, **kw)
    assert torch.equal(a, model.generate(prompt, seed=3, **kw))
    assert not torch.equal(a, model.generate(prompt, seed=4, **kw))


def test_streaming_mean_loops_and_bad_options():
    model = micro("versatile")
    seen = []
    got = GenerationConfig(max_new_tokens=7, check_every=3).build(model).generate([[1, 2, 3]],
                                                                                on_tokens=seen.append)
    assert [t for chunk in seen for t in chunk[0]] == got.new_tokens[0].tolist() and len(seen) == 3
    assert 1.0 <= got.mean_loops <= 4.0 and got.tokens_per_s > 0
    with pytest.raises(UserError, match="CUDA"):
        GenerationConfig(mode="graph").build(micro("dense"))
    with pytest.raises(UserError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(UserError, match="max_seq_len"):
        model.generate(torch.zeros(1, 60, dtype=torch.long), max_new_tokens=10)


# ---------------------------------------------------------------------------------------------------- CUDA


def cuda_micro(ffn: str) -> VersatileLM:
    return micro(ffn).to("cuda", torch.bfloat16)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("ffn", ["dense", "versatile"])
def test_graph_mode_matches_eager(ffn):
    model = cuda_micro(ffn)
    prompts = [[5, 17, 99, 3, 250], [7, 7], [200, 1, 64]]
    eager = GenerationConfig(max_new_tokens=20).build(model).generate(prompts)
    graph = GenerationConfig(max_new_tokens=20, mode="graph").build(model).generate(prompts)
    assert torch.equal(graph.tokens, eager.tokens)
    if ffn == "versatile":
        assert graph.mean_loops == pytest.approx(eager.mean_loops)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("ffn", ["dense", "versatile"])
def test_decode_step_is_sync_free_and_captures(ffn):
    from versatileffn.generation import capture

    model = cuda_micro(ffn)
    for m in model.versatile_layers():
        m.runtime.impl = "engine"
    cache = KVCache(model.config, 4, 32, "cuda", torch.bfloat16)
    tok = torch.randint(0, 256, (4, 1), device="cuda")
    with torch.no_grad():
        model(torch.randint(0, 256, (4, 8), device="cuda"), cache=cache)

        def step():
            tok.copy_(sample(model.decode_step(tok, cache), 1.0, 20, 0.9)[:, None])

        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
            replay = capture(step)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        slot = int(cache.slot)
        torch.cuda.set_sync_debug_mode("error")
        try:
            replay()
            replay()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert int(cache.slot) == slot + 2


@pytest.mark.gpu
@cuda
def test_compile_mode_matches_eager():
    model = cuda_micro("versatile")
    prompts = [[5, 17, 99, 3, 250], [7, 7]]
    eager = GenerationConfig(max_new_tokens=12).build(model).generate(prompts)
    compiled = GenerationConfig(max_new_tokens=12, mode="compile").build(model).generate(prompts)
    assert torch.equal(compiled.tokens, eager.tokens)
