"""The benchmark suite runs end to end on the CPU with tiny shapes (what it measures is only meaningful on a GPU)."""
from __future__ import annotations

import json

import pytest
import torch

from versatileffn import bench
from versatileffn.bench.e2e import executed_flops_per_token
from versatileffn.cli import main


@pytest.fixture
def one_thread():
    """Tiny ops on a shared CPU: OpenMP threads only add spin-wait time."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bench_cli_quick_writes_checked_json(tmp_path, capsys, one_thread):
    out = tmp_path / "r.json"
    assert main(["bench", "--quick", "--sections", "check,decode", "--out", str(out), "--device", "cpu",
                 "--no-compile"]) == 0
    data = json.loads(out.read_text())
    assert data["env"]["torch"] and data["env"]["shape"]["d_model"] == bench.QUICK.d_model
    assert data["check"]["ok"] is True, data["check"]
    dec = data["decode"]
    assert set(dec["versatile_x_dense"]) == {str(b) for b in bench.QUICK.decode_batches}
    assert all(dec[k]["1"]["step_ms"] > 0 for k in ("dense", "versatile_compact", "versatile_all_loops"))
    assert dec["versatile_x_dense"]["1"] == min(dec["versatile_compact_x_dense"]["1"],
                                                dec["versatile_all_loops_x_dense"]["1"])
    t = data["targets"]
    assert t["train_16k_eager"] == {"target": 4.5, "measured": None, "met": False}  # not run -> not met
    assert t["decode_worst_batch_eager"]["measured"] == max(dec["versatile_x_dense"].values())
    assert "decode batch 1" in capsys.readouterr().out


def test_bench_cli_rejects_unknown_section(tmp_path, capsys):
    assert main(["bench", "--quick", "--sections", "check,warp", "--out", str(tmp_path / "r.json")]) == 2
    assert "warp" in capsys.readouterr().err


def test_flop_ratios_of_exact_depth():
    # uniform loop mix: backward through 1 + 3/4 + 1/2 + 1/4 = 2.5 loops
    r = bench.train_flop_ratios(bench.Shape(), [1, 1, 1, 1])
    assert r["vffn_full"] == pytest.approx(13 / 3)
    assert r["vffn_exact"] == pytest.approx((13 + 2 * (2.5 * 3 + 1)) / 9)


def test_sections_are_one_registry():
    assert bench.SECTIONS == ("check", "train_eager", "infer_eager", "decode", "e2e_eager", "train_compiled",
                              "e2e_compiled", "infer_compiled", "profile")
    assert all(callable(f) for f in bench.SECTION_RUNNERS.values())


def test_executed_flops_of_static_kinds_come_from_flops_py():
    from versatileffn import ffn_config_from_name, model_config, static_ffn_flops_per_token

    for name in ("dense", "loop2", "moe"):
        cfg = model_config("micro", ffn_config_from_name(name))
        model = cfg.build()
        d, seq = cfg.d_model, 16
        rest = 3 * (cfg.n_layers * (2 * 4 * d * d + 2 * seq * d) + 2 * d * cfg.vocab_size)  # attention + head
        assert executed_flops_per_token(model, seq) == rest + 3 * static_ffn_flops_per_token(cfg)
