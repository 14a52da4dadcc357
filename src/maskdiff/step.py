"""What one optimizer step of the trainer needs, apart from the loop (train.py): the step's generator and
its batch (data, t and mask uniforms for the whole global batch, drawn on the CPU), the learning rate at a
step, the optimizer, and the device settings (autocast, compiled blocks, fast matrix products)."""
from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from maskdiff.loss import low_discrepancy_times, stratified_times


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``: a function of (seed, step) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def learning_rate(step: int, cfg) -> float:
    """Linear warm-up to cfg.lr, then constant or cosine decay to cfg.min_lr_ratio * cfg.lr."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, cfg) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; ``model`` is anything with named_parameters().
    Fused (one kernel per parameter instead of about ten elementwise passes) when every parameter is a
    plain tensor on the CPU or a GPU; sharded (FSDP) parameters take the default implementation."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    params = decay + rest
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and type(p) is torch.nn.Parameter for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **({"fused": True} if fused else {}))


def use_compile(mode: str, device: torch.device) -> bool:
    """train.compile: 'on', 'off', or 'auto' (on for CUDA only: compiling on the CPU costs more than it gives)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def compile_blocks(network) -> None:
    """torch.compile each transformer block in place (parameter names and checkpoints unchanged). The
    blocks hold nearly all the FLOPs and have no data-dependent shapes; the output layer, which runs at
    the masked positions only, stays eager."""
    for block in getattr(network, "blocks", []):
        block.compile()


def checkpoint_blocks(network) -> None:
    """Activation checkpointing in place (train.activation_checkpointing): a Hugging Face backbone switches on
    its own gradient checkpointing; maskdiff's networks recompute each block in the backward pass."""
    hf = getattr(network, "model", None)
    if hasattr(hf, "gradient_checkpointing_enable"):
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return
    for block in getattr(network, "blocks", []):
        block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def prepare_blocks(network, cfg, device: torch.device) -> None:
    """The transformer blocks as the run's settings want them: checkpointed (``activation_checkpointing``),
    then compiled (``compile``)."""
    if cfg.activation_checkpointing:
        checkpoint_blocks(network)
    if use_compile(cfg.compile, device):
        compile_blocks(network)


def autocast(precision: str, device: torch.device):
    """The context of the forward pass and the loss: bfloat16 autocast for 'bf16', nothing for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def set_fast_matmul(device: torch.device) -> None:
    """On CUDA, float32 matrix products in TF32 (float32 range, 10-bit mantissa), as is usual for training."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


@dataclass
class StepBatch:
    """What step k draws from its generator, for the global batch; ``x0``, ``valid``, ``labels`` and
    ``noise`` already on the training device (copied from pinned memory on CUDA)."""

    x0: Tensor
    valid: Optional[Tensor]
    labels: Optional[Tensor]
    n_tokens: int
    u: float
    u_all: Optional[Tensor]
    noise: Tensor
    cond: Optional[Tensor] = None
    """(B, L) bool, the prompt of conditional training (never masked or scored), or None."""


def draw_step(source, seed: int, step: int, B: int, L: int, noise_draws: int, per_row: bool, device) -> StepBatch:
    """Draw step ``step``'s batch, t and masks from its generator (in a fixed order) and send them to ``device``;
    ``per_row``: also one time uniform per row (``u_all``, see :func:`uses_row_uniforms`)."""
    gen = step_generator(seed, step)
    x0, valid, labels, *rest = source.draw(B, gen)  # the global batch (B, L); padding mask, class labels or None
    cond = rest[0] if rest else None  # a conditional source (data/pairs.py) adds the prompt positions
    scored = valid if cond is None else (~cond if valid is None else valid & ~cond)
    n_tokens = B * L if scored is None else max(1, int(scored.sum()))  # real tokens outside the prompt
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    u_all = torch.rand(B, generator=gen, dtype=torch.float64) if per_row else None
    # mask uniforms for the global batch (GenMD4 draws several x_t per sequence)
    noise = torch.rand((noise_draws, B, L), generator=gen, dtype=torch.float64)
    move = (lambda v: v) if device.type == "cpu" else (lambda v: None if v is None else v.pin_memory().to(device, non_blocking=True))
    return StepBatch(move(x0), move(valid), move(labels), n_tokens, u, u_all, move(noise), move(cond))


def uses_row_uniforms(d) -> bool:
    """Whether t needs one uniform per row (independent t, or the 'stratified' sampler); ``d``: a DiffusionConfig."""
    return d.time_sampler == "stratified" or not d.low_discrepancy


def training_times(batch: StepBatch, d, lo: int, rows: int, B: int) -> Tensor:
    """t (rows,) float32 for rows lo .. lo + rows - 1 of the global batch of B rows; ``d``: a DiffusionConfig."""
    if d.time_sampler == "stratified":
        return stratified_times(batch.u_all[lo:lo + rows], d.t_min, offset=lo, global_batch=B)
    if d.low_discrepancy:
        return low_discrepancy_times(rows, batch.u, d.t_min, offset=lo, global_batch=B)
    return (d.t_min + (1 - d.t_min) * batch.u_all[lo:lo + rows]).float()
