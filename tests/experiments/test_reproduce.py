"""experiments/: the reproduction driver end to end on a micro model (CPU), resuming, and the report."""
import importlib.util
import json
import sys
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
    # rows of two tables in one call, the dense start pre-trained once for both
    assert reproduce.main(reproduce_argv(token_dir, runs, "--runs", "base,versatile")) == 0
    assert reproduce.main(reproduce_argv(token_dir, runs, "--table", "5", "--runs", "scratch-versatile")) == 0
    seed0 = runs / "seed0"
    assert sorted(p.name for p in seed0.glob("*.json")) == ["base.json", "pretrain-dense.json",
                                                             "scratch-versatile.json", "versatile.json"]
    epoch = json.loads((token_dir / "index.json").read_text())["splits"]["train"]["tokens"]
    rec = {p.stem: json.loads(p.read_text()) for p in seed0.glob("*.json")}
    # one epoch per stage; from scratch: the same total tokens as pre-training + continued pre-training
    steps = epoch // 1024
    assert rec["versatile"]["tokens_seen"] == rec["base"]["tokens_seen"] == steps * 1024 and rec["versatile"]["steps"] == steps
    assert rec["scratch-versatile"]["tokens_seen"] == (2 * epoch // 1024) * 1024
    assert rec["versatile"]["init"] == "pretrain-dense" and rec["scratch-versatile"]["init"] == "scratch"
    assert rec["versatile"]["table"] == "1" and rec["scratch-versatile"]["table"] == "5"
    assert rec["versatile"]["config"]["train"]["init_from"].endswith("pretrain-dense/final")
    assert rec["versatile"]["config"]["train"]["lr"] == 5e-4 and rec["pretrain-dense"]["config"]["train"]["lr"] == 1e-3
    v = rec["versatile"]
    assert v["config"]["model"]["ffn"]["kind"] == "versatile" and v["tasks"] is None
    assert 1.0 <= v["flops"]["all_tasks"]["mean_loops"] <= 4.0 and v["val_ffn_stats"] is not None
    assert v["params"]["total"] > rec["base"]["params"]["total"]  # the loop-count head and the router
    assert v["curve"] and all(p["tau"] >= 0.1 for p in v["curve"])
    # the step-0 gap: the converted model before training against the dense start on the same tokens
    assert rec["base"]["step0"]["gap"] == pytest.approx(0.0, abs=1e-6)  # dense into dense: the same function
    s0 = v["step0"]
    assert s0["gap"] == pytest.approx(s0["loss"] - s0["dense_start_loss"]) and s0["tokens"] > 0
    assert 1.0 <= s0["mean_loops"] <= 4.0 and v["dense_start"]["val_loss"] == rec["pretrain-dense"]["val"]["loss"]
    assert rec["scratch-versatile"]["step0"] is None and rec["base"]["commit"] and rec["base"]["command"]
    # the step-0 gap alone (no training), for the paper's start next to the dense-preserving one: zero gap for it
    assert reproduce.main(reproduce_argv(token_dir, runs, "--step0-only", "--runs", "versatile-dp,loop4")) == 0
    gaps = {n: json.loads((seed0 / "step0" / f"{n}.json").read_text())["step0"]["gap"] for n in ("versatile-dp", "loop4")}
    assert gaps["versatile-dp"] == pytest.approx(0.0, abs=1e-5) and abs(gaps["loop4"]) > 1e-3
    assert not (seed0 / "versatile-dp.json").exists()  # no training, no record among the rows
    # 4x steps: the same epoch in a 4x smaller global batch (micro-batch shrunk to divide it), tau compressed to it
    args = reproduce.parse_args(reproduce_argv(token_dir, runs, "--runs", "versatile-4x"))
    cfg = reproduce.run_config(args, "versatile-4x", tmp_path / "w", epoch, None)
    assert cfg.train.global_batch_tokens == 256 and cfg.train.micro_batch_size == 8
    assert cfg.model.ffn.tau_decay == pytest.approx(reproduce.compressed_tau_decay(epoch // 256))
    # finished rows are skipped: rerunning changes nothing
    before = {p.name: p.read_bytes() for p in seed0.glob("*.json")}
    capsys.readouterr()
    assert reproduce.main(reproduce_argv(token_dir, runs, "--table", "1", "--runs", "base,versatile")) == 0
    assert "[base] done already" in capsys.readouterr().out
    assert before == {p.name: p.read_bytes() for p in seed0.glob("*.json")}

    # a 4x-steps row and a row of no section (as issue 17's dense-preserving rows will be), copied from versatile
    for name, source, shift in (("versatile-4x", v, -0.5), ("base-4x", rec["base"], -0.4)):
        copy = dict(source, run=name, steps=4 * steps, val=dict(source["val"], loss=source["val"]["loss"] + shift))
        (seed0 / f"{name}.json").write_text(json.dumps(copy))
    (seed0 / "custom-row.json").write_text(json.dumps(dict(v, run="custom-row")))
    # the dense-preserving rows are paired with their own Base continued (issue 17, part 2)
    (seed0 / "dp-base.json").write_text(json.dumps(dict(rec["base"], run="dp-base")))
    dp = dict(v, run="versatile-dp", val=dict(v["val"], loss=rec["base"]["val"]["loss"] - 0.003),
              val_ffn_stats=[dict(s, width_gamma=0.25, loop_step_mean=0.5) for s in v["val_ffn_stats"]])
    (seed0 / "versatile-dp.json").write_text(json.dumps(dp))
    out = tmp_path / "report"
    out.mkdir()
    assert report.main(["--runs", str(runs), "--out", str(out)]) == 0
    tables = (out / "TABLES.md").read_text()
    sections = {part.split("\n", 1)[0]: part for part in tables.split("### ")[1:]}
    delta, start = v["val"]["loss"] - rec["base"]["val"]["loss"], v["val"]["loss"] - rec["pretrain-dense"]["val"]["loss"]
    row = lambda section, name: next(line for line in sections[section].splitlines() if line.startswith(f"| {name} |"))  # noqa: E731
    two = row("Two baselines (issue 17)", "VersatileFFN")
    assert f"{start:+.4f} | -0.162 | {delta:+.4f} | -0.037 | {v['step0']['gap']:+.4f}" in two
    one = row("Table 1/2 — continued pre-training", "VersatileFFN")
    assert f"{v['val']['loss']:.4f}" in one and f"{delta:+.4f}" in one
    assert "| 4-Loop | 0 | not run yet |" in tables
    steps_row = row("More optimizer steps over the same tokens (issue 17, part 4)", "VersatileFFN")
    assert f"| {delta:+.4f} | {delta - 0.1:+.4f} |" in steps_row  # each paired with its own Base continued
    dp_row = row("Dense-preserving start (issue 17, part 2; not the paper's method)",
                 "VersatileFFN, dense-preserving start")
    assert "s0 -0.0030" in dp_row and "| 0.250 | +0.500 |" in dp_row
    other = row("Other rows", "custom-row")
    assert f"{delta:+.4f} (vs Base continued)" in other and f"{v['step0']['gap']:+.4f}" in other
    assert f"| {steps} / {4 * steps} |" in steps_row
    assert {p.name for p in out.glob("*.png")} == {"curves_table1.png", "curves_table34.png", "curves_table5.png",
                                                    "curves_steps4x.png", "curves_dp.png"}


def test_rows_from_any_table_and_clear_errors(monkeypatch):
    reproduce = script("reproduce")
    args = reproduce.parse_args(["--data", "d", "--runs", "loop4-4x, versatile-L2 ,scratch-loop4"])
    assert args.rows == ["loop4-4x", "versatile-L2", "scratch-loop4"]
    assert reproduce.parse_args(["--data", "d", "--table", "4x"]).rows == ["base-4x", "versatile-4x", "loop4-4x"]
    for bad in (["--data", "d"], ["--data", "d", "--runs", "versatile,nope"]):
        with pytest.raises(SystemExit):
            reproduce.parse_args(bad)
    # a new row is one entry of the shared table: the driver accepts it, the report labels it
    rows = sys.modules["rows"]
    monkeypatch.setitem(rows.ROWS, "custom-row", rows.Row("versatile", "a custom row", ("model.ffn.max_loops=2",)))
    assert reproduce.parse_args(["--data", "d", "--runs", "custom-row"]).rows == ["custom-row"]
    assert rows.label("custom-row") == "a custom row" and rows.table_of("custom-row") is None
    assert reproduce.parse_args(["--data", "d", "--table", "dp"]).rows == ["dp-base", "versatile-dp", "loop4-dp"]


@pytest.mark.plotting
def test_committed_tables_are_generated_from_the_committed_records(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert script("report").main(["--runs", "results/runs", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "TABLES.md").read_text() == (ROOT / "results" / "TABLES.md").read_text()
