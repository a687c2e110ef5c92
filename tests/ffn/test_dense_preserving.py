"""The dense-preserving start (ffn/dense_preserving.py): the dense sublayer exactly at step 0, the paper's layer at
alpha = 1/s and gamma = 0, and a start that learns (the new scales, then the loop head, get gradients)."""
from __future__ import annotations

import pytest
import torch

from versatileffn.ffn import DenseFFN, LoopFFN, LoopFFNConfig, VersatileFFN, VersatileFFNConfig

D, H = 16, 32
MODES = ["gated", "ungated", "width", "depth"]


def versatile(mode="gated", dense_preserving=True, **kw):
    torch.manual_seed(0)
    cfg = VersatileFFNConfig(d_model=D, d_hidden=H, n_experts=4, top_k=2, max_loops=4, mode=mode, tau_start=1.0,
                             dense_preserving=dense_preserving, **kw)
    return VersatileFFN(cfg).double()


def dense_twin(layer) -> DenseFFN:
    twin = DenseFFN(D, H).double()
    twin.load_state_dict({k: v for k, v in layer.state_dict().items() if k.split(".")[0] in
                          ("norm", "gate_proj", "up_proj", "down_proj")})
    return twin


def as_paper(layer: torch.nn.Module) -> None:
    """alpha = 1/s and gamma = 0: the dense-preserving layer becomes the paper's."""
    with torch.no_grad():
        if layer.loop_gain is not None:
            layer.loop_gain.gain.fill_(1.0 / layer.loop_gain.scale)
        if getattr(layer, "width_mix", None) is not None:
            layer.width_mix.shift.fill_(1.0 / layer.width_mix.scale)


@pytest.mark.parametrize("impl", ["plain", "engine"])
@pytest.mark.parametrize("mode", MODES)
def test_step0_is_exactly_the_dense_sublayer(mode, impl):
    layer = versatile(mode)
    layer.runtime.impl = impl
    x = torch.randn(3, 21, D, dtype=torch.float64)
    want = dense_twin(layer)(x)
    with torch.no_grad():
        assert torch.equal(layer.eval()(x), want)  # eval: every token's own loops, any lambda
        torch.manual_seed(1)
        assert torch.equal(layer.train()(x), want)  # training: the Gumbel sample's loops, any p
    if layer.uses_depth:
        assert layer.stats.summary()["mean_loops"] > 1  # loops > 1 did run: they add nothing yet


@pytest.mark.parametrize("depth_grad", ["full", "exact"])
@pytest.mark.parametrize("impl", ["plain", "engine"])
@pytest.mark.parametrize("mode", MODES)
def test_paper_layer_at_alpha_one_over_s_and_gamma_zero(mode, impl, depth_grad):
    dp, paper = versatile(mode), versatile(mode, dense_preserving=False)
    as_paper(dp)
    paper.load_state_dict(dp.state_dict(), strict=False)
    for layer in (dp, paper):
        layer.runtime.impl, layer.runtime.depth_grad = impl, depth_grad
    x = torch.randn(2, 19, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(dp.eval()(x), paper.eval()(x), rtol=1e-12, atol=1e-12)
    outs = []
    for layer in (dp.train(), paper.train()):
        torch.manual_seed(3)
        y = layer(x)
        y.pow(2).sum().backward()
        outs.append((y.detach(), {n: p.grad for n, p in layer.named_parameters() if n in dict(paper.named_parameters())}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    for name, grad in outs[1][1].items():
        torch.testing.assert_close(outs[0][1][name], grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("impl", ["plain", "engine"])
def test_engine_equals_plain_with_learned_scales(impl):
    layer = versatile("gated")
    with torch.no_grad():
        layer.loop_gain.gain.copy_(torch.randn(D, dtype=torch.float64) / 40)
        layer.width_mix.shift.fill_(0.013)
    x = torch.randn(4, 17, D, dtype=torch.float64)
    plain = layer.eval()
    plain.runtime.impl = "plain"
    with torch.no_grad():
        want = plain(x)
        layer.runtime.impl = impl
        got = layer(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(want, dense_twin(layer)(x))  # the scales moved the layer off the dense function


def test_the_new_scales_learn_first_then_the_loop_head():
    layer = versatile("gated", init_std=0.3).train()  # weights large enough that the loops differ clearly
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.0)
    x = torch.randn(4, 24, D, dtype=torch.float64)
    target = torch.randn_like(x)
    grads = []
    for step in range(2):
        torch.manual_seed(step)
        (layer(x) - target).pow(2).mean().backward()
        grads.append({n: float(p.grad.abs().sum()) for n, p in layer.named_parameters()})
        opt.step()
        opt.zero_grad()
    assert grads[0]["loop_gain.gain"] > 0 and grads[0]["width_mix.shift"] > 0
    # at step 0 every path is the dense sublayer, so the loop choice cannot matter yet: the loop head's gradient is
    # the rounding of its fp32 softmax only (the paper's start gives it a real one); once alpha moved, the loops
    # differ and the head learns
    paper = versatile("gated", dense_preserving=False, init_std=0.3).train()
    torch.manual_seed(0)
    (paper(x) - target).pow(2).mean().backward()
    assert grads[0]["loop_predictor.weight"] < 1e-3 * float(paper.loop_predictor.weight.grad.abs().sum())
    assert grads[1]["loop_predictor.weight"] > 100 * grads[0]["loop_predictor.weight"]
    summary = layer.start_summary()
    assert summary["loop_step_abs_mean"] > 0 and summary["width_gamma"] < 1


def test_loop_ffn_dense_preserving():
    torch.manual_seed(0)
    layer = LoopFFNConfig(d_model=D, d_hidden=H, n_loops=4, dense_preserving=True).build().double()
    x = torch.randn(2, 9, D, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense_twin(layer)(x), rtol=0, atol=0)
    as_paper(layer)
    paper = LoopFFN(D, H, n_loops=4).double()
    paper.load_state_dict(layer.state_dict(), strict=False)
    torch.testing.assert_close(layer(x), paper(x), rtol=1e-12, atol=1e-12)
    assert LoopFFNConfig(d_model=D, d_hidden=H, n_loops=1, dense_preserving=True).build().loop_gain is None


def test_reference_forwards_follow_the_start():
    from versatileffn.ffn.reference import authors_eval_forward, authors_train_forward

    layer = versatile("gated")
    x = torch.randn(2, 13, D, dtype=torch.float64)
    want = dense_twin(layer)(x)
    with torch.no_grad():
        torch.testing.assert_close(authors_eval_forward(layer.eval(), x), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(authors_train_forward(layer.train(), x), want, rtol=1e-12, atol=1e-12)


def test_config_checks_the_scale():
    with pytest.raises(ValueError, match="dense_preserving_scale"):
        VersatileFFNConfig(d_model=D, d_hidden=H, n_experts=4, dense_preserving=True, dense_preserving_scale=0.0)
    with pytest.raises(ValueError, match="dense_preserving_scale"):
        LoopFFNConfig(n_loops=2, dense_preserving=True, dense_preserving_scale=-1.0)
