"""A plain PyTorch training loop: AdamW, warm-up + cosine/constant LR, clipping, EMA, accumulation,
atomic safetensors checkpoints, exact resume, a progress bar and a JSONL log.

Everything random at step k (the data windows or rows, the stratified t, the mask uniforms) is drawn from a
generator seeded by (seed, k) for the whole global batch, so resuming at step k replays exactly what
an uninterrupted run would have done, and micro-batching does not change what a step computes.

On a GPU (docs/performance.md, "GPU"): TF32 matrix products, fused AdamW, ``train.precision`` 'bf16'
(autocast around the forward pass and the loss, float32 master weights), ``train.compile`` (the
transformer blocks through torch.compile), and the next step's batch drawn on the CPU and copied from
pinned memory while the GPU still works on the current one. These draws stay on CPU generators, so the
data, t and masks of a step are the same on every device.
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch import Tensor

from maskdiff.checkpoint import (
    latest_valid_checkpoint,
)
from maskdiff.completion import complete_backbone
from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.distributed import (
    Context,
    barrier,
    check_batch,
    full,
    local,
    no_sync,
    sum_all,
    wrap,
)
from maskdiff.distributed import init as dist_init
from maskdiff.distributed import shutdown as dist_shutdown
from maskdiff.modalities import build_tokenizer, training_source
from maskdiff.monitor import Monitor
from maskdiff.objectives import build_objective
from maskdiff.runs import start_run
from maskdiff.step import (StepBatch, autocast, draw_step, learning_rate, make_optimizer, prepare_blocks, set_fast_matmul, training_times,
                           uses_row_uniforms)
from maskdiff.train_state import load_start, restore_state, save_state
from maskdiff.validation import validate_config


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    resumed_from: Optional[int]
    interrupted: bool
    seconds: float
    last_loss: Optional[float]


class _Stop:
    """Ctrl-C (SIGINT) and SIGTERM ask the loop to stop after the current step and save a checkpoint;
    a second Ctrl-C stops at once, leaving the previous checkpoints as they are."""

    def __init__(self, log):
        self.requested = False
        self.log = log

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.log("\nstopping after this step and saving a checkpoint (Ctrl-C again to quit without saving)")

    @contextmanager
    def installed(self):
        old = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not in the main thread: leave signals alone
            pass
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def train(
    config: RunConfig,
    run_dir,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: Optional[int] = None,
) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` up to ``config.train.steps`` steps.

    Under ``torchrun`` with several processes this is data-parallel training (DDP or FSDP2, see
    distributed.py); the same command resumes with any number of processes.
    stop_after: stop (with a checkpoint) once this step is reached, as if interrupted; for tests and
    for splitting a run across sessions.
    This is where a config enters training, from the CLI or from Python: it is completed
    (:func:`~maskdiff.completion.complete_backbone`) and checked (:func:`~maskdiff.validation.validate_config`)
    here, once, and callers need not check it before.
    """
    complete_backbone(config)  # a Hugging Face backbone named by model.pretrained: its config and tokenizer
    validate_config(config, run_dir)
    run_dir = Path(run_dir)
    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    ctx = dist_init(tc.parallel, tc.device)
    try:
        result = _train(config, run_dir, ctx, progress=progress and ctx.main, log=log if ctx.main else (lambda *a: None),
                        stop_after=stop_after)
    except BaseException:
        dist_shutdown(ctx)
        raise
    dist_shutdown(ctx, wait=True)
    return result


@dataclass
class _Run:
    """What the steps of one training run share, built by :func:`_start_run`."""

    config: RunConfig
    """The run's configuration."""
    run_dir: Path
    """Where its configuration, checkpoints and log are."""
    ctx: Context
    """This process among the processes: rank, world size, device."""
    source: object
    """The training data: ``draw(B, gen) -> (x0 (B, L), valid or None, labels (B,) or None)``."""
    objective: torch.nn.Module
    """What is trained (maskdiff.objectives)."""
    model: torch.nn.Module
    """The objective's training step, wrapped for DDP or FSDP2 (itself on one process)."""
    names: List[str]
    """The objective's parameter names, in the order of ``params``."""
    params: List[Tensor]
    """Its parameters after wrapping (DTensor shards under FSDP2)."""
    optimizer: torch.optim.Optimizer
    """AdamW over ``params``."""
    ema: Optional[List[Tensor]]
    """The exponential moving average of ``params`` (local shards), or None without train.ema_decay."""
    per_rank: int
    """Rows of the global batch that this process computes."""
    start: int
    """The step the run starts from: its checkpoint's, else 0."""
    resumed_from: Optional[int]
    """The step of the checkpoint it resumed from, or None for a fresh start."""
    skipped: int = 0
    """Steps skipped for a non-finite loss or gradient, in all."""
    bad_in_row: int = 0
    """Steps skipped in a row up to now."""


def _train(config: RunConfig, run_dir: Path, ctx: Context, *, progress, log, stop_after) -> TrainResult:
    tc = config.train
    run = _start_run(config, run_dir, ctx, log)
    stopper = _Stop(log)
    interrupted = False
    step = run.start
    last_loss = None
    t_begin = time.perf_counter()
    if run.start >= tc.steps:
        return TrainResult(run_dir, run.start, run.resumed_from, False, 0.0, None)

    run.objective.train()
    dev = ctx.device

    def draw(at: int) -> StepBatch:
        return draw_step(run.source, tc.seed, at, tc.batch_size, config.data.length, run.objective.noise_draws,
                         uses_row_uniforms(config.diffusion), dev)

    nxt: Optional[StepBatch] = None
    try:
        # the log, TensorBoard, W&B, the progress bar, evaluation and samples (maskdiff.monitor)
        with stopper.installed(), Monitor(run, progress=progress) as monitor:
            while step < tc.steps:
                batch, nxt = (nxt if nxt is not None else draw(step)), None
                lr = learning_rate(step, tc)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
                run.optimizer.zero_grad(set_to_none=True)
                logged = _forward_backward(run, batch)
                if dev.type != "cpu" and step + 1 < tc.steps:
                    nxt = draw(step + 1)  # the CPU prepares the next batch while the GPU works on this one
                loss_sum = 0.0  # the NELBO estimate, nats per token (not GenMD4's surrogate)
                for o in logged:
                    loss_sum += float(o.sum()) / batch.n_tokens
                loss_sum = sum_all(loss_sum, ctx)
                grad_norm = _clip_and_update(run, step, loss_sum, log)
                step += 1
                last_loss = loss_sum
                monitor.step_done(step, loss_sum, lr, grad_norm, run.skipped)
                if step % tc.checkpoint_every == 0 and step < tc.steps:
                    _save_checkpoint(run, step)
                stop_now = stopper.requested or (stop_after is not None and step >= stop_after)
                if ctx.distributed:  # a signal may reach one rank only: stop together
                    stop_now = sum_all(float(stop_now), ctx) > 0
                if stop_now:
                    interrupted = True
                    break
    except KeyboardInterrupt:
        log(f"\nstopped without saving; the newest checkpoint in {run_dir} is intact")
        raise
    _save_checkpoint(run, step)
    if interrupted:
        log(f"saved step {step} to {run_dir}; run the same command again to resume")
    return TrainResult(run_dir, step, run.resumed_from, interrupted, time.perf_counter() - t_begin, last_loss)


def _start_run(config: RunConfig, run_dir: Path, ctx: Context, log) -> _Run:
    """Everything before the first step: the run directory, the data, the objective with the weights it
    starts from, placed, compiled and wrapped, then the optimizer and the EMA (restored on a resume)."""
    tc = config.train
    tokenizer = build_tokenizer(config)
    # the data first: a missing, empty or too short corpus is refused before the run folder is written
    source = training_source(config, tokenizer)  # draw(B, gen) -> (x0 (B, L), labels (B,) or None)
    if ctx.main:
        start_run(run_dir, config, tokenizer)
    barrier(ctx)
    per_rank = check_batch(tc.batch_size, tc.micro_batch_size, ctx)

    torch.manual_seed(tc.seed)
    objective = build_objective(config, tokenizer.vocab_size)
    objective.set_check_inputs(False)  # the training stream was checked when it was encoded
    names = [objective.checkpoint_name(n) for n, _ in objective.named_parameters()]
    start = load_start(objective, config, run_dir, ctx, log)
    objective.to(ctx.device)
    set_fast_matmul(ctx.device)
    prepare_blocks(objective.network, tc, ctx.device)  # activation checkpointing, torch.compile
    model = wrap(objective, ctx)
    params = [p for _, p in objective.named_parameters()]  # after wrapping: DTensor shards under FSDP2
    optimizer = make_optimizer(objective, tc)
    ema = restore_state(start, objective, names, params, optimizer, tc.ema_decay)  # the checkpoint's state
    return _Run(config, run_dir, ctx, source, objective, model, names, params, optimizer, ema, per_rank,
                start.step or 0, start.step)


def _forward_backward(run: _Run, batch: StepBatch) -> List[Tensor]:
    """This process's rows of the global batch, forward and backward one micro-batch at a time (gradients
    synchronised across processes on the last); returns each micro-batch's NELBO terms, still on the device."""
    tc, d, ctx, dev = run.config.train, run.config.diffusion, run.ctx, run.ctx.device
    B = tc.batch_size
    micro = tc.micro_batch_size or run.per_rank
    first = ctx.rank * run.per_rank  # this process's slice of the global batch
    logged: List[Tensor] = []
    for lo in range(first, first + run.per_rank, micro):
        sl = slice(lo, lo + micro)
        t = training_times(batch, d, lo, micro, B)
        with no_sync(run.model, ctx, last=lo + micro >= first + run.per_rank):
            lab = None if batch.labels is None else batch.labels[sl]
            v = None if batch.valid is None else batch.valid[sl]
            c = {} if batch.cond is None else {"cond": batch.cond[sl]}  # the prompt of conditional training
            with autocast(tc.precision, dev):
                out = run.model(batch.x0[sl], t.to(dev), batch.noise[:, sl], v, lab, **c)  # (2, micro)
            # nats per real token over the global batch; x world size: DDP/FSDP average over ranks
            loss = out[0].float().sum() * (ctx.world / batch.n_tokens)
            loss.backward()
        logged.append(out[1].detach())
    return logged


def _clip_and_update(run: _Run, step: int, loss_sum: float, log) -> float:
    """Clip the gradient, then step the optimizer and the EMA; returns the gradient norm before clipping.
    A non-finite loss or gradient skips the step (weights, optimizer state and EMA stay as they were), and
    train.max_bad_steps of them in a row stop the run with an error."""
    tc = run.config.train
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, tc.grad_clip if tc.grad_clip else float("inf"))
    grad_norm = float(full(grad_norm)) if isinstance(grad_norm, Tensor) else float(grad_norm)
    if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
        run.optimizer.zero_grad(set_to_none=True)
        run.bad_in_row += 1
        run.skipped += 1
        log(f"\nstep {step + 1}: non-finite {'loss' if not math.isfinite(loss_sum) else 'gradient'}; step skipped "
            f"({run.bad_in_row} in a row, {run.skipped} in all)")
        if run.bad_in_row >= tc.max_bad_steps:
            newest = latest_valid_checkpoint(run.run_dir)
            where = f"the newest checkpoint, {newest[0]}, is intact" if newest else "no checkpoint was written yet"
            raise MaskdiffError(f"{run.bad_in_row} steps in a row had a non-finite loss or gradient (steps "
                                f"{step + 2 - run.bad_in_row}-{step + 1}); stopping: {where}. Lower the learning rate "
                                "or check the data, then run the same command again to resume")
    else:
        run.bad_in_row = 0
        run.optimizer.step()
        if run.ema is not None:
            decay = min(tc.ema_decay, (1 + step) / (10 + step)) if tc.ema_warmup else tc.ema_decay
            with torch.no_grad():
                torch._foreach_lerp_(run.ema, [local(p).detach() for p in run.params], 1.0 - decay)
    return grad_norm


def _save_checkpoint(run: _Run, at: int) -> None:
    """Checkpoint step ``at`` (maskdiff.train_state: whole, or sharded under FSDP2); every rank calls it."""
    tc = run.config.train
    state = {
        "data_position": {"kind": getattr(run.source, "describe", lambda: "draw(seed, step)")(), "next_step": at,
                          "tokens_seen": at * tc.batch_size * run.config.data.length},
        "skipped_steps": run.skipped,
        "config": run.config.to_dict(),
    }
    save_state(run.run_dir, at, objective=run.objective, names=run.names, params=run.params, ema=run.ema,
               optimizer=run.optimizer, ctx=run.ctx, state=state, keep=tc.keep_checkpoints)
