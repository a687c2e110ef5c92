"""benchmarks/engine_probe.py runs end to end at tiny shapes on the CPU (its numbers mean nothing there), so the
GPU command cannot rot."""
import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_probe_quick_on_the_cpu(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("engine_probe", ROOT / "benchmarks" / "engine_probe.py")
    probe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, probe)  # its dataclasses look their module up there
    spec.loader.exec_module(probe)
    out = probe.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "probe.json")])
    assert json.loads((tmp_path / "probe.json").read_text()) == json.loads(capsys.readouterr().out)
    assert out["device"] == "cpu" and out["torch"] and out["dtype"] == "bfloat16"
    assert out["routes"]["grouped_gemm"]  # the CPU runs the engine's grouped-GEMM route in bf16
    for section, sizes in (("eval", probe.QUICK.eval_tokens), ("decode", probe.QUICK.decode_tokens)):
        for tokens in sizes:
            eager = out[section][str(tokens)]["eager"]
            assert set(eager) == {"dense_ms", *probe.MIXES}
            for mix in probe.MIXES:
                row = eager[mix]
                assert row["ms"] > 0 and math.isfinite(row["over_ideal"]) and row["rel_err_vs_plain"] < 2e-2
    assert out["eval"]["96"]["eager"]["all4"]["ideal_x_dense"] == 4.0
    assert out["eval"]["96"]["eager"]["all1"]["ideal_x_dense"] == 1.25  # 1 loop + K/N of the width path
    train = out["train"]["96"]
    assert {"dense", "loop4", "vffn_full", "vffn_exact", "vffn_exact_uniform"} <= set(train["ms"])
    assert train["flop_x_dense"]["vffn_exact"] < train["flop_x_dense"]["vffn_full"]
    assert sum(train["sampled_loop_histogram"]) == 96 * 5  # the full path's timed calls counted their tokens
