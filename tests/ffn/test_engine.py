"""The ragged-loop engine (versatileffn/ffn/engine.py) computes what the plain path computes: eval outputs and
statistics against ``impl="plain"``, training outputs, gradients and statistics of ``depth_grad="exact"``
against Algorithm 1 (``"full"``), with every garbage row poisoned with NaN. On the CPU the engine runs its
grouped-GEMM route in fp32 / bf16 (torch._grouped_mm leaves rows past the live count uninitialised, as on
the GPU) and its full-row route in float64."""
from __future__ import annotations

import pytest
import torch

from versatileffn.ffn import VersatileFFNConfig
from versatileffn.ffn import VersatileFFN, engine, ragged
from versatileffn.ffn.runtime import RuntimeOptions

D, H, L = 32, 64, 4
MODES = ["gated", "ungated", "depth"]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]
OVERLAP = 24  # d_expert > d_hidden / N = 16: overlapping expert windows (stride 13)
MIXES = {"all1": [1, 0, 0, 0], "all_max": [0, 0, 0, 1], "mixed": [0.4, 0.3, 0.2, 0.1]}


def make(mode="gated", dtype=torch.float32, d_expert=None, layer_cls=VersatileFFN, **kw) -> VersatileFFN:
    torch.manual_seed(0)
    cfg = VersatileFFNConfig(d_model=D, d_hidden=H, n_experts=4, top_k=2, max_loops=L, mode=mode, d_expert=d_expert,
                             tau_start=1.0, **kw)
    layer = layer_cls(cfg)
    with torch.no_grad():  # weights that make loops matter, and a loop head that spreads its choices
        for lin in (layer.gate_proj, layer.up_proj, layer.down_proj):
            lin.weight.normal_(0, 0.15)
        if layer.loop_predictor is not None:
            layer.loop_predictor.weight.normal_(0, 0.05)
    return layer.to(dtype)


def mix_loops(mix: str, shape, seed: int = 1) -> torch.Tensor:
    probs = torch.tensor(MIXES[mix], dtype=torch.float)
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(probs, shape[0] * shape[1], replacement=True, generator=g).view(shape) + 1


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# fp32 logits in every dtype: router / loop-head gradients (and the input's, which they feed) round at fp32 level
TOL = {torch.float64: (1e-12, 1e-6), torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 3e-2)}


def eval_run(layer, x, impl, loops=None):
    layer.eval().runtime.impl = impl
    layer.reset_stats()
    with torch.no_grad(), ragged.poison_garbage():
        y = layer(x, loops=loops)
    return y, layer.stats.summary()


@pytest.mark.parametrize("d_expert", [None, OVERLAP])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_engine_equals_plain(dtype, mode, d_expert):
    layer = make(mode, dtype, d_expert)
    x = torch.randn(3, 7, D, dtype=dtype)  # 21 tokens: an odd count
    for mix in MIXES:
        loops = mix_loops(mix, x.shape[:2])
        y_plain, s_plain = eval_run(layer, x, "plain", loops)
        y_engine, s_engine = eval_run(layer, x, "engine", loops)
        assert torch.isfinite(y_engine).all(), mix  # no poisoned garbage row leaked
        assert rel(y_engine, y_plain) < TOL[dtype][0], mix
        assert s_engine == s_plain, mix
        assert s_engine["loop_histogram"] == torch.bincount(loops.flatten() - 1, minlength=L).tolist()


@pytest.mark.parametrize("cap", [None, 1, 2])
def test_eval_engine_with_the_loop_head_and_a_loop_cap(cap):
    layer = make("gated", torch.float32)
    with torch.no_grad():
        layer.loop_predictor.weight.normal_(0, 3.0)
    layer.runtime.loop_cap = cap
    x = torch.randn(4, 9, D)
    y_plain, s_plain = eval_run(layer, x, "plain")
    y_engine, s_engine = eval_run(layer, x, "engine")
    assert rel(y_engine, y_plain) < 1e-5 and s_engine == s_plain
    hist = s_engine["loop_histogram"]
    assert sum(c > 0 for c in hist) >= (2 if cap != 1 else 1)
    if cap is not None:
        assert sum(hist[cap:]) == 0


def train_run(layer, x, depth_grad, loops=None, seed=7):
    layer.train().runtime.depth_grad = depth_grad
    layer.reset_stats()
    for p in layer.parameters():
        p.grad = None
    xg = x.clone().requires_grad_()
    torch.manual_seed(seed)
    with ragged.poison_garbage():
        y = layer(xg, loops=loops)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y.dtype))
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None} | {"input": xg.grad}
    return y.detach(), grads, layer.stats.summary()


def assert_grads_close(got: dict, want: dict, dtype) -> None:
    assert set(got) == set(want)
    tight, loose = TOL[dtype]
    for name in want:
        assert torch.isfinite(got[name]).all(), name
        tol = loose if name.startswith(("router", "loop_predictor", "input")) else tight
        assert rel(got[name], want[name]) < tol, (name, rel(got[name], want[name]))


@pytest.mark.parametrize("d_expert", [None, OVERLAP])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_training_equals_algorithm_1(dtype, mode, d_expert):
    layer = make(mode, dtype, d_expert)
    x = torch.randn(3, 7, D, dtype=dtype)
    for mix in (None, *MIXES):  # None: the Gumbel sample's own loop mix
        loops = None if mix is None else mix_loops(mix, x.shape[:2])
        y_full, g_full, s_full = train_run(layer, x, "full", loops)
        y_exact, g_exact, s_exact = train_run(layer, x, "exact", loops)
        assert layer.last_depth_grad == "exact"
        assert rel(y_exact, y_full) < TOL[dtype][0], mix
        assert s_exact == s_full, mix
        assert_grads_close(g_exact, g_full, dtype)
        if loops is not None:
            assert s_exact["loop_histogram"] == torch.bincount(loops.flatten() - 1, minlength=L).tolist()
    assert g_full["loop_predictor.weight"].abs().sum() > 0  # the straight-through term is exercised


def test_width_mode_has_no_loops_and_one_path():
    """The width-only ablation runs no loop: every knob gives the same output, gradients and statistics."""
    layer = make("width", torch.float32)
    x = torch.randn(2, 7, D)
    runs = [eval_run(layer, x, impl) for impl in ("plain", "engine")]
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    (y_f, g_f, s_f), (y_e, g_e, s_e) = train_run(layer, x, "full"), train_run(layer, x, "exact")
    assert torch.equal(y_f, y_e) and s_f == s_e and all(torch.equal(g_f[k], g_e[k]) for k in g_f)


def test_exact_training_runs_each_loops_backward_on_the_tokens_that_reach_it(monkeypatch):
    layer = make("gated", torch.float32)
    live_counts = []
    original = engine.linear_grad_rows

    def spy(x, weight, n):
        live_counts.append(int(n))
        return original(x, weight, n)

    monkeypatch.setattr(engine, "linear_grad_rows", spy)
    loops = mix_loops("mixed", (2, 25))
    train_run(layer, torch.randn(2, 25, D), "exact", loops)
    reach = [int((loops >= loop).sum()) for loop in range(2, L + 1)]
    assert live_counts == [c for c in reach for _ in range(3)]  # gate, up, down projections of loops 2..L


def test_post_norm_layers_equal_their_plain_path():
    """The HF OLMo2 post-norm FFN: the engine applies W_out and the output norm separately (loops and width)."""
    pytest.importorskip("transformers")
    from versatileffn.hf.modeling import PostNormVersatileFFN

    layer = make("gated", torch.float32, layer_cls=PostNormVersatileFFN)
    x = torch.randn(2, 11, D)
    loops = mix_loops("mixed", x.shape[:2])
    y_plain, s_plain = eval_run(layer, x, "plain", loops)
    y_engine, s_engine = eval_run(layer, x, "engine", loops)
    assert rel(y_engine, y_plain) < 1e-5 and s_engine == s_plain
    y_full, g_full, _ = train_run(layer, x, "full", loops)
    y_exact, g_exact, _ = train_run(layer, x, "exact", loops)
    assert rel(y_exact, y_full) < 1e-5
    assert_grads_close(g_exact, g_full, torch.float32)


def test_engine_under_bf16_autocast_matches_plain():
    layer = make("gated", torch.float32)
    x = torch.randn(2, 9, D)
    loops = mix_loops("mixed", x.shape[:2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_plain, _ = eval_run(layer, x, "plain", loops)
        y_engine, _ = eval_run(layer, x, "engine", loops)
        y_full, g_full, _ = train_run(layer, x, "full", loops)
        y_exact, g_exact, _ = train_run(layer, x, "exact", loops)
    assert y_engine.dtype == y_plain.dtype and rel(y_engine, y_plain) < 2e-2
    assert rel(y_exact, y_full) < 2e-2
    assert_grads_close(g_exact, g_full, torch.bfloat16)


def test_eval_that_builds_a_graph_runs_the_plain_path():
    layer = make("gated", torch.float32).eval()
    layer.runtime.impl = "engine"
    x = torch.randn(2, 5, D, requires_grad=True)
    layer(x).square().sum().backward()  # the engine computes in place; the plain path is differentiable
    assert x.grad is not None and layer.gate_proj.weight.grad is not None


def test_runtime_options_choose_by_device_and_check_values():
    opts = RuntimeOptions()
    cpu = torch.zeros(4, D)
    assert not opts.eval_engine(cpu) and not opts.exact_depth_grad(cpu)  # the CPU default: the plain paths
    opts.impl, opts.depth_grad = "engine", "exact"
    assert opts.eval_engine(cpu) and opts.exact_depth_grad(cpu)
    for name, bad in (("impl", "compact"), ("depth_grad", "sometimes"), ("loop_cap", 0), ("loop_cap", 1.5),
                      ("exact_min_tokens", 0)):
        with pytest.raises(ValueError, match="impl|depth_grad|loop cap|exact_min_tokens"):
            setattr(opts, name, bad)
    assert make(depth_grad="full").runtime.depth_grad == "full"  # from the config


def test_loops_argument_is_checked():
    layer = make("gated").eval()
    x = torch.randn(2, 3, D)
    assert layer(x, loops=torch.full((6,), 2)).shape == x.shape  # [n] works as well as [B, T]
    with pytest.raises(ValueError, match="shape"):
        layer(x, loops=torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        layer(x, loops=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\[1, max_loops=4\]"):
        layer(x, loops=torch.full((2, 3), 5))
    with pytest.raises(ValueError, match="width"):
        make("width").eval()(x, loops=torch.ones(2, 3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.bfloat16])  # the grouped-GEMM route (fp32 compiles to full rows)
def test_engine_compiles_fullgraph(dtype):
    """Static shapes, no host read: one graph for eval and for exact training (aot_eager: no C compiler)."""
    layer = make("gated", dtype)
    layer.runtime.impl, layer.runtime.depth_grad = "engine", "exact"
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 8, D, dtype=dtype)
    loops = mix_loops("mixed", x.shape[:2])
    with torch.no_grad():
        y_c = compiled.eval()(x, loops=loops)
    y_e, _ = eval_run(layer, x, "engine", loops)
    assert rel(y_c, y_e) < TOL[dtype][0]
    layer.train()
    torch.manual_seed(2)
    compiled(x).float().sum().backward()
    g_c = layer.gate_proj.weight.grad.clone()
    layer.zero_grad()
    torch.manual_seed(2)
    layer(x).float().sum().backward()
    assert rel(g_c, layer.gate_proj.weight.grad) < TOL[dtype][0]
