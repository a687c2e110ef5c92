import pytest
import torch
import torch.nn.functional as F

from versatileffn import DenseFFN, LoopFFN, MoEFFN, switch_balance_loss

D, H = 16, 32


def manual_dense(m, x):
    xf = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * m.norm.weight
    return x + (F.silu(xf @ m.gate_proj.weight.T) * (xf @ m.up_proj.weight.T)) @ m.down_proj.weight.T


def test_dense_is_eq_2():
    m = DenseFFN(D, H)
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 2)
    x = torch.randn(2, 3, D)
    assert torch.allclose(m(x), manual_dense(m, x), atol=1e-6)
    assert m.gate_proj.weight.shape == (H, D) and m.down_proj.weight.shape == (D, H)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_loop_ffn_is_k_applications(k):
    m = LoopFFN(D, H, n_loops=k)
    x = torch.randn(2, 3, D)
    expected = x
    for _ in range(k):
        expected = manual_dense(m, expected)
    assert torch.allclose(m(x), expected, atol=1e-5)


def test_loop_ffn_rejects_zero_loops():
    with pytest.raises(ValueError, match="n_loops"):
        LoopFFN(D, H, n_loops=0)


def test_moe_with_equal_router_logits_matches_hand_computation():
    m = MoEFFN(D, H, n_experts=4, top_k=2, d_expert=8).eval()
    with torch.no_grad():
        m.router.weight.zero_()
    a, b = torch.topk(torch.zeros(1, 4), 2, dim=-1).indices[0].tolist()
    x = torch.randn(1, 3, D)
    u = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * m.norm.weight

    def expert(e):
        return (F.silu(u @ m.expert_gate[e].T) * (u @ m.expert_up[e].T)) @ m.expert_down[e].T

    expected = manual_dense(m, x) + 0.5 * expert(a) + 0.5 * expert(b)
    assert torch.allclose(m(x), expected, atol=1e-5)
    load = m.stats.summary()["expert_load"]
    assert load[a] == load[b] == 0.5


def test_moe_training_attaches_balance_loss_and_reaches_all_params():
    m = MoEFFN(D, H, n_experts=4, top_k=2, balance_loss_coef=0.1).train()
    x = torch.randn(2, 5, D)
    m(x).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
    logits = x.reshape(-1, D) @ m.router.weight.T
    aux = switch_balance_loss(logits, torch.topk(logits, 2, -1).indices)
    assert m.last_aux_loss.item() == pytest.approx(0.1 * aux.item(), rel=1e-5)


def test_moe_param_count_matches_paper_shape():
    with torch.device("meta"):
        m = MoEFFN(1024, 4096, n_experts=8, top_k=2)
    extra = sum(p.numel() for p in m.parameters()) - sum(p.numel() for p in DenseFFN(1024, 4096, ).parameters())
    assert extra == 8 * 3 * 1024 * 512 + 8 * 1024


def test_moe_bad_args():
    with pytest.raises(ValueError, match="top_k"):
        MoEFFN(D, H, n_experts=2, top_k=3)
    with pytest.raises(ValueError, match="n_experts"):
        MoEFFN(D, H, n_experts=0)
