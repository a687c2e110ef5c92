"""Helpers shared by the training tests (a module name of its own: several test folders have a conftest)."""
import os
import socket

import torch
import torch.distributed as dist

from versatileffn.train import Trainer, load_run_config

STEPS = 3  # optimizer steps of the distributed runs


def micro_config(token_dir, out_dir, ffn_kind="dense", *extra):
    """The micro model (d 32, 2 layers) on token_dir: 4 sequences of 32 tokens per step, 2 micro-batches.

    Always on CPU in fp32, also on a GPU machine: the tests compare runs exactly and spawn gloo ranks."""
    from versatileffn.paper import VARIANTS

    overrides = [f"model.{k}={v}" for k, v in dict(vocab_size=320, d_model=32, n_layers=2, n_heads=4, d_hidden=64,
                                                      max_seq_len=64).items()]
    overrides += [f"model.ffn.{k}={v}" for k, v in VARIANTS[ffn_kind].ffn.items()]
    overrides += [f"data.path={token_dir}", "data.seq_len=32", f"train.out_dir={out_dir}", "train.max_steps=6",
                  "train.global_batch_tokens=128", "train.micro_batch_size=2", "train.lr=1e-2", "train.log_every=1",
                  "train.eval_tokens=512", "train.progress=false", "train.tensorboard=false",
                  "train.device=cpu"]
    return load_run_config(None, overrides + list(extra))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_worker(rank: int, world: int, port: int, token_dir, out_root) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for mode in ("ddp", "fsdp"):
            # MoE: routing, a balance loss through autograd and ranks whose tokens skip some experts
            cfg = micro_config(token_dir, out_root / mode, "moe", f"train.parallel={mode}", f"train.max_steps={STEPS}",
                               "train.ckpt_every=2")
            trainer = Trainer(cfg)
            if mode == "fsdp":
                assert type(trainer.model.lm_head.weight).__name__ == "DTensor"  # really sharded
            trainer.train()
        # interrupted after step 2 and resumed under FSDP2: sharded optimizer state round-trips
        cfg = micro_config(token_dir, out_root / "fsdp-resume", "moe", "train.parallel=fsdp", f"train.max_steps={STEPS}")
        Trainer(cfg).train(until_step=2)
        Trainer(cfg, resume=True).train()
        # VersatileFFN under FSDP2: in eval mode each rank's tokens run different loop counts (and rank 1 gets
        # padding batches), yet every rank must reach the same all-gathers
        cfg = micro_config(token_dir, out_root / "fsdp-versatile", "versatile", "train.parallel=fsdp",
                           "train.max_steps=2", "train.eval_tokens=160")
        Trainer(cfg).train()
    finally:
        if dist.is_initialized():  # not when the Trainer failed before joining: keep its error, not ours
            dist.destroy_process_group()


def gloo_hf_worker(rank: int, world: int, port: int, token_dir, hf_dir, out_root) -> None:
    """A converted HF model (train.hf_model) under DDP and under FSDP2 (per decoder layer + root)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for mode in ("ddp", "fsdp"):
            cfg = micro_config(token_dir, out_root / mode, "dense", f"train.hf_model={hf_dir}",
                               f"train.parallel={mode}", f"train.max_steps={STEPS}", "train.eval_tokens=160")
            trainer = Trainer(cfg)
            if mode == "fsdp":
                assert type(trainer.model.lm_head.weight).__name__ == "DTensor"  # really sharded
            trainer.train()
    finally:
        if dist.is_initialized():  # not when the Trainer failed before joining: keep its error, not ours
            dist.destroy_process_group()
