"""Converted Hugging Face models generate with transformers' static cache (``cache_implementation="static"``):
the same tokens as with the dynamic cache, also with the forward traced whole by ``torch.compile(fullgraph=True)``
(the FFN engine: no graph break); on CUDA under ``mode="reduce-overhead"`` (CUDA graphs)."""
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
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, fullgraph=True, backend="eager")  # tracing only: fast on the CPU
    try:
        assert torch.equal(model.generate(input_ids, cache_implementation="static", **kw), dynamic)
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_static_cache_generate_compiled_on_cuda(make_dense, ffn_options, input_ids):
    model = convert_dense_model(make_dense("llama"), ffn_options).to("cuda", torch.bfloat16)
    ids = input_ids.cuda()
    kw = dict(attention_mask=_left_padded(ids), max_new_tokens=8, do_sample=False, pad_token_id=0)
    dynamic = model.generate(ids, **kw)
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    try:
        assert torch.equal(model.generate(ids, cache_implementation="static", **kw), dynamic)
    finally:
        torch._dynamo.reset()
