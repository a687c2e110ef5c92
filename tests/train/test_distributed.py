"""2-process gloo runs on CPU (DDP and FSDP2) agree with one process on the same global batch."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_helpers import STEPS, free_port, gloo_worker, micro_config

from versatileffn.io import load_state
from versatileffn.train import Trainer


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_and_fsdp2_match_single_process(token_dir, tmp_path):
    single = Trainer(micro_config(token_dir, tmp_path / "single", "moe", f"train.max_steps={STEPS}"))
    assert single.accum == 2  # one process: 2 micro-batches of 2; two ranks: 1 micro-batch of 2 each
    ref_result = single.train()
    mp.spawn(gloo_worker, args=(2, free_port(), token_dir, tmp_path), nprocs=2, join=True)
    ref = load_state(tmp_path / "single" / "final" / "model.safetensors")
    for mode in ("ddp", "fsdp"):
        got = load_state(tmp_path / mode / "final" / "model.safetensors")
        assert set(got) == set(ref)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=2e-5, rtol=1e-4, msg=f"{mode}: {k}")
        recs = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        val = [r for r in recs if r["kind"] == "val"][-1]
        assert val["val_loss"] == pytest.approx(ref_result["val"]["val_loss"], abs=1e-4)
        train = [r for r in recs if r["kind"] == "train"]
        assert [r["step"] for r in train] == [1, 2, 3]
        assert (tmp_path / mode / "checkpoints" / "step_0000003" / "optimizer.pt").is_file()
    resumed = load_state(tmp_path / "fsdp-resume" / "final" / "model.safetensors")
    fsdp = load_state(tmp_path / "fsdp" / "final" / "model.safetensors")
    for k in fsdp:
        torch.testing.assert_close(resumed[k], fsdp[k], atol=1e-6, rtol=0, msg=f"fsdp resume: {k}")
    versatile = [json.loads(line) for line in (tmp_path / "fsdp-versatile" / "metrics.jsonl").read_text().splitlines()]
    assert versatile[-1]["kind"] == "val" and 1 <= versatile[-1]["val_mean_loops"] <= 4
    # Gumbel samples depend on (seed, step, global micro-batch position), not on the world size: the sampled
    # VersatileFFN run on 2 ranks ends where the single process ends
    single_v = Trainer(micro_config(token_dir, tmp_path / "single-versatile", "versatile", "train.max_steps=2",
                                    "train.eval_tokens=160"))
    single_v.train()
    ref_v = load_state(tmp_path / "single-versatile" / "final" / "model.safetensors")
    got_v = load_state(tmp_path / "fsdp-versatile" / "final" / "model.safetensors")
    for k in ref_v:
        torch.testing.assert_close(got_v[k], ref_v[k], atol=2e-5, rtol=1e-4, msg=f"versatile fsdp: {k}")


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    from versatileffn.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="LOCAL_RANK=1 but only 1 CUDA device"):
        init_distributed("cuda")
