"""torchrun set-up and parallelism, applied from outside the (single-device) model code.

DDP replicates the model; FSDP2 (``torch.distributed.fsdp.fully_shard``) shards every block and then the
root (embedding, final norm, head), the torchtitan layout. Both work on CPU with gloo (tests) and on GPUs
with NCCL, single or multi node (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group when launched by torchrun with WORLD_SIZE > 1; else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            visible = torch.cuda.device_count()
            if local_rank >= visible:
                raise UserError(f"LOCAL_RANK={local_rank} but only {visible} CUDA device(s) are visible: start at "
                                f"most {visible} processes per node (torchrun --nproc-per-node), or set "
                                "train.device=cpu for gloo")
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank)


def parallelize(model: torch.nn.Module, mode: str, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """Wrap for data parallelism; returns the module to call (the raw model stays reachable for its methods)."""
    if not info.enabled:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # buffers (tau set from the step, RoPE tables) are identical on every rank: no per-forward broadcast needed
        return DDP(model, device_ids=ids, broadcast_buffers=False)
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # an explicit mesh on the training device: fully_shard's default mesh is CUDA whenever CUDA exists, which
        # breaks gloo training on CPU on a GPU machine (and more ranks than GPUs)
        mesh = init_device_mesh(device.type, (info.world,))
        for block in transformer_blocks(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise UserError(f"train.parallel must be ddp or fsdp; got {mode!r}")


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The per-block FSDP units: ``VersatileLM.blocks``, or a (converted) HF decoder's ``model.layers``
    (also behind the trainer's ``LMForward`` adapter)."""
    inner = getattr(model, "model", None)
    for candidate in (model, inner, getattr(inner, "model", None)):
        if isinstance(getattr(candidate, "blocks", None), torch.nn.ModuleList):
            return candidate.blocks
        if isinstance(getattr(candidate, "layers", None), torch.nn.ModuleList):
            return candidate.layers
    raise UserError(f"train.parallel=fsdp: cannot find the transformer blocks of {type(model).__name__} "
                    "(expected .blocks or an HF decoder's .model.layers); use train.parallel=ddp")


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def agree(error: str | None, info: DistInfo) -> str | None:
    """Rank 0's outcome of a step only it performs (folder checks, writes), on every rank, so all raise alike."""
    if not info.enabled:
        return error
    box = [error]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(value: int, info: DistInfo, device: torch.device) -> int:
    """The largest ``value`` over the ranks (a signal seen by any rank stops every rank at the same step)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def destroy(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
