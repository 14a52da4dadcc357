"""Several processes through PyTorch's own engine: ``torchrun`` + DDP or FSDP2 (``fully_shard``).

Launched by ``torchrun`` (the WORLD_SIZE, RANK and LOCAL_RANK variables), the trainer joins a process
group (NCCL on GPUs, Gloo on CPUs). Every rank draws the same global batch, t and masks from the
step's generator and takes its own contiguous slice of it, so what a step computes depends on the
seed, the step and each example's global index only, never on the number of processes. Gradients are
averaged by DDP or reduce-scattered by FSDP2; the loss is scaled by the world size so that the result
is the gradient of the global-batch mean. Rank 0 logs. Checkpoints (maskdiff.train_state): under DDP
rank 0 writes the whole tensors; under FSDP2 every rank writes its own shards (maskdiff.sharded).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import torch
from torch import Tensor, nn

from maskdiff.errors import MaskdiffError

MODES = ("ddp", "fsdp")


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    mode: str = "single"  # single, ddp or fsdp

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MaskdiffError("device 'cuda' was asked for but no GPU is visible to PyTorch; use --device cpu or auto")
        return torch.device(f"cuda:{local_rank}")
    raise MaskdiffError(f"unknown device {name!r}; choose one of: auto, cpu, cuda")


def init(mode: str, device: str) -> Context:
    """Join the process group when started by torchrun with more than one process; else a single process."""
    if mode not in MODES:
        raise MaskdiffError(f"unknown parallel mode {mode!r}; choose one of: {', '.join(MODES)}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=pick_device(device))
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world, local_rank, dev, mode)


def shutdown(ctx: Context, wait: bool = False) -> None:
    """Leave the process group. ``wait`` (after a run that ended normally on every rank): first wait until
    every rank is past its last collective, since a rank that closes its connections first can leave a
    slower one's pending gloo operation without a peer (seen under load as "terminate called without an
    active exception" at exit, after training had finished). Not after an error: the other ranks may
    never reach the barrier."""
    if ctx.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def wrap(objective: nn.Module, ctx: Context) -> nn.Module:
    """DDP or FSDP2 around the objective, a module whose forward(x0, t, noise, valid, labels) is one step's
    (2, B) losses (objectives/base.py); under FSDP2 each transformer block is its own unit."""
    if not ctx.distributed:
        return objective
    if ctx.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(objective, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    import warnings

    from torch.distributed.fsdp import fully_shard

    # The network's output is consumed out of place (SUBS slices and log-softmaxes it), so FSDP2's
    # warning about returned views does not apply.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view")
    for block in getattr(objective.network, "blocks", []):
        fully_shard(block)
    fully_shard(objective.network)
    fully_shard(objective)
    return objective


def full(t: Tensor) -> Tensor:
    """The whole tensor of a (possibly sharded) parameter or state; a collective under FSDP2."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def local(t: Tensor) -> Tensor:
    """This rank's shard as a plain tensor (the tensor itself when not sharded)."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def like(value: Tensor, param: Tensor) -> Tensor:
    """A full tensor placed and sharded as ``param`` is (a DTensor under FSDP2)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    value = value.to(param.device if not isinstance(param, DTensor) else param.to_local().device)
    if isinstance(param, DTensor):
        return distribute_tensor(value, param.device_mesh, param.placements)
    return value


def like_local(shard: Tensor, param: Tensor) -> Tensor:
    """A local shard (the EMA) as a tensor placed like ``param`` (a DTensor under FSDP2)."""
    from torch.distributed.tensor import DTensor

    if isinstance(param, DTensor):
        return DTensor.from_local(shard, param.device_mesh, param.placements, shape=param.shape, stride=param.stride())
    return shard


def shard_like(value: Tensor, param: Tensor) -> Tensor:
    """This rank's shard of a full tensor, for state kept as plain local tensors (the EMA)."""
    return local(like(value, param))


def sum_all(value: float, ctx: Context) -> float:
    if not ctx.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t)


def broadcast_object(obj: Any, ctx: Context) -> Any:
    """Rank 0's ``obj`` (anything picklable among trusted processes) on every rank."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def spread(items: List[str], fn: Callable[[str], Any], ctx: Context) -> Dict[str, Any]:
    """``{item: fn(item)}`` for every item, the work split over the ranks (rank r takes the r-th of ``world``
    consecutive blocks: its own files, for a sorted list of files named by rank), the results gathered on every
    rank. ``items``: the same list on every rank."""
    block = -(-len(items) // ctx.world)
    mine = {item: fn(item) for item in items[ctx.rank * block : (ctx.rank + 1) * block]}
    if not ctx.distributed:
        return mine
    import torch.distributed as dist

    parts: List[Any] = [None] * ctx.world
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def no_sync(model: nn.Module, ctx: Context, last: bool):
    """Skip the gradient exchange on all but the last micro-batch of a step."""
    from contextlib import nullcontext

    if ctx.mode == "ddp" and not last:
        return model.no_sync()
    if ctx.mode == "fsdp":
        model.set_requires_gradient_sync(last)
    return nullcontext()


def check_batch(batch: int, micro: int, ctx: Context) -> int:
    """This rank's share of the global batch, with a clear error when it does not divide."""
    if batch % ctx.world:
        raise MaskdiffError(f"batch size {batch} does not split over {ctx.world} processes; use a multiple of {ctx.world}")
    per_rank = batch // ctx.world
    if micro and per_rank % micro:
        raise MaskdiffError(f"each of {ctx.world} processes gets {per_rank} sequences, not a multiple of micro batch size {micro}")
    return per_rank
