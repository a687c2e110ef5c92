"""Multi-GPU training, measured: one training run per invocation, launched by torchrun (or plain python for 1 GPU).

    torchrun --nproc_per_node=2 benchmarks/multi_gpu.py --data DIR --ffn versatile --parallel fsdp --out OUT/run

Trains the `paper-354m` shape (or --preset) for a few steps with the project's Trainer, logging every step,
and writes OUT/summary.json: per-step losses, mean tokens/s over the timed steps (warm-up steps excluded),
peak GPU memory of every rank, world size and the run's settings. Options:
  --stress       on rank 1 force every token to exit after one loop and route only to experts 0..K-1, so the
                 ranks take different compute paths (tests that no collective waits on a rank that ran less)
  --resume-at N  stop at step N, then resume from the checkpoint in a fresh Trainer and finish (checks the
                 resumed loss curve against an uninterrupted run; checkpoints are gathered full state dicts)
`benchmarks/multi_gpu.sh` runs the whole comparison (1 vs 2 GPUs, DDP vs FSDP2, dense vs VersatileFFN).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="prepared token folder (versatileffn prepare-data)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="paper-354m", help="a preset (versatileffn/presets/) or a YAML file")
    p.add_argument("--ffn", default="versatile")
    p.add_argument("--parallel", default="ddp", choices=("ddp", "fsdp"))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the throughput mean")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--global-batch-seqs", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stress", action="store_true")
    p.add_argument("--resume-at", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra run-config overrides")
    return p.parse_args()


def force_degenerate_routing() -> None:
    """Rank-local patch: every token picks 1 loop and only experts 0..K-1 (the gradient paths stay intact)."""
    import versatileffn.ffn.versatile as vmod
    from versatileffn.ffn.common import top_k_gates

    original = vmod.VersatileFFN._loop_sample

    def one_loop(self, h_nd):
        p_nl, _ = original(self, h_nd)
        soft = p_nl - p_nl.detach()  # the soft part's gradient, zero value
        hard = torch.zeros_like(p_nl)
        hard[:, 0] = 1.0
        return hard + soft, torch.ones(h_nd.shape[0], dtype=torch.long, device=h_nd.device)

    def first_experts(logits_ne, k):
        masked = logits_ne.clone()
        masked[:, k:] = float("-inf")
        return top_k_gates(masked, k)

    vmod.VersatileFFN._loop_sample = one_loop
    vmod.top_k_gates = first_experts


def main() -> int:
    args = parse_args()
    from versatileffn.paper import VARIANTS
    from versatileffn.train import Trainer, load_run_config
    from versatileffn.train.distributed import destroy

    rank = int(os.environ.get("RANK", "0"))
    out = Path(args.out)
    overrides = [f"data.path={args.data}", f"data.seq_len={args.seq_len}", f"train.out_dir={out}",
                 f"train.max_steps={args.steps}", "train.max_tokens=null",
                 f"train.global_batch_tokens={args.global_batch_seqs * args.seq_len}",
                 f"train.micro_batch_size={args.micro_batch}", f"train.parallel={args.parallel}",
                 f"train.seed={args.seed}", "train.log_every=1", "train.eval_tokens=65536", "train.ckpt_every=0",
                 "train.tensorboard=false", "train.progress=false", "train.keep_last=1"]
    overrides += [f"model.ffn.{k}={v}" for k, v in VARIANTS[args.ffn].ffn.items()] + list(args.overrides)
    cfg = load_run_config(args.preset, overrides)
    if args.stress and rank == 1:
        force_degenerate_routing()
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    if args.resume_at:
        trainer.train(until_step=args.resume_at)
        del trainer
        trainer = Trainer(cfg, resume=True)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train()
    wall = time.perf_counter() - t0
    peak = torch.tensor([torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else 0.0], device=trainer.device)
    peaks = [torch.zeros_like(peak) for _ in range(trainer.dist.world)]
    if trainer.dist.enabled:
        dist.all_gather(peaks, peak)
    else:
        peaks = [peak]
    if trainer.dist.is_main:
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r.get("kind") == "train"]
        timed = [r["tokens_per_s"] for r in train if r["step"] > args.warmup_steps]
        summary = {
            "ffn": args.ffn, "parallel": args.parallel if trainer.dist.enabled else "single", "world": trainer.dist.world,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "preset": args.preset,
            "seq_len": args.seq_len, "global_batch_tokens": args.global_batch_seqs * args.seq_len,
            "micro_batch_per_rank": args.micro_batch, "steps": args.steps, "stress": args.stress,
            "resume_at": args.resume_at, "losses": [r["loss"] for r in train], "steps_logged": [r["step"] for r in train],
            "tokens_per_s": sum(timed) / len(timed) if timed else None,
            "peak_memory_gib_per_rank": [round(float(p), 3) for p in peaks],
            "val_loss": (result.get("val") or {}).get("val_loss"), "wall_s": wall,
            "mean_loops": [r.get("loops") for r in train],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({k: summary[k] for k in ("ffn", "parallel", "world", "tokens_per_s",
                                                  "peak_memory_gib_per_rank", "val_loss")}), flush=True)
    destroy(trainer.dist)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
