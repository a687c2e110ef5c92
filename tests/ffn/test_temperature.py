"""tau as a schedule of the optimizer step, applied by one optimizer hook (no annealed state to replay)."""
import pytest
import torch

from versatileffn import VersatileLM, attach_temperature_schedule, ffn_config_from_name, model_config
from versatileffn.ffn.temperature import compressed_tau_decay, set_temperature_step, without_saved_tau


def micro():
    return VersatileLM(model_config("micro", ffn_config_from_name("versatile"))).train()


def taus(model):
    return [float(m.tau) for m in model.versatile_layers()]


def test_the_optimizer_hook_sets_tau_for_the_next_step():
    model = micro()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    handle = attach_temperature_schedule(opt, model, step=5)  # e.g. after resuming at step 5
    layer = model.versatile_layers()[0]
    assert taus(model) == pytest.approx([layer.temperature_at(5)] * 2)
    for step in range(6, 9):
        model(torch.randint(0, 256, (1, 8)), targets=torch.randint(0, 256, (1, 8))).loss.backward()
        opt.step()
        assert taus(model) == pytest.approx([layer.temperature_at(step)] * 2)
    handle.remove()
    opt.step()
    assert taus(model) == pytest.approx([layer.temperature_at(8)] * 2)


def test_resume_needs_only_the_step():
    a, b = micro(), micro()
    opt = torch.optim.SGD(a.parameters(), lr=0.0)
    attach_temperature_schedule(opt, a)
    for _ in range(7):
        opt.step()
    set_temperature_step(b, 7)
    assert taus(a) == taus(b)
    with pytest.raises(ValueError, match="step"):
        set_temperature_step(b, -1)


def test_compressed_schedule_reaches_the_floor_at_the_papers_fraction():
    decay = compressed_tau_decay(100)
    assert 5.0 * decay ** 91 > 0.1 >= 5.0 * decay ** 92 * (1 - 1e-9)
    assert 5.0 * 0.99984 ** 24_450 == pytest.approx(0.1, rel=0.01)  # the paper's factor: the floor at 24.4k steps


def test_saved_tau_keys_are_dropped():
    state = {"blocks.0.ffn.tau": torch.tensor(1.0), "blocks.0.ffn.router.weight": torch.zeros(2),
             "model.layers.1.versatile_ffn.tau": torch.tensor(1.0)}
    assert list(without_saved_tau(state)) == ["blocks.0.ffn.router.weight"]
