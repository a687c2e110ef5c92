"""The benchmark suite runs end to end on the CPU with tiny shapes (what it measures is only meaningful on a GPU)."""
from __future__ import annotations

import json

import pytest
import torch

from versatileffn import benchmark
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
    assert data["env"]["torch"] and data["env"]["shape"]["d_model"] == benchmark.QUICK.d_model
    assert data["check"]["ok"] is True, data["check"]
    dec = data["decode"]
    assert set(dec["versatile_x_dense"]) == {str(b) for b in benchmark.QUICK.decode_batches}
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
    r = benchmark.train_flop_ratios(benchmark.Shape(), [1, 1, 1, 1])
    assert r["vffn_full"] == pytest.approx(13 / 3)
    assert r["vffn_exact"] == pytest.approx((13 + 2 * (2.5 * 3 + 1)) / 9)
