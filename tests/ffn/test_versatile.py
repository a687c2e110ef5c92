import sys
from pathlib import Path

import pytest
import torch

from versatileffn import DenseFFN, VersatileFFN, VersatileFFNConfig, set_temperature_step, switch_balance_loss

sys.path.insert(0, str(Path(__file__).parent))
import vffn_reference as ref  # noqa: E402

D, H = 16, 32


def make(spread=2.0, **kw):
    cfg = VersatileFFNConfig(d_model=D, d_hidden=H, **kw)
    layer = VersatileFFN(cfg)
    with torch.no_grad():  # larger head weights so the loop choice and routing vary across tokens
        if layer.loop_predictor is not None:
            layer.loop_predictor.weight.normal_(0, spread)
        if layer.router is not None:
            layer.router.weight.normal_(0, spread)
        layer.gate_proj.weight.normal_(0, 0.3)
        layer.up_proj.weight.normal_(0, 0.3)
        layer.down_proj.weight.normal_(0, 0.3)
        layer.norm.weight.uniform_(0.5, 1.5)
    return layer


def test_public_surface():
    layer = VersatileFFN(VersatileFFNConfig(d_model=D, d_hidden=H))
    assert isinstance(layer.router, torch.nn.Linear) and layer.router.weight.shape == (8, D)
    assert isinstance(layer.loop_predictor, torch.nn.Linear) and layer.loop_predictor.weight.shape == (4, D)
    assert layer.router.bias is None and layer.loop_predictor.bias is None
    assert layer(torch.randn(2, 3, D)).shape == (2, 3, D)


@pytest.mark.parametrize("impl", ["plain", "engine"])
@pytest.mark.parametrize("d_expert", [None, 8])  # 8 > 32/8: overlapping windows
def test_eval_matches_token_by_token_reference(d_expert, impl):
    layer = make(d_expert=d_expert).eval()
    layer.runtime.impl = impl
    x = torch.randn(3, 7, D)
    y = layer(x)
    assert torch.allclose(y, ref.reference_eval(layer, x), atol=1e-5, rtol=1e-5)
    hist = layer.stats.summary()["loop_histogram"]
    assert sum(1 for c in hist if c > 0) >= 3, "test should exercise several loop counts"


def test_eval_loop_cap_matches_reference():
    layer = make().eval()
    layer.runtime.loop_cap = 2
    x = torch.randn(2, 9, D)
    assert torch.allclose(layer(x), ref.reference_eval(layer, x), atol=1e-5)
    assert layer.stats.summary()["loop_histogram"][2:] == [0, 0]


@pytest.mark.parametrize("depth_grad", ["full", "exact"])
def test_train_matches_reference_with_same_gumbel_sample(depth_grad):
    layer = make().train()
    layer.runtime.depth_grad = depth_grad
    layer.set_temperature(0.7)
    x = torch.randn(2, 5, D)
    torch.manual_seed(123)
    y = layer(x)
    torch.manual_seed(123)
    gumbel = -torch.empty(10, 4).exponential_().log()
    y_ref = ref.reference_train(layer, x, gumbel)
    assert torch.allclose(y, y_ref, atol=1e-5)
    # the gradient of the straight-through path matches too (loop head and router included)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad((y * gy).sum(), list(layer.parameters()), retain_graph=True)
    grads_ref = torch.autograd.grad((y_ref * gy).sum(), list(layer.parameters()))
    for g, gr in zip(grads, grads_ref):
        assert torch.allclose(g, gr, atol=1e-4, rtol=1e-4)


def test_compaction_equals_running_every_token_to_max_loops():
    layer = make().eval()
    x = torch.randn(4, 6, D)
    y = layer(x)
    with torch.no_grad():
        h = x.reshape(-1, D)
        states, cur = [], h
        for _ in range(layer.max_loops):
            cur = layer.step(cur)
            states.append(cur)
        loops = (h @ layer.loop_predictor.weight.T).argmax(-1)
        y_depth = torch.stack(states, 1)[torch.arange(h.shape[0]), loops]
        lam = ((layer.max_loops - (loops + 1)) / layer.max_loops).unsqueeze(-1)
        y_width, _, _ = layer._width(h, layer.hidden(h))
        expected = (lam * y_width + (1 - lam) * y_depth).view_as(x)
    assert torch.allclose(y, expected, atol=1e-5)


def test_one_loop_without_width_equals_dense():
    layer = make(mode="depth").eval()
    with torch.no_grad():  # force the loop head to pick 1 loop for every token
        layer.loop_predictor.weight.zero_()
    dense = DenseFFN(D, H)
    dense.load_state_dict({k: v for k, v in layer.state_dict().items() if k in dense.state_dict()})
    x = torch.randn(2, 5, D)
    assert torch.allclose(layer(x), dense(x), atol=1e-6)
    # a gated layer with loop head forcing L_max loops (lambda = 0: no width path) is L_max dense steps
    gated = make().eval()
    x2 = torch.randn(1, 3, D)
    with torch.no_grad():
        gated.loop_predictor.weight.zero_()
        gated.loop_predictor.weight[3] = x2[0].sum(0) * 10  # strongly aligned with every token -> l_hat = 4
        expected = x2
        for _ in range(4):
            expected = gated.step(expected)
    assert torch.allclose(gated(x2), expected, atol=1e-5)
    assert gated.stats.summary()["loop_histogram"] == [0, 0, 0, 3]


def test_width_with_equal_router_logits_matches_hand_computation():
    layer = make(mode="width", n_experts=4, top_k=2).eval()
    with torch.no_grad():
        layer.router.weight.zero_()  # all logits equal -> softmax over the 2 picked gives 1/2 each
    a, b = torch.topk(torch.zeros(1, 4), 2, dim=-1).indices[0].tolist()  # whichever two topk breaks the tie to
    x = torch.randn(1, 3, D)
    y = layer(x)
    h = x[0]
    with torch.no_grad():
        expected = 0.5 * torch.stack([ref.expert_output(layer, t, a) + ref.expert_output(layer, t, b) for t in h])
    assert torch.allclose(y[0], expected, atol=1e-5)
    load = layer.stats.summary()["expert_load"]
    assert load[a] == load[b] == 0.5 and sum(load) == 1.0


def test_gradients_reach_every_parameter():
    layer = make().train()
    x = torch.randn(2, 8, D, requires_grad=True)
    layer(x).pow(2).mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None


@pytest.mark.parametrize("mode", ["width", "depth", "ungated"])
def test_ablation_modes_train_and_eval(mode):
    layer = make(mode=mode)
    assert (layer.router is None) == (mode == "depth")
    assert (layer.loop_predictor is None) == (mode == "width")
    x = torch.randn(2, 4, D)
    layer.train()(x).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
    y = layer.eval()(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    if mode == "ungated":
        assert layer.stats.summary()["mean_lambda"] == pytest.approx(0.5)


def test_ungated_eval_is_half_width_half_depth():
    layer = make(mode="ungated").eval()
    x = torch.randn(1, 5, D)
    y = layer(x)
    h = x[0]
    with torch.no_grad():
        exp = []
        for t in h:
            lhat = int((layer.loop_predictor.weight @ t).argmax()) + 1
            cur = t
            for _ in range(lhat):
                cur = ref.ffn_step(layer, cur)
            exp.append(0.5 * ref.width_output(layer, t) + 0.5 * cur)
    assert torch.allclose(y[0], torch.stack(exp), atol=1e-5)


def test_tau_follows_the_step_schedule_and_is_not_saved():
    layer = make(tau_decay=0.9)
    assert float(layer.tau) == pytest.approx(5.0)
    set_temperature_step(layer, 10)
    assert float(layer.tau) == pytest.approx(5.0 * 0.9 ** 10)
    assert layer.temperature_at(10) == pytest.approx(5.0 * 0.9 ** 10)
    set_temperature_step(layer, 110)
    assert float(layer.tau) == pytest.approx(0.1)  # floor
    assert layer.temperature_at(10_000) == pytest.approx(0.1)
    assert "tau" not in layer.state_dict()  # derived from the step: nothing to save or replay


def test_balance_loss_equals_switch_formula_on_hand_made_routing():
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]])
    experts = torch.topk(logits, 2, dim=-1).indices  # (0,1) (0,2) (1,2) (2,0)
    f = torch.tensor([3, 2, 3]) / 8.0  # assignments per expert over n*K = 8
    P = torch.softmax(logits, -1).mean(0)
    expected = 3 * (f * P).sum()
    assert torch.allclose(switch_balance_loss(logits, experts), expected)
    uniform = torch.zeros(6, 3)
    assert torch.allclose(switch_balance_loss(uniform, torch.tensor([[0], [1], [2], [0], [1], [2]])),
                          torch.tensor(1.0))


def test_balance_loss_gradient_reaches_router_through_the_output():
    x = torch.randn(2, 6, D)

    def router_grad(coef):
        torch.manual_seed(7)
        layer = make(balance_loss_coef=coef).train()
        torch.manual_seed(8)
        y = layer(x)
        y.sum().backward()  # only the "main" loss: the aux loss rides along through the output
        return layer, layer.router.weight.grad.clone()

    layer0, g0 = router_grad(0.0)
    layer1, g1 = router_grad(0.5)
    assert not torch.allclose(g0, g1)
    # the difference is exactly the gradient of 0.5 * balance loss w.r.t. the router
    w = layer1.router.weight.detach().clone().requires_grad_(True)
    logits = x.reshape(-1, D) @ w.T
    aux = switch_balance_loss(logits, torch.topk(logits, 2, -1).indices)
    (g_aux,) = torch.autograd.grad(0.5 * aux, w)
    assert torch.allclose(g1 - g0, g_aux, atol=1e-5)
    assert float(layer1.last_aux_loss) == pytest.approx(0.5 * aux.item(), rel=1e-5)


def test_logits_are_fp32_under_bf16_autocast():
    layer = make().train()
    x = torch.randn(2, 4, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert torch.isfinite(y).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.router(x.reshape(-1, D)).dtype == torch.float32
        assert layer.loop_predictor(x.reshape(-1, D).bfloat16()).dtype == torch.float32


def test_from_dense_copies_weights_and_checks_shapes():
    dense = DenseFFN(D, H)
    cfg = VersatileFFNConfig(d_model=D, d_hidden=H, norm_eps=1e-6)
    layer = VersatileFFN.from_dense(cfg, dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight,
                                    dense.norm.weight)
    for name in ("gate_proj", "up_proj", "down_proj", "norm"):
        assert torch.equal(getattr(layer, name).weight, getattr(dense, name).weight)
    with pytest.raises(ValueError, match="w_down has shape"):
        VersatileFFN.from_dense(cfg, dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight.T,
                                dense.norm.weight)
    with pytest.raises(ValueError, match="norm_weight"):
        VersatileFFN.from_dense(cfg, dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight,
                                torch.ones(D + 1))


def test_input_checks():
    layer = make()
    with pytest.raises(ValueError, match="rank 3"):
        layer(torch.randn(4, D))
    with pytest.raises(ValueError, match="d_model=16"):
        layer(torch.randn(1, 2, D + 1))
    with pytest.raises(TypeError):
        layer([[0.0] * D])
    debug = make(check_finite=True)
    bad = torch.randn(1, 2, D)
    bad[0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        debug(bad)
    layer(bad)  # without debug mode no sync / no check


@pytest.mark.parametrize("kwargs, field", [
    (dict(top_k=9), "top_k"),
    (dict(top_k=0), "top_k"),
    (dict(n_experts=0), "n_experts"),
    (dict(max_loops=0), "max_loops"),
    (dict(d_expert=33), "d_expert"),
    (dict(d_expert=0), "d_expert"),
    (dict(d_expert=32), "d_expert"),  # stride 0: all experts identical
    (dict(n_experts=5), "d_hidden"),  # 32 not divisible by 5
    (dict(mode="both"), "mode"),
    (dict(tau_start=0.05), "tau"),
    (dict(tau_decay=1.5), "tau_decay"),
    (dict(balance_loss_coef=-1.0), "balance_loss_coef"),
])
def test_bad_configs_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VersatileFFNConfig(d_model=D, d_hidden=H, **kwargs)


def test_expert_slices_follow_eq_4_5():
    cfg = VersatileFFNConfig(d_model=D, d_hidden=4096, d_expert=1024, n_experts=8)
    S = (4096 - 1024) // 7
    assert cfg.expert_stride == S == 438
    assert cfg.expert_slices()[3] == (3 * S, 3 * S + 1024)
    assert VersatileFFNConfig(d_model=D, d_hidden=4096).expert_slices()[7] == (3584, 4096)
    assert VersatileFFNConfig(d_model=D, d_hidden=H, n_experts=1, top_k=1).expert_slices() == [(0, 32)]


def test_stats_summary_and_reset():
    layer = make().eval()
    layer(torch.randn(2, 10, D))
    s = layer.stats.summary()
    assert s["tokens"] == 20 and sum(s["loop_histogram"]) == 20
    mean_loops = sum((i + 1) * c for i, c in enumerate(s["loop_histogram"])) / 20
    assert s["mean_loops"] == pytest.approx(mean_loops)
    assert s["mean_lambda"] == pytest.approx((4 - mean_loops) / 4)
    assert sum(s["expert_load"]) == pytest.approx(1.0)
    layer.reset_stats()
    assert layer.stats.summary()["tokens"] == 0


def test_bf16_cast_keeps_tau_fp32_and_runs():
    layer = make().to(torch.bfloat16)
    assert layer.tau.dtype == torch.float32 and layer.gate_proj.weight.dtype == torch.bfloat16
    set_temperature_step(layer, 1)
    assert float(layer.tau) < 5.0  # in bf16 the schedule's value would round back to 5.0
    x = torch.randn(2, 6, D, dtype=torch.bfloat16)
    y = layer.train()(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert layer.eval()(x).dtype == torch.bfloat16
