"""A plain PyTorch training loop: AdamW, warm-up + cosine/constant LR, clipping, EMA, accumulation,
atomic safetensors checkpoints, exact resume, a progress bar and a JSONL log.

Everything random at step k (the data windows or rows, the stratified t, the mask uniforms) is drawn from a
generator seeded by (seed, k) for the whole global batch, so resuming at step k replays exactly what
an uninterrupted run would have done, and micro-batching does not change what a step computes.
"""
from __future__ import annotations

import json
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from maskdiff.checkpoint import (
    atomic_write_text,
    latest_valid_checkpoint,
    load_optimizer,
    optimizer_tensors,
    read_tensors,
    save_checkpoint,
)
from maskdiff.config import RunConfig, differences
from maskdiff.errors import MaskdiffError
from maskdiff.loss import continuous_diffusion_term, discrete_diffusion_term, discrete_step, low_discrepancy_times
from maskdiff.pipeline import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    build_denoiser,
    build_schedule,
    build_tokenizer,
    load_weights,
    read_run_config,
    training_source,
)


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


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


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


def prepare_run_dir(config: RunConfig, run_dir: Path, tokenizer) -> RunConfig:
    """Create the run directory, or check that an existing one was made with the same configuration.

    Only train.steps may differ (to extend a run); anything else is an error naming the fields.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / CONFIG_FILE
    if cfg_path.exists():
        old = read_run_config(run_dir)
        diff = differences(old, config)
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, b_a in list(diff.items())[:4] for a, b in [b_a])
            raise MaskdiffError(f"{run_dir} holds a run with a different configuration ({shown}); use another --run-dir")
    atomic_write_text(cfg_path, json.dumps(config.to_dict(), indent=1))
    atomic_write_text(run_dir / TOKENIZER_FILE, json.dumps(tokenizer.config(), indent=1))
    return config


def train(
    config: RunConfig,
    run_dir,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: Optional[int] = None,
) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` up to ``config.train.steps`` steps.

    stop_after: stop (with a checkpoint) once this step is reached, as if interrupted; for tests and
    for splitting a run across sessions.
    """
    config.validate()
    run_dir = Path(run_dir)
    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    tokenizer = build_tokenizer(config)
    prepare_run_dir(config, run_dir, tokenizer)
    source = training_source(config, tokenizer)  # draw(batch, generator) -> (x0, valid or None)
    L = config.data.length
    masked_only = config.model.masked_logits

    torch.manual_seed(tc.seed)
    denoiser = build_denoiser(config, tokenizer.vocab_size)
    denoiser.check_inputs = False  # the training stream was checked when it was encoded
    model = denoiser.network
    schedule = build_schedule(config)
    optimizer = make_optimizer(model, tc)
    ema: Optional[List[Tensor]] = [p.detach().clone() for p in model.parameters()] if tc.ema_decay else None

    start, resumed_from = 0, None
    found = latest_valid_checkpoint(run_dir, warn=log)
    if found is not None:
        path, state = found
        tensors = read_tensors(path / "model.safetensors")
        load_weights(denoiser, tensors, "model", path)
        if ema is not None:
            for p_ema, (name, _) in zip(ema, model.named_parameters()):
                p_ema.copy_(tensors[f"ema.{name}"])
        opt = read_tensors(path / "optimizer.safetensors")
        load_optimizer(optimizer, opt, state["optimizer"])
        if "rng.torch" in opt:
            torch.set_rng_state(opt["rng.torch"])
        start = resumed_from = int(state["step"])

    micro = tc.micro_batch_size or tc.batch_size
    B = tc.batch_size
    tokens_per_step = B * L
    log_path = run_dir / "log.jsonl"
    stopper = _Stop(log)
    interrupted = False
    step = start
    last_loss = None
    t_begin = time.perf_counter()

    def checkpoint(at: int) -> None:
        model_t: Dict[str, Tensor] = {f"model.{n}": p for n, p in model.state_dict().items()}
        if ema is not None:
            model_t.update({f"ema.{n}": e for (n, _), e in zip(model.named_parameters(), ema)})
        opt_t, opt_meta = optimizer_tensors(optimizer)
        opt_t["rng.torch"] = torch.get_rng_state()
        state = {
            "optimizer": opt_meta,
            "data_position": {"kind": source.describe(), "next_step": at, "tokens_seen": at * tokens_per_step},
            "config": config.to_dict(),
        }
        save_checkpoint(run_dir, at, model_t, opt_t, state, keep=tc.keep_checkpoints)

    if start >= tc.steps:
        return TrainResult(run_dir, start, resumed_from, False, 0.0, None)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=start, desc="train", unit="step", dynamic_ncols=True, mininterval=0.5)
    model.train()
    window_start, window_tokens = time.perf_counter(), 0
    try:
        with stopper.installed(), open(log_path, "a", encoding="utf-8") as logf:
            while step < tc.steps:
                gen = step_generator(tc.seed, step)
                x0, valid = source.draw(B, gen)  # (B, L), (B, L) bool or None (no padding)
                n_tokens = tokens_per_step if valid is None else max(1, int(valid.sum()))
                u = float(torch.rand((), generator=gen, dtype=torch.float64))
                if not config.diffusion.low_discrepancy:
                    u_all = torch.rand(B, generator=gen, dtype=torch.float64)
                noise = torch.rand((B, L), generator=gen, dtype=torch.float64)  # mask uniforms, global batch
                lr = learning_rate(step, tc)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for lo in range(0, B, micro):
                    sl = slice(lo, lo + micro)
                    if config.diffusion.low_discrepancy:
                        t = low_discrepancy_times(min(micro, B - lo), u, config.diffusion.t_min, offset=lo, global_batch=B)
                    else:
                        t = (config.diffusion.t_min + (1 - config.diffusion.t_min) * u_all[sl]).float()
                    v = None if valid is None else valid[sl]
                    if config.diffusion.discrete_steps:
                        T = config.diffusion.discrete_steps
                        i = discrete_step(t, T, config.diffusion.t_min)
                        per_seq = discrete_diffusion_term(denoiser, x0[sl], i, T, schedule, noise=noise[sl], valid=v, masked_only=masked_only)
                    else:
                        per_seq = continuous_diffusion_term(
                            denoiser, x0[sl], t, schedule, t_min=config.diffusion.t_min, noise=noise[sl], valid=v, masked_only=masked_only
                        )
                    loss = per_seq.sum() / n_tokens  # nats per (real) token over the global batch
                    loss.backward()
                    loss_sum += float(loss.detach())
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip else float("inf"))
                optimizer.step()
                if ema is not None:
                    decay = min(tc.ema_decay, (1 + step) / (10 + step))
                    with torch.no_grad():
                        torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1.0 - decay)
                step += 1
                last_loss = loss_sum
                window_tokens += tokens_per_step
                if step % tc.log_every == 0 or step == tc.steps:
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_start, 1e-9)
                    window_start, window_tokens = now, 0
                    record = {
                        "step": step,
                        "loss_nats_per_token": loss_sum,
                        "loss_bits_per_token": loss_sum / math.log(2),
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens_per_s": tok_s,
                        "elapsed_s": now - t_begin,
                    }
                    logf.write(json.dumps(record) + "\n")
                    logf.flush()
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_sum:.3f}", bits=f"{loss_sum / math.log(2):.3f}", tok_s=f"{tok_s:,.0f}")
                if bar is not None:
                    bar.update(1)
                if step % tc.checkpoint_every == 0 and step < tc.steps:
                    checkpoint(step)
                if stopper.requested or (stop_after is not None and step >= stop_after):
                    interrupted = True
                    break
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        log(f"\nstopped without saving; the newest checkpoint in {run_dir} is intact")
        raise
    if bar is not None:
        bar.close()
    checkpoint(step)
    if interrupted:
        log(f"saved step {step} to {run_dir}; run the same command again to resume")
    return TrainResult(run_dir, step, resumed_from, interrupted, time.perf_counter() - t_begin, last_loss)
