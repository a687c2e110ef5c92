"""The fast paths compute the same function (and the same gradients) as the plain reference, on the CPU."""
from __future__ import annotations

import pytest
import torch

from versatileffn.ffn import VersatileFFNConfig
from versatileffn.ffn import MoEFFN, VersatileFFN
from versatileffn.ffn.fast import grouped_mm, select_loop_states, sort_by_expert
from versatileffn.ffn.reference import authors_eval_forward, authors_train_forward
from versatileffn.model import model_config

D, H = 32, 64


def make_layer(mode: str = "gated", dtype=torch.float64, uniform_loops: bool = True, **kw) -> VersatileFFN:
    torch.manual_seed(0)
    layer = VersatileFFN(VersatileFFNConfig(d_model=D, d_hidden=H, n_experts=4, top_k=2, max_loops=4, mode=mode,
                                            tau_start=1.0, **kw)).to(dtype)
    if uniform_loops and layer.loop_predictor is not None:  # every loop count gets sampled
        with torch.no_grad():
            layer.loop_predictor.weight.mul_(0.01)
    return layer


def grads_of(layer, x, depth_grad: str, seed: int = 7):
    layer.runtime.depth_grad = depth_grad
    layer.reset_stats()
    for p in layer.parameters():
        p.grad = None
    xg = x.clone().requires_grad_()
    torch.manual_seed(seed)
    y = layer(xg)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype).to(y.device))
    g = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    g["input"] = xg.grad.clone()
    return y.detach(), g, layer.stats.summary()


def assert_grads_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        # router / loop-head logits are fp32 by design (even in a float64 layer): their gradients (and the
        # input's, which they feed) round at fp32 level when the summation order changes; the rest is float64
        tol = 1e-5 if name.startswith(("router", "loop_predictor", "input")) else 1e-9
        torch.testing.assert_close(got[name], want[name], rtol=tol, atol=tol * 1e-3, msg=name)


def test_train_forward_matches_authors_reference():
    layer = make_layer().train()
    x = torch.randn(2, 30, D, dtype=torch.float64)
    for depth_grad in ("full", "exact"):
        layer.runtime.depth_grad = depth_grad
        torch.manual_seed(5)
        ours = layer(x)
        torch.manual_seed(5)
        ref = authors_train_forward(layer, x)
        # fp32 gates: the reference's sum_k g_k H differs from H by the fp32 rounding of g_1 + g_2
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["gated", "ungated"])
@pytest.mark.parametrize("impl", ["plain", "engine"])
def test_eval_forward_matches_batch_max_reference(impl, mode):
    layer = make_layer(mode, dtype=torch.float32).eval()
    layer.runtime.impl = impl
    with torch.no_grad():
        layer.loop_predictor.weight.mul_(300.0)  # a spread of predicted loop counts
        x = torch.randn(4, 25, D)
        ours = layer(x)
        assert min(layer.stats.summary()["loop_histogram"]) > 0
        torch.testing.assert_close(ours, authors_eval_forward(layer, x), rtol=1e-5, atol=1e-5)
        forced = torch.randint(1, 5, (4, 25))  # a given loop mix reaches both the same way
        torch.testing.assert_close(layer(x, loops=forced), authors_eval_forward(layer, x, loops=forced),
                                   rtol=1e-5, atol=1e-5)


def test_broadcast_width_mask_equals_membership_mask():
    layer = make_layer("width").train()
    assert layer.experts_tile
    x = torch.randn(2, 20, D, dtype=torch.float64)
    _, g_tile, _ = grads_of(layer, x, "full")
    y_tile = layer(x)
    layer.experts_tile = False
    _, g_mask, _ = grads_of(layer, x, "full")
    torch.testing.assert_close(layer(x), y_tile, rtol=1e-12, atol=1e-12)
    assert_grads_close(g_tile, g_mask)


def test_overlapping_experts_do_not_tile():
    layer = VersatileFFN(VersatileFFNConfig(d_model=D, d_hidden=H, n_experts=4, top_k=2, d_expert=24))
    assert not layer.experts_tile


def test_select_loop_states_is_the_stacked_contraction():
    states = [torch.randn(6, 5, dtype=torch.float64) for _ in range(3)]
    p = torch.softmax(torch.randn(6, 3, dtype=torch.float64), -1)
    ref = (torch.stack(states, -1) * p.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(select_loop_states(states, p), ref)


def test_full_path_compiles_fullgraph():
    """Algorithm 1 has no graph break (aot_eager: traces forward and backward, no C compiler)."""
    layer = make_layer(dtype=torch.float32).train()
    layer.runtime.depth_grad = "full"
    x = torch.randn(2, 16, D)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.manual_seed(2)
    y_c = compiled(x)
    y_c.sum().backward()
    assert layer.stats.summary()["tokens"] == 32
    torch.manual_seed(2)
    torch.testing.assert_close(y_c, layer(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- MoE


def test_sort_by_expert_and_grouped_mm_fallback():
    experts_nk = torch.tensor([[2, 0], [1, 2], [2, 1]])
    order, token, ends = sort_by_expert(experts_nk, 4)
    assert ends.tolist() == [1, 3, 6, 6]
    assert experts_nk.reshape(-1)[order].tolist() == [0, 1, 1, 2, 2, 2]
    assert token.tolist() == (order // 2).tolist()
    x = torch.randn(6, 5)
    w = torch.randn(4, 5, 3)
    y = grouped_mm(x, w, ends)
    ref = torch.cat([x[:1] @ w[0], x[1:3] @ w[1], x[3:] @ w[2]])
    torch.testing.assert_close(y, ref)


def test_torch_grouped_mm_layout_matches_fallback():
    """The weight views handed to torch._grouped_mm on the GPU give the per-group products (bf16 on CPU)."""
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm not available")
    x = torch.randn(10, 16).bfloat16()
    w = torch.randn(3, 8, 16).bfloat16().transpose(1, 2)  # [N, d, f] view of an [N, f, d] parameter
    ends = torch.tensor([4, 4, 10])
    try:
        y = torch._grouped_mm(x, w, offs=ends.to(torch.int32))
    except RuntimeError as exc:
        pytest.skip(f"torch._grouped_mm does not run here: {exc}")
    torch.testing.assert_close(y.float(), grouped_mm(x, w, ends).float(), rtol=2e-2, atol=2e-2)


def test_moe_grouped_experts_match_dense():
    torch.manual_seed(0)
    moe = MoEFFN(D, H, n_experts=4, top_k=2).double().train()
    x = torch.randn(2, 24, D, dtype=torch.float64)
    outs, grads = {}, {}
    for impl in ("dense", "grouped"):
        moe.expert_impl = impl
        for p in moe.parameters():
            p.grad = None
        xg = x.clone().requires_grad_()
        outs[impl] = moe(xg)
        outs[impl].square().sum().backward()
        grads[impl] = {n: p.grad.clone() for n, p in moe.named_parameters()} | {"input": xg.grad}
    torch.testing.assert_close(outs["grouped"], outs["dense"], rtol=1e-10, atol=1e-10)
    for name in grads["dense"]:
        torch.testing.assert_close(grads["grouped"][name], grads["dense"][name], rtol=1e-9, atol=1e-11, msg=name)
    moe.expert_impl = "sparse"
    with pytest.raises(ValueError, match="expert_impl"):
        moe(x)


def test_moe_grouped_under_autocast_runs_in_the_autocast_dtype():
    torch.manual_seed(0)
    moe = MoEFFN(D, H, n_experts=4, top_k=2).train()
    x = torch.randn(2, 24, D)
    moe.expert_impl = "dense"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = moe(x)
        moe.expert_impl = "grouped"
        out = moe(x)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out.float(), ref.float(), rtol=3e-2, atol=3e-2)


# ------------------------------------------------------------------------------ checkpointing


@pytest.mark.parametrize("depth_grad", ["full", "exact"])
def test_activation_checkpointing_keeps_the_gumbel_sample(depth_grad):
    ffn = VersatileFFNConfig(tau_start=1.0, depth_grad=depth_grad)
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = model_config("micro", ffn, activation_checkpointing=ckpt).build().double().train()
        ids = torch.randint(0, 256, (2, 16))
        torch.manual_seed(11)
        out = model(ids, targets=ids)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), grads, model.ffn_stats()))
    (loss0, g0, s0), (loss1, g1, s1) = results
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    assert s0 == s1 and s0[0]["tokens"] == 32  # statistics counted once despite the recomputation
    assert set(g0) == set(g1) and any("loop_predictor" in n for n in g0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-10, atol=1e-12, msg=name)
