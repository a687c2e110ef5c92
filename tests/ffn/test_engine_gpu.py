"""The ragged-loop engine on a GPU: no host synchronisation, one graph under torch.compile(fullgraph=True),
replays in a CUDA graph with another loop mix, equals the plain path in bf16, leaks no garbage row.

Run on the device: ``python -m pytest tests/ffn/test_engine_gpu.py -m gpu -q`` (skipped without CUDA)."""
from __future__ import annotations

import pytest
import torch

from versatileffn.ffn import VersatileFFNConfig
from versatileffn.ffn import VersatileFFN, ragged

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

D, H, L = 256, 1024, 4
MIXES = {"all1": [1.0, 0, 0, 0], "uniform": [0.25] * 4, "easy": [0.5, 0.3, 0.15, 0.05], "all4": [0, 0, 0, 1.0]}


def make(mode: str = "gated") -> VersatileFFN:
    torch.manual_seed(0)
    layer = VersatileFFN(VersatileFFNConfig(d_model=D, d_hidden=H, n_experts=8, top_k=2, max_loops=L, mode=mode,
                                            tau_start=1.0))
    with torch.no_grad():
        layer.loop_predictor.weight.normal_(0, 0.05)  # the loop head spreads its choices over 1..L
    return layer.cuda().bfloat16()


def mix_loops(mix: str, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.multinomial(torch.tensor(MIXES[mix]), n, replacement=True, generator=g) + 1).cuda()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def eval_out(layer, x, impl, loops=None):
    layer.eval().runtime.impl = impl
    with torch.no_grad(), ragged.poison_garbage():
        return layer(x, loops=loops)


def train_grads(layer, x, depth_grad, loops, gy, seed=3):
    layer.train().runtime.depth_grad = depth_grad
    layer.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with ragged.poison_garbage():
        y = layer(x, loops=loops)
        y.backward(gy)
    return y.detach(), {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}


def test_auto_picks_the_engine_on_cuda_bf16():
    layer = make()
    x = torch.zeros(4, D, device="cuda", dtype=torch.bfloat16)
    assert layer.runtime.eval_engine(x) and not layer.runtime.exact_depth_grad(x)  # few tokens: full
    big = x.new_zeros(layer.runtime.exact_min_tokens, D)
    assert layer.runtime.exact_depth_grad(big)


@pytest.mark.parametrize("mode", ["gated", "ungated", "depth"])
def test_engine_equals_plain_in_bf16(mode):
    layer = make(mode)
    x = torch.randn(2, 333, D, device="cuda", dtype=torch.bfloat16)  # an odd token count
    gy = torch.randn_like(x)
    for mix in (None, *MIXES):
        loops = None if mix is None else mix_loops(mix, x.shape[0] * x.shape[1])
        y_engine = eval_out(layer, x, "engine", loops)
        assert torch.isfinite(y_engine).all(), mix
        assert rel(y_engine, eval_out(layer, x, "plain", loops)) < 2e-2, mix
        y_exact, g_exact = train_grads(layer, x, "exact", loops, gy)
        y_full, g_full = train_grads(layer, x, "full", loops, gy)
        assert rel(y_exact, y_full) < 2e-2, mix
        for name in g_full:
            assert torch.isfinite(g_exact[name]).all(), (mix, name)
            assert rel(g_exact[name], g_full[name]) < 5e-2, (mix, name)


def test_eval_and_exact_training_never_synchronise():
    layer = make()
    x = torch.randn(4, 256, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn_like(x)
    loops = mix_loops("uniform", 4 * 256)
    layer.runtime.impl, layer.runtime.depth_grad = "auto", "auto"

    def run():
        with torch.no_grad():
            layer.eval()(x)
            layer(x, loops=loops)
        layer.train()(x).backward(gy)
        layer(x, loops=loops).backward(gy)

    run()  # warm-up: kernel compilation and library handles may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert layer.last_depth_grad == "exact"


def test_compiled_fullgraph_equals_eager():
    layer = make()
    layer.runtime.impl, layer.runtime.depth_grad = "engine", "exact"
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 512, D, device="cuda", dtype=torch.bfloat16)
    loops = mix_loops("easy", 1024)
    with torch.no_grad():
        assert rel(compiled.eval()(x, loops=loops), eval_out(layer, x, "engine", loops)) < 2e-2
    gy = torch.randn_like(x)
    layer.train()
    layer.zero_grad(set_to_none=True)
    compiled(x, loops=loops).backward(gy)
    g_compiled = {n: p.grad.clone() for n, p in layer.named_parameters()}
    _, g_eager = train_grads(layer, x, "exact", loops, gy)
    for name in g_eager:
        if not name.startswith("loop_predictor"):  # its straight-through gradient follows the Gumbel noise
            assert rel(g_compiled[name], g_eager[name]) < 5e-2, name


@pytest.mark.parametrize("tokens", [1, 8, 64, 4096])
def test_cuda_graph_replays_eval_with_another_loop_mix(tokens):
    layer = make().eval()
    layer.runtime.impl = "engine"
    x = torch.randn(1, tokens, D, device="cuda", dtype=torch.bfloat16)
    loops = mix_loops("all4", tokens).view(1, tokens)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            layer(x, loops=loops)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        y = layer(x, loops=loops)
    for mix, seed in (("uniform", 2), ("all1", 3), ("easy", 4)):
        loops.copy_(mix_loops(mix, tokens, seed).view(1, tokens))
        x.copy_(torch.randn_like(x))
        before = layer.stats.loop_counts.clone()
        graph.replay()
        counted = layer.stats.loop_counts - before  # statistics count inside the graph
        torch.cuda.synchronize()
        assert torch.equal(counted, torch.bincount(loops.flatten() - 1, minlength=L).double()), mix
        assert torch.isfinite(y).all(), mix
        assert rel(y, eval_out(layer, x, "plain", loops)) < 2e-2, mix
    layer.runtime.impl = "auto"


def test_cuda_graph_replays_an_exact_training_step():
    layer = make().train()
    layer.runtime.depth_grad = "exact"
    x = torch.randn(1, 2048, D, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn_like(x)
    loops = mix_loops("all1", 2048).view(1, -1)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            layer.zero_grad(set_to_none=True)
            layer(x, loops=loops).backward(gy)
    torch.cuda.current_stream().wait_stream(stream)
    layer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = layer(x, loops=loops)
        y.backward(gy)
    loops.copy_(mix_loops("uniform", 2048, seed=5).view(1, -1))
    graph.replay()
    torch.cuda.synchronize()
    got = {n: p.grad.clone() for n, p in layer.named_parameters()}
    y_graph = y.clone()
    y_ref, want = train_grads(layer, x, "full", loops, gy)
    assert rel(y_graph, y_ref) < 2e-2
    for name in want:
        if not name.startswith("loop_predictor"):  # its straight-through gradient follows the Gumbel noise
            assert torch.isfinite(got[name]).all() and rel(got[name], want[name]) < 5e-2, name
