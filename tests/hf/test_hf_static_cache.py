"""Converted Hugging Face models generate with transformers' static cache (``cache_implementation="static"``):
the same tokens as with the dynamic cache, also when generate compiles the decode forward (``compile_config``,
``fullgraph=True``: the FFN engine traced whole, no graph break); on CUDA under ``mode="reduce-overhead"`` (CUDA
graphs)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from versatileffn.hf import convert_dense_model  # noqa: E402


def _left_padded(input_ids):
    mask = torch.ones_like(input_ids)
    mask[1, :4] = 0  # row 1 is a shorter prompt, padded on the left
    return mask


def test_static_cache_generate_equals_dynamic_cache(make_dense, ffn_options, input_ids):
    model = convert_dense_model(make_dense("llama"), ffn_options)
    for m in model.versatile_layers():
        m.runtime.impl = "engine"  # the CUDA default: sync-free, static shapes
    kw = dict(attention_mask=_left_padded(input_ids), max_new_tokens=4, do_sample=False, pad_token_id=0)
    dynamic = model.generate(input_ids, **kw)
    assert torch.equal(model.generate(input_ids, cache_implementation="static", **kw), dynamic)
    assert _greedy_under(model, dynamic, kw["attention_mask"], tol=1e-5)  # the CUDA test's check, checked here
    wrong = dynamic.clone()
    wrong[0, -1] = (wrong[0, -1] + 1) % model.config.vocab_size
    assert not _greedy_under(model, wrong, kw["attention_mask"], tol=1e-5)
    # transformers' own compilation of the decode forward, on the CPU too, traced whole (tracing only: fast)
    config = transformers.CompileConfig(fullgraph=True, backend="eager")
    config._compile_all_devices = True
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    try:
        assert torch.equal(model.generate(input_ids, cache_implementation="static", compile_config=config, **kw),
                           dynamic)
        assert counters["stats"]["unique_graphs"] >= 1  # the decode forward did go through torch.compile
    finally:
        torch._dynamo.reset()


def _greedy_under(model, seq, prompt_mask, tol):
    """Whether every generated token of seq is the argmax (to tol) of model's next-token logits, computed afresh
    without a cache: a check that survives near-ties, which a random model's logits have (bf16 or compiled fp32
    kernels can then pick the other token, and the two sequences part from there)."""
    new = seq.shape[1] - prompt_mask.shape[1]
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(seq.shape[0], new)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # left padding: positions count real tokens, as generate's do
    logits = model(input_ids=seq, attention_mask=mask, position_ids=positions).logits.float()[:, -new - 1:-1]
    chosen = logits.gather(-1, seq[:, -new:, None]).squeeze(-1)
    return bool((logits.max(-1).values - chosen).max() <= tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_static_cache_generate_compiled_on_cuda(make_dense, ffn_options, input_ids):
    model = convert_dense_model(make_dense("llama"), ffn_options).to("cuda", torch.float32)
    ids = input_ids.cuda()
    mask = _left_padded(ids)
    kw = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert _greedy_under(model, model.generate(ids, **kw), mask, tol=1e-4)  # the check itself, on eager tokens
    torch._dynamo.reset()
    try:  # on CUDA generate compiles the decode forward itself (mode="reduce-overhead": CUDA graphs)
        static = model.generate(ids, cache_implementation="static",
                                compile_config=transformers.CompileConfig(fullgraph=True), **kw)
        assert static.shape == (ids.shape[0], ids.shape[1] + 8)
        assert _greedy_under(model, static, mask, tol=1e-3)
    finally:
        torch._dynamo.reset()
