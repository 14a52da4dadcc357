"""A training run's state in its checkpoints: the weights, their EMA, the optimizer state and the RNG,
saved at a step and restored when the run resumes.

Two formats (maskdiff.checkpoint): one process and DDP save whole tensors, written by rank 0 (under DDP
every rank holds them whole already); FSDP2 on several processes saves sharded, every rank writing its
own pieces through ``torch.distributed.checkpoint`` (maskdiff.sharded), so no rank ever holds the whole
state. A run resumes from either format with any number of processes and either mode: a whole
checkpoint is loaded before the model is wrapped and then split as its parameters are; a sharded one is
read after wrapping, each rank reading the pieces its parameters hold (DCP reshards).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from maskdiff.checkpoint import (
    MODEL_FILE,
    OPTIM_FILE,
    is_sharded,
    latest_valid_checkpoint,
    load_optimizer,
    optimizer_tensors,
    prefixed_weights,
    read_tensors,
    save_checkpoint,
    save_sharded_checkpoint,
)
from maskdiff.config import RunConfig
from maskdiff.distributed import Context, barrier, broadcast_object, full, like, like_local, local, shard_like
from maskdiff.errors import MaskdiffError
from maskdiff.sharded import check_fits, read_into, require_support
from maskdiff.warm_start import initialise


@dataclass
class Start:
    """Where a run starts from: its newest valid checkpoint, or nothing (a fresh start)."""

    step: Optional[int] = None
    """The checkpoint's step, or None for a fresh start."""
    path: Optional[Path] = None
    """The checkpoint's folder."""
    state: Optional[dict] = None
    """Its verified state.json."""
    tensors: Optional[Dict[str, Tensor]] = None
    """A whole checkpoint's ``model.*`` and ``ema.*`` tensors (None for a sharded one: read after wrapping)."""
    optimizer: Optional[Dict[str, Tensor]] = None
    """A whole checkpoint's optimizer tensors and RNG state."""


def load_start(objective, config: RunConfig, run_dir: Path, ctx: Context, log) -> Start:
    """The weights the run starts from: the newest valid checkpoint's (whole ones loaded into ``objective`` now,
    before any sharding; sharded ones by :func:`restore_state`), else a pretrained network's where model.pretrained
    names one, else the fresh ones. Rank 0 verifies the checkpoints (reading every file) and tells the others."""
    if ctx.distributed and ctx.mode == "fsdp":
        require_support()  # before any step: the first checkpoint could not be written
    found = broadcast_object(latest_valid_checkpoint(run_dir, warn=log) if ctx.main else None, ctx)
    if found is None:
        initialise(objective, config, log if ctx.main else None)  # model.init_from or model.pretrained; the same on every rank
        return Start()
    path, state = found
    if is_sharded(state):
        return Start(int(state["step"]), path, state)
    tensors = read_tensors(path / MODEL_FILE)
    objective.load_weights(prefixed_weights(tensors, "model", path), path)  # full weights, before any sharding
    return Start(int(state["step"]), path, state, tensors, read_tensors(path / OPTIM_FILE))


def restore_state(start: Start, objective, names: List[str], params: List[Tensor], optimizer: torch.optim.Optimizer,
                  ema_decay: float) -> Optional[List[Tensor]]:
    """After wrapping: the EMA (local shards; a copy of the weights on a fresh start, or None without an EMA),
    with the checkpoint's optimizer state and global RNG state put back on a resume."""
    ema = [local(p).detach().clone() for p in params] if ema_decay else None
    if start.path is None:
        return ema
    if is_sharded(start.state):
        return _restore_sharded(start, objective, names, params, optimizer, ema is not None)
    if ema is not None:
        ema = [shard_like(start.tensors[f"ema.{n}"], p) for n, p in zip(names, params)]
    _restore_optimizer(optimizer, params, start.optimizer, start.state["optimizer"])
    return ema


def _restore_optimizer(optimizer, params: List[Tensor], opt_t: Dict[str, Tensor], meta) -> None:
    """A whole checkpoint's optimizer state, each tensor placed back as its parameter is, and the global
    random state."""
    load_optimizer(optimizer, opt_t, meta)
    for p in params:
        for key, value in optimizer.state[p].items():
            if isinstance(value, Tensor) and value.shape == p.shape and value.dim() > 0:
                optimizer.state[p][key] = like(value, p)
    if "rng.torch" in opt_t:
        torch.set_rng_state(opt_t["rng.torch"])


def _restore_sharded(start: Start, objective, names, params, optimizer, with_ema: bool) -> Optional[List[Tensor]]:
    """A sharded checkpoint read into tensors placed as the parameters are (each rank reads its pieces)."""
    path, state = start.path, start.state
    saved = state["tensors"]
    model_t = {f"model.{k}": v.detach() for k, v in objective.state_dict().items()}
    ema_t = {f"ema.{n}": torch.zeros_like(p.detach()) for n, p in zip(names, params)} if with_ema else {}
    check_fits(path, saved, {**model_t, **ema_t}, ["model"] + (["ema"] if with_ema else []))
    opt_t = _optimizer_targets(path, saved, optimizer)
    read_into(path, {**model_t, **ema_t, **opt_t})
    objective.load_state_dict({k[len("model."):]: v for k, v in model_t.items()})
    load_optimizer(optimizer, opt_t, state["optimizer"])
    if "rng.torch" in opt_t:
        torch.set_rng_state(opt_t["rng.torch"])
    return [local(ema_t[f"ema.{n}"]) for n in names] if with_ema else None


def _optimizer_targets(path: Path, saved: Dict[str, dict], optimizer) -> Dict[str, Tensor]:
    """Empty tensors for the optimizer state a sharded checkpoint holds: placed like their parameter where they
    have its shape (AdamW's moments), else whole on the CPU (the step counts, the RNG state)."""
    ordered = [p for group in optimizer.param_groups for p in group["params"]]
    out: Dict[str, Tensor] = {}
    for name, info in saved.items():
        if name == "rng.torch":
            out[name] = torch.empty(info["shape"], dtype=torch.uint8)
        if not name.startswith("state."):
            continue
        index = int(name.split(".")[1])
        if index >= len(ordered):
            raise MaskdiffError(f"checkpoint {path} does not fit this run (optimizer state for {index + 1} or more parameters, "
                                f"this model has {len(ordered)})")
        p = ordered[index]
        if info["shape"] == list(p.shape) and p.dim() > 0:
            out[name] = torch.zeros_like(p.detach())
        else:
            out[name] = torch.empty(info["shape"], dtype=getattr(torch, info["dtype"]))
    return out


def save_state(run_dir: Path, at: int, *, objective, names: List[str], params: List[Tensor], ema: Optional[List[Tensor]],
               optimizer: torch.optim.Optimizer, ctx: Context, state: dict, keep: int) -> None:
    """Checkpoint step ``at`` (a collective: every rank calls it). ``state``: what state.json records besides the
    tensors (the data position, the configuration); the optimizer's hyper-parameters and the number of
    processes are added here. FSDP2 on several processes writes a sharded checkpoint, the others a whole one."""
    if ctx.distributed and ctx.mode == "fsdp":
        _save_sharded(run_dir, at, objective, names, params, ema, optimizer, ctx, state, keep)
    else:
        _save_whole(run_dir, at, objective, names, params, ema, optimizer, ctx, state, keep)
    barrier(ctx)


def _save_whole(run_dir, at, objective, names, params, ema, optimizer, ctx: Context, state: dict, keep: int) -> None:
    """Rank 0 writes the whole tensors (under DDP and on one process every rank holds them whole)."""
    model_t: Dict[str, Tensor] = {f"model.{n}": full(v).detach().cpu() for n, v in objective.state_dict().items()}
    if ema is not None:
        model_t.update({f"ema.{n}": full(like_local(e, p)).cpu() for n, e, p in zip(names, ema, params)})
    opt_t, opt_meta = optimizer_tensors(optimizer, convert=lambda v: full(v).cpu())
    opt_t["rng.torch"] = torch.get_rng_state()
    if ctx.main:
        save_checkpoint(run_dir, at, model_t, opt_t, dict(state, optimizer=opt_meta, processes=ctx.world), keep=keep)


def _save_sharded(run_dir, at, objective, names, params, ema, optimizer, ctx: Context, state: dict, keep: int) -> None:
    """Every rank writes the pieces it holds (maskdiff.checkpoint.save_sharded_checkpoint)."""
    tensors: Dict[str, Tensor] = {f"model.{n}": v.detach() for n, v in objective.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{n}": like_local(e, p) for n, e, p in zip(names, ema, params)})
    opt_t, opt_meta = optimizer_tensors(optimizer)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    save_sharded_checkpoint(run_dir, at, tensors, dict(state, optimizer=opt_meta, processes=ctx.world), ctx, keep=keep)
