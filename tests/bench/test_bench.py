"""The benchmark suite runs end to end on the CPU with tiny shapes (what it measures is only meaningful on a GPU)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from versatileffn import bench
from versatileffn.bench.e2e import executed_flops_per_token
from versatileffn.bench.yardstick import last_json
from versatileffn.cli import main


@pytest.fixture
def one_thread():
    """Tiny ops on a shared CPU: OpenMP threads only add spin-wait time."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bench_cli_quick_writes_checked_json(tmp_path, capsys, token_dir, one_thread):
    from versatileffn import ffn_config_from_name, model_config
    from versatileffn.io import save_model

    trained = save_model(model_config("micro", ffn_config_from_name("versatile"), vocab_size=320).build(),
                         tmp_path / "trained")
    out = tmp_path / "r.json"
    assert main(["bench", "--quick", "--sections", "check,prefill,train,anchor_ffn", "--out", str(out),
                 "--device", "cpu", "--trained-model", str(trained), "--data", str(token_dir)]) == 0
    data = json.loads(out.read_text())
    assert data["env"]["torch"] and data["env"]["shape"]["d_model"] == bench.QUICK.d_model
    assert data["check"]["ok"] is True, data["check"]
    pre = data["prefill"][str(bench.QUICK.tokens[0])]["eager"]
    for mix in ("all1", "uniform", "easy", "all4"):
        row = pre[mix]
        assert row["ms"] > 0 and math.isfinite(row["over_ideal"]) and row["rel_err_vs_plain"] < 1e-5
    mix = data["prefill"]["trained_mix"]
    assert mix["n_tokens"] > 0 and sum(mix["loop_histogram"]) == 2 * mix["n_tokens"]  # 2 micro layers
    assert pre["trained"]["ms"] > 0
    assert pre["all4"]["ideal_x_dense"] == 4.0 and pre["all1"]["ideal_x_dense"] == pytest.approx(1 + 1 / 12)
    train = data["train"][str(bench.QUICK.tokens[0])]
    assert {"dense", "loop4", "vffn_auto", "vffn_full", "vffn_exact", "vffn_exact_all4"} <= set(train["ms"])
    assert train["auto_picks"] == "full"  # the CPU: no ragged GEMM without a host read
    assert train["x_dense"]["dense"] == 1.0 and train["x_loop4"]["loop4"] == 1.0
    assert train["flop_x_dense"]["vffn_exact"] < train["flop_x_dense"]["vffn_full"]
    assert data["anchor_ffn"] == "skipped: no --anchor-ffn given"
    t = data["targets"]
    assert set(t) == set(bench.TARGETS)
    assert t["train_exact_16k"]["measured"] == train["x_dense"]["vffn_auto"]
    assert t["decode_b1_uniform_ms"]["measured"] is None and not t["decode_b1_uniform_ms"]["met"]
    printed = capsys.readouterr().out
    assert "prefill 256 tok eager" in printed and "target full_eval_dense_s: not measured" in printed


def test_bench_cli_rejects_unknown_section_and_missing_inputs(tmp_path, capsys):
    assert main(["bench", "--quick", "--sections", "check,warp", "--out", str(tmp_path / "r.json")]) == 2
    assert "warp" in capsys.readouterr().err
    assert main(["bench", "--quick", "--anchor-ffn", str(tmp_path / "nope.py"), "--out", str(tmp_path / "r.json")]) == 2
    assert "anchor-ffn" in capsys.readouterr().err


def test_sections_are_one_registry():
    assert bench.SECTIONS == ("check", "prefill", "train", "full_eval", "decode", "profile", "anchor_ffn", "e2e")
    assert all(callable(s.run) for s in bench.REGISTRY.values())


def test_targets_summary_from_a_bench_json():
    """Each issue-13 target measured from the sections' keys (decode: the figures the decode section writes per
    mode; the best mode counts)."""
    s = bench.Shape()
    out = {"env": {"device": "NVIDIA H200", "command": "versatileffn bench", "torch": "2.11"},
           "decode": {"targets": {"b1_uniform_ms": {"eager": 30.0, "graph": 2.2},
                                  "uniform_x_dense_worst": {"eager": 3.1, "graph": 2.0},
                                  "dense_x_anchor_worst": {"graph": 1.8 / 1.65}}},
           "prefill": {"4096": {"eager": {m: {"over_ideal": 1.1} for m in ("all1", "uniform", "easy", "all4")},
                                "graph": {"all1": {"over_ideal": 1.3}, "uniform": "skipped: time budget"}}},
           "train": {"16384": {"x_dense": {"vffn_auto": 3.5, "loop4": 3.9}, "x_loop4": {"vffn_auto": 0.9},
                               "auto_picks": "exact"}},
           "full_eval": {"dense": {"wall_s": 14.0}, "versatile": {"wall_s": 17.5}, "versatile_x_dense": 1.25}}
    f = bench.summary_file(out, s, "bench.json")["targets"]
    assert f["decode_b1_uniform_ms"]["measured"] == 2.2 and f["decode_b1_uniform_ms"]["met"]  # the best mode
    assert f["decode_b1_uniform_ms"]["detail"]["mode"] == "graph"
    assert f["decode_x_dense"]["measured"] == pytest.approx(2.0) and not f["decode_x_dense"]["met"]
    assert f["decode_x_dense"]["reason"] == ""  # measured, not met: a human says why
    assert f["dense_decode_x_yardstick"]["measured"] == pytest.approx(1.8 / 1.65)
    assert f["prefill_4k_eager"]["met"] and f["prefill_4k_graph"]["measured"] == 1.3
    assert f["prefill_16k_eager"]["measured"] is None
    assert f["prefill_16k_eager"]["reason"].startswith("not measured")
    assert f["train_exact_16k"]["met"] and f["train_exact_16k"]["detail"]["auto_picks"] == "exact"
    assert f["full_eval_dense_s"]["met"] and f["full_eval_versatile_x_dense"]["met"]
    assert all(e["device"] == "NVIDIA H200" and e["command"] == "versatileffn bench" for e in f.values())
    assert all(e["reason"] is None for e in f.values() if e["met"])
    lines = bench.registry.decode_summary({"dense_graph": {"1": {"step_ms": 1.4}, "8": "skipped: time budget"},
                                           **out["decode"]})
    assert lines[0] == "decode dense_graph ms/step: b1 1.40" and "graph 2.200" in lines[1]


def test_yardstick_output_is_read_from_its_last_json():
    assert last_json('{"dense": 1.0}\nloops1_b1_eager 8.9\n{"ms_per_step": {"a": 1}}\n') == {"ms_per_step": {"a": 1}}
    assert last_json('{"dense": 1}\n{\n "tokens": 4096,\n "infer": {}\n}\n') == {"tokens": 4096, "infer": {}}
    with pytest.raises(ValueError, match="no JSON"):
        last_json("Traceback ...")


def test_flop_ratios_of_exact_depth():
    from versatileffn.flops import versatile_sublayer_x_dense

    cfg = bench.common.vffn_config(bench.Shape())
    # uniform loop mix: backward through 1 + 3/4 + 1/2 + 1/4 = 2.5 loops; the width path a whole down projection
    # (one third of a loop) on the masked route, K/N of it on the grouped one
    full = versatile_sublayer_x_dense(cfg, [1, 1, 1, 1], training=True, grouped_width=False)
    assert full == pytest.approx(13 / 3)
    exact = versatile_sublayer_x_dense(cfg, [1, 1, 1, 1], training=True, grouped_width=False, exact_depth_grad=True)
    assert exact == pytest.approx((13 + 2 * (2.5 * 3 + 1)) / 9)
    assert versatile_sublayer_x_dense(cfg, [1, 1, 1, 1]) == pytest.approx(2.5 + 0.75 / 12)
    with pytest.raises(ValueError, match="loop_histogram"):
        versatile_sublayer_x_dense(cfg, [1, 1])


def test_executed_flops_of_static_kinds_come_from_flops_py():
    from versatileffn import ffn_config_from_name, model_config, static_ffn_flops_per_token

    for name in ("dense", "loop2", "moe"):
        cfg = model_config("micro", ffn_config_from_name(name))
        model = cfg.build()
        d, seq = cfg.d_model, 16
        rest = 3 * (cfg.n_layers * (2 * 4 * d * d + 2 * seq * d) + 2 * d * cfg.vocab_size)  # attention + head
        assert executed_flops_per_token(model, seq) == rest + 3 * static_ffn_flops_per_token(cfg)


@pytest.mark.olmo_eval
def test_full_eval_and_profile_sections_quick(tmp_path, token_dir, monkeypatch, one_thread):
    """The full-evaluation section's command (run in this process here: the same CLI, without a fresh interpreter)
    and the HellaSwag profile, at tiny shapes with a small tokenizer."""
    import subprocess
    import sys

    from versatileffn.bench import full_eval

    def in_process(cmd, env, timeout_s):
        assert cmd[:4] == [sys.executable, "-m", "versatileffn.cli", "eval"]
        assert full_eval.task_data_path(b) in env["PYTHONPATH"].split(":")
        return subprocess.CompletedProcess(cmd, main(cmd[3:]), "", "")

    monkeypatch.setattr(full_eval, "run_command", in_process)
    b = bench.common.Bench(bench.QUICK, torch.device("cpu"), torch.float32, 300.0,
                           inputs=bench.Inputs(tokenizer=str(token_dir / "tokenizer.json")), out_dir=tmp_path)
    res = full_eval.section_full_eval(b)
    for ffn in ("dense", "versatile"):
        assert res[ffn]["wall_s"] > 0 and res[ffn]["tokens"] > 0 and 0 <= res[ffn]["average"] <= 1
        assert json.loads((tmp_path / f"eval_{ffn}.json").read_text())["tasks"].keys() == set(full_eval.QUICK_TASKS)
    assert res["versatile"]["mean_loops"] >= 1 and res["versatile_x_dense"] > 0
    prof = bench.REGISTRY["profile"].run(b)
    assert prof["host"]["requests"] == 80 and prof["dense"]["whole_task"]["tokens"] > 0
    assert prof["versatile"]["top_ops_by_cpu"] and (tmp_path / prof["versatile"]["trace"]).is_file()
    assert any("full eval versatile x dense" in line for line in full_eval.summary(res))


def test_decode_section_times_the_decoder_with_forced_mixes(one_thread, monkeypatch):
    from versatileffn.bench.decode import decode_targets, force_loops, section_decode

    monkeypatch.delenv("VERSATILEFFN_ANCHOR_DECODE", raising=False)
    b = bench.common.Bench(bench.QUICK, torch.device("cpu"), torch.float32, budget_s=100)
    res = section_decode(b)
    for key in ("dense_eager", "all1_eager", "uniform_eager", "easy_eager", "all4_eager"):
        assert all(r["step_ms"] > 0 for r in res[key].values()), key
    assert res["uniform_eager"]["1"]["mix_mean_loops"] == 2.5 and res["anchor"].startswith("skipped")
    t = res["targets"]
    assert t["b1_uniform_ms"] == {"eager": res["uniform_eager"]["1"]["step_ms"]}
    assert t["uniform_x_dense_worst"]["eager"] == max(res["x_dense"]["uniform_eager"].values())
    # the forced mix reaches every layer's decode tokens (the prefill keeps the loop head's choice)
    model = bench.common.build_lm(b, "versatile").eval()
    hooks = force_loops(model, bench.common.LOOP_MIXES["all4"], 2)
    model.reset_ffn_stats()
    model(torch.zeros(2, 1, dtype=torch.long))
    assert all(s["loop_histogram"] == [0, 0, 0, 2] for s in model.ffn_stats())
    for h in hooks:
        h.remove()
    # our dense step over the yardstick's graph step, worst batch, per mode
    fake = {"dense_graph": {"1": {"step_ms": 1.5}, "64": {"step_ms": 2.0}}, "x_dense": {},
            "anchor": {"ms_per_step": {"loops1_b1_graph": 1.25, "loops1_b64_graph": 1.6}}}
    cuda_bench = bench.common.Bench(bench.QUICK, torch.device("cuda"), torch.float32, budget_s=1)
    assert decode_targets(fake, cuda_bench)["dense_x_anchor_worst"] == {"graph": pytest.approx(1.25)}
