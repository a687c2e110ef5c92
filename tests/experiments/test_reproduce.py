"""experiments/: the reproduction driver end to end on a micro model (CPU), resuming, and the report."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MICRO = [f"model.{k}={v}" for k, v in dict(vocab_size=320, d_model=32, n_layers=2, n_heads=4, d_hidden=64,
                                           max_seq_len=64).items()]
MICRO += ["data.seq_len=32", "train.global_batch_tokens=1024", "train.micro_batch_size=16", "train.eval_tokens=512",
          "train.log_every=2", "train.ckpt_every=1000", "train.device=cpu"]


def reproduce_argv(token_dir, out, *extra):
    argv = ["--data", str(token_dir), "--out", str(out), "--eval-limit", "0", *extra]
    for o in MICRO:
        argv += ["--set", o]
    return argv


@pytest.mark.plotting
def test_rows_records_resume_and_report(token_dir, tmp_path, capsys):
    reproduce, report = script("reproduce"), script("report")
    runs = tmp_path / "runs"
    assert reproduce.main(reproduce_argv(token_dir, runs, "--table", "1", "--runs", "base,versatile")) == 0
    assert reproduce.main(reproduce_argv(token_dir, runs, "--table", "5", "--runs", "scratch-versatile")) == 0
    seed0 = runs / "seed0"
    assert sorted(p.name for p in seed0.glob("*.json")) == ["base.json", "pretrain-dense.json",
                                                             "scratch-versatile.json", "versatile.json"]
    epoch = json.loads((token_dir / "index.json").read_text())["splits"]["train"]["tokens"]
    rec = {p.stem: json.loads(p.read_text()) for p in seed0.glob("*.json")}
    # one epoch per stage; from scratch: the same total tokens as pre-training + continued pre-training
    steps = epoch // 1024
    assert rec["versatile"]["tokens_seen"] == rec["base"]["tokens_seen"] == steps * 1024
    assert rec["scratch-versatile"]["tokens_seen"] == (2 * epoch // 1024) * 1024
    assert rec["versatile"]["init"] == "pretrain-dense" and rec["scratch-versatile"]["init"] == "scratch"
    assert rec["versatile"]["config"]["train"]["init_from"].endswith("pretrain-dense/final")
    assert rec["versatile"]["config"]["train"]["lr"] == 5e-4 and rec["pretrain-dense"]["config"]["train"]["lr"] == 1e-3
    v = rec["versatile"]
    assert v["config"]["model"]["ffn"]["kind"] == "versatile" and v["tasks"] is None
    assert 1.0 <= v["flops"]["all_tasks"]["mean_loops"] <= 4.0 and v["val_ffn_stats"] is not None
    assert v["params"]["total"] > rec["base"]["params"]["total"]  # the loop-count head and the router
    assert v["curve"] and all(p["tau"] >= 0.1 for p in v["curve"])
    # finished rows are skipped: rerunning changes nothing
    before = {p.name: p.read_bytes() for p in seed0.glob("*.json")}
    capsys.readouterr()
    assert reproduce.main(reproduce_argv(token_dir, runs, "--table", "1", "--runs", "base,versatile")) == 0
    assert "[base] done already" in capsys.readouterr().out
    assert before == {p.name: p.read_bytes() for p in seed0.glob("*.json")}

    out = tmp_path / "report"
    out.mkdir()
    assert report.main(["--runs", str(runs), "--out", str(out)]) == 0
    tables = (out / "TABLES.md").read_text()
    row = next(line for line in tables.splitlines() if line.startswith("| VersatileFFN |"))
    assert f"{v['val']['loss']:.4f}" in row and f"{v['val']['loss'] - rec['base']['val']['loss']:+.4f}" in row
    assert "| 4-Loop | 0 | not run yet |" in tables
    assert {p.name for p in out.glob("*.png")} == {"curves_table1.png", "curves_table34.png", "curves_table5.png"}


@pytest.mark.plotting
def test_committed_tables_are_generated_from_the_committed_records(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert script("report").main(["--runs", "results/runs", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "TABLES.md").read_text() == (ROOT / "results" / "TABLES.md").read_text()
