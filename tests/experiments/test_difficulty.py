"""experiments/difficulty.py: the synthetic task (answers, difficulty labels, held-out pairs, prepared-token folder),
Spearman's rho, and the whole experiment in micro (five runs, records, cap sweep, report) on CPU."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))

import difficulty  # noqa: E402


def iterate(perm, a: int, k: int) -> int:
    for _ in range(k):
        a = int(perm[a])
    return a


def test_records_answer_f_to_the_k_and_hold_out_pairs():
    task = difficulty.Task(digits=6, heldout=0.25, seed=3)
    assert task.n_symbols == 36 and sorted(task.perm) == list(range(36)) and task.heldout_mask.sum() == 9
    assert task.vocab_size == 1 + (task.max_k + 1) + 6 + 36
    tokens, k, a = task.records(3000, np.random.default_rng(0), train=True)
    recs = tokens.reshape(-1, difficulty.RECORD_LEN)
    assert (recs[:, 4] == task.sep).all() and (recs[:, 0] == 1 + k).all()
    for (marker, hi, lo, ans, _), kk, aa in zip(recs, k, a):
        arg = (hi - task.first_digit) * task.digits + (lo - task.first_digit)
        assert arg == aa and ans - task.first_answer == iterate(task.perm, arg, marker - 1)
    assert set(k) == set(range(task.max_k + 1))
    # training never asks a held-out symbol with k >= 2, but asks every symbol with k = 0 and 1
    assert not task.heldout_mask[a[k >= 2]].any()
    assert set(a[k <= 1]) == set(range(36))
    _, k_eval, a_eval = task.records(3000, np.random.default_rng(1), train=False)
    assert task.heldout_mask[a_eval[k_eval >= 2]].any()


def test_labels_read_from_the_tokens_match_the_generator():
    task = difficulty.Task(digits=5, heldout=0.2, seed=1)
    x, y = task.windows(8, 20, np.random.default_rng(2))
    assert x.shape == y.shape == (8, 20) and (x[:, 1:] == y[:, :-1]).all()
    diff, held = task.labels(x.numpy())
    xs, ys = x.numpy(), y.numpy()
    for r in range(8):
        for p in range(20):
            offset = p % difficulty.RECORD_LEN  # windows start at record boundaries
            if offset == 2:  # the lo digit: the next token is the answer
                k = xs[r, p - 2] - 1
                arg = (xs[r, p - 1] - task.first_digit) * task.digits + xs[r, p] - task.first_digit
                assert diff[r, p] == k and ys[r, p] - task.first_answer == iterate(task.perm, arg, k)
                assert held[r, p] == (k >= 2 and task.heldout_mask[arg])
            else:
                assert diff[r, p] == (difficulty.FILLER if offset == 3 else difficulty.RANDOM) and not held[r, p]
                assert offset != 3 or ys[r, p] == task.sep
    assert (diff >= 0).sum() == 8 * 20 // difficulty.RECORD_LEN


def test_task_folder_is_a_prepared_token_folder(tmp_path):
    from versatileffn.data import load_tokens, read_index

    task = difficulty.Task(digits=4)
    task.write(tmp_path, train_tokens=1000, val_tokens=200, seed=0)
    index = read_index(tmp_path)
    assert index["vocab_size"] == task.vocab_size and index["eos_id"] == task.sep
    train = np.asarray(load_tokens(tmp_path, "train"))
    assert len(train) >= 1000 and len(train) % difficulty.RECORD_LEN == 0 and index["splits"]["val"]["tokens"] >= 200
    assert (train.reshape(-1, difficulty.RECORD_LEN)[:, 4] == task.sep).all()


def test_spearman():
    assert difficulty.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert difficulty.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert difficulty.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert difficulty.spearman([1, 1, 1], [1, 2, 3]) is None


def micro_argv(out, device: str) -> list[str]:
    return ["--out", str(out), "--steps", "4", "--batch", "8", "--seq-len", "20", "--digits", "4", "--eval-seqs", "8",
            "--device", device, "--set", "model.d_model=16", "--set", "model.d_hidden=16", "--set", "train.log_every=2"]


@pytest.mark.plotting
def test_micro_experiment_writes_records_and_report(tmp_path):
    out = tmp_path / "difficulty"
    argv = micro_argv(out, "cpu")
    assert difficulty.main(argv) == 0
    recs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(recs) == set(difficulty.RUNS)
    params = {name: r["params"] for name, r in recs.items()}
    assert params["dense"] == params["loop2"] == params["loop4"] < params["versatile"] < params["moe"]
    for name, r in recs.items():
        assert r["steps"] == 4 and r["tokens_seen"] == 4 * 8 * 20 and r["device"] == "cpu" and r["config"]["model"]
        m = r["metrics"]
        by = m["by_difficulty"]
        assert set(by) <= {"0", "1", "2", "3", "4", "filler"} and "filler" in by
        assert sum(v["n"] for k, v in by.items() if k != "filler") == 8 * 20 // 5 == by["filler"]["n"]
        for v in by.values():
            assert 0.0 <= v["accuracy"] <= 1.0 and 1.0 <= v["mean_loops"] <= 4.0
            assert v["ffn_flops_per_token"]["paper"] > 0
        assert m["loop_histogram_matches_library"] is True  # the hooks' per-token loops = the library's histogram
        rho = m["spearman_loops_k"]
        assert rho is None if name != "versatile" else rho is None or -1.0 <= rho <= 1.0
    fixed = {"dense": 1, "moe": 1, "loop2": 2, "loop4": 4}
    for name, loops in fixed.items():
        assert recs[name]["metrics"]["mean_loops"] == loops
    assert recs["loop4"]["metrics"]["ffn_flops_per_token"]["paper"] == 4 * recs["dense"]["metrics"]["ffn_flops_per_token"]["paper"]
    # the cap sweep: caps 1..L_max, each token runs at most cap loops, FLOPs never fall as the cap rises
    sweep = recs["versatile"]["cap_sweep"]
    assert [s["cap"] for s in sweep] == [1, 2, 3, 4] and recs["dense"]["cap_sweep"] is None
    assert all(v["mean_loops"] <= s["cap"] for s in sweep for v in s["by_difficulty"].values())
    assert sweep[0]["mean_loops"] == 1.0 and sweep[-1]["mean_loops"] == recs["versatile"]["metrics"]["mean_loops"]
    flops = [s["ffn_flops_per_token"]["paper"] for s in sweep]
    assert flops == sorted(flops)
    assert [s["mean_loops"] for s in recs["loop4"]["cap_sweep"]] == [1, 2, 3, 4]
    report = (out / "REPORT.md").read_text()
    assert "## Accuracy per difficulty" in report and "## Inference loop-cap sweep: VersatileFFN" in report
    assert "| VersatileFFN |" in report and (out / "difficulty.png").stat().st_size > 0
    # the report alone, from the records
    assert difficulty.main(argv[:2] + ["--report-only"]) == 0
    assert (out / "REPORT.md").read_text() == report


@pytest.mark.gpu
@pytest.mark.plotting
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_per_token_loops_match_the_library_under_bf16_on_cuda(tmp_path):
    assert difficulty.main(micro_argv(tmp_path, "cuda") + ["--runs", "versatile"]) == 0
    rec = json.loads((tmp_path / "versatile.json").read_text())
    assert rec["device"] != "cpu" and rec["metrics"]["loop_histogram_matches_library"] is True


def test_arguments_are_checked():
    for bad in (["--runs", "dense,nope"], ["--seq-len", "21"]):
        with pytest.raises(SystemExit):
            difficulty.parse_args(bad)
    with pytest.raises(ValueError, match="digits"):
        difficulty.Task(digits=1)
