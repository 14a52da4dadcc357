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

import json
import math
import signal
import time
from contextlib import contextmanager, nullcontext
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
from maskdiff.distributed import (
    Context,
    barrier,
    check_batch,
    full,
    like,
    local,
    no_sync,
    shard_like,
    sum_all,
    wrap,
)
from maskdiff.distributed import init as dist_init
from maskdiff.distributed import shutdown as dist_shutdown
from maskdiff.loss import low_discrepancy_times
from maskdiff.objectives import build_objective
from maskdiff.pipeline import CONFIG_FILE, TOKENIZER_FILE, build_tokenizer, load_weights, read_run_config
from maskdiff.modalities import training_source
from maskdiff.validation import complete_backbone, validate_config


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


def draw_step(source, seed: int, step: int, B: int, L: int, noise_draws: int, low_discrepancy: bool, device) -> StepBatch:
    """Draw step ``step``'s batch, t and masks from its generator (in a fixed order) and send them to ``device``."""
    gen = step_generator(seed, step)
    x0, valid, labels = source.draw(B, gen)  # the global batch (B, L); padding mask, class labels or None
    n_tokens = B * L if valid is None else max(1, int(valid.sum()))  # real tokens
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    u_all = None if low_discrepancy else torch.rand(B, generator=gen, dtype=torch.float64)
    # mask uniforms for the global batch (GenMD4 draws several x_t per sequence)
    noise = torch.rand((noise_draws, B, L), generator=gen, dtype=torch.float64)
    move = (lambda v: v) if device.type == "cpu" else (lambda v: None if v is None else v.pin_memory().to(device, non_blocking=True))
    return StepBatch(move(x0), move(valid), move(labels), n_tokens, u, u_all, move(noise))


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

    Under ``torchrun`` with several processes this is data-parallel training (DDP or FSDP2, see
    distributed.py); the same command resumes with any number of processes.
    stop_after: stop (with a checkpoint) once this step is reached, as if interrupted; for tests and
    for splitting a run across sessions.
    """
    complete_backbone(config)  # a Hugging Face backbone named by model.pretrained: its config and tokenizer
    validate_config(config)
    run_dir = Path(run_dir)
    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    ctx = dist_init(tc.parallel, tc.device)
    try:
        return _train(config, run_dir, ctx, progress=progress and ctx.main, log=log if ctx.main else (lambda *a: None),
                      stop_after=stop_after)
    finally:
        dist_shutdown(ctx)


def _train(config: RunConfig, run_dir: Path, ctx: Context, *, progress, log, stop_after) -> TrainResult:
    tc = config.train
    tokenizer = build_tokenizer(config)
    if ctx.main:
        prepare_run_dir(config, run_dir, tokenizer)
    barrier(ctx)
    source = training_source(config, tokenizer)  # draw(B, gen) -> (x0 (B, L), labels (B,) or None)
    L = config.data.length
    B = tc.batch_size
    per_rank = check_batch(B, tc.micro_batch_size, ctx)
    micro = tc.micro_batch_size or per_rank
    first = ctx.rank * per_rank  # this process's slice of the global batch

    torch.manual_seed(tc.seed)
    objective = build_objective(config, tokenizer.vocab_size)
    objective.set_check_inputs(False)  # the training stream was checked when it was encoded
    names = [objective.checkpoint_name(n) for n, _ in objective.named_parameters()]

    start, resumed_from, found = 0, None, latest_valid_checkpoint(run_dir, warn=log)
    tensors = opt_saved = None
    if found is not None:
        path, state = found
        tensors = read_tensors(path / "model.safetensors")
        load_weights(objective, tensors, "model", path)  # full weights, before any sharding
        opt_saved = (read_tensors(path / "optimizer.safetensors"), state["optimizer"])
        start = resumed_from = int(state["step"])
    elif config.model.pretrained:
        objective.init_from_pretrained(log=log if ctx.main else None)  # the same weights on every rank
    objective.to(ctx.device)
    set_fast_matmul(ctx.device)
    if use_compile(tc.compile, ctx.device):
        compile_blocks(objective.network)
    model = wrap(objective, ctx)
    params = [p for _, p in objective.named_parameters()]  # after wrapping: DTensor shards under FSDP2
    optimizer = make_optimizer(objective, tc)
    ema: Optional[List[Tensor]] = None
    if tc.ema_decay:
        ema = [local(p).detach().clone() for p in params]
        if tensors is not None:
            ema = [shard_like(tensors[f"ema.{n}"], p) for n, p in zip(names, params)]
    if opt_saved is not None:
        opt_t, meta = opt_saved
        load_optimizer(optimizer, opt_t, meta)
        for p in params:  # optimizer state saved whole, placed back as each parameter is
            for key, value in optimizer.state[p].items():
                if isinstance(value, Tensor) and value.shape == p.shape and value.dim() > 0:
                    optimizer.state[p][key] = like(value, p)
        if "rng.torch" in opt_t:
            torch.set_rng_state(opt_t["rng.torch"])

    tokens_per_step = B * L
    log_path = run_dir / "log.jsonl"
    stopper = _Stop(log)
    interrupted = False
    step = start
    last_loss = None
    bad_in_row, skipped = 0, 0
    t_begin = time.perf_counter()

    def checkpoint(at: int) -> None:
        # every rank gathers (a collective under FSDP2); rank 0 writes
        model_t: Dict[str, Tensor] = {f"model.{n}": full(v).detach().cpu() for n, v in objective.state_dict().items()}
        if ema is not None:
            model_t.update({f"ema.{n}": full(like_local(e, p)).cpu() for n, e, p in zip(names, ema, params)})
        opt_t, opt_meta = optimizer_tensors(optimizer, convert=lambda v: full(v).cpu())
        opt_t["rng.torch"] = torch.get_rng_state()
        if ctx.main:
            state = {
                "optimizer": opt_meta,
                "data_position": {"kind": getattr(source, "describe", lambda: "draw(seed, step)")(), "next_step": at, "tokens_seen": at * tokens_per_step},
                "skipped_steps": skipped,
                "processes": ctx.world,
                "config": config.to_dict(),
            }
            save_checkpoint(run_dir, at, model_t, opt_t, state, keep=tc.keep_checkpoints)
        barrier(ctx)

    if start >= tc.steps:
        return TrainResult(run_dir, start, resumed_from, False, 0.0, None)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=start, desc="train", unit="step", dynamic_ncols=True, mininterval=0.5)
    objective.train()
    window_start, window_tokens = time.perf_counter(), 0
    dev = ctx.device

    def draw(at: int) -> StepBatch:
        return draw_step(source, tc.seed, at, B, L, objective.noise_draws, config.diffusion.low_discrepancy, dev)

    nxt: Optional[StepBatch] = None
    try:
        with stopper.installed(), _open_log(log_path, ctx) as logf:
            while step < tc.steps:
                batch, nxt = (nxt if nxt is not None else draw(step)), None
                x0, valid, labels, noise = batch.x0, batch.valid, batch.labels, batch.noise
                n_tokens, u, u_all = batch.n_tokens, batch.u, batch.u_all
                lr = learning_rate(step, tc)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0  # the NELBO estimate, nats per token (not GenMD4's surrogate)
                logged: List[Tensor] = []
                for lo in range(first, first + per_rank, micro):
                    sl = slice(lo, lo + micro)
                    if config.diffusion.low_discrepancy:
                        t = low_discrepancy_times(micro, u, config.diffusion.t_min, offset=lo, global_batch=B)
                    else:
                        t = (config.diffusion.t_min + (1 - config.diffusion.t_min) * u_all[sl]).float()
                    with no_sync(model, ctx, last=lo + micro >= first + per_rank):
                        lab = None if labels is None else labels[sl]
                        v = None if valid is None else valid[sl]
                        with autocast(tc.precision, dev):
                            out = model(x0[sl], t.to(dev), noise[:, sl], v, lab)  # (2, micro)
                        # nats per real token over the global batch; x world size: DDP/FSDP average over ranks
                        loss = out[0].float().sum() * (ctx.world / n_tokens)
                        loss.backward()
                    logged.append(out[1].detach())
                if dev.type != "cpu" and step + 1 < tc.steps:
                    nxt = draw(step + 1)  # the CPU prepares the next batch while the GPU works on this one
                for o in logged:
                    loss_sum += float(o.sum()) / n_tokens
                loss_sum = sum_all(loss_sum, ctx)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip else float("inf"))
                grad_norm = float(full(grad_norm)) if isinstance(grad_norm, Tensor) else float(grad_norm)
                if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
                    # numerical guard: leave weights, optimizer state and EMA as they were
                    optimizer.zero_grad(set_to_none=True)
                    bad_in_row += 1
                    skipped += 1
                    log(f"\nstep {step + 1}: non-finite {'loss' if not math.isfinite(loss_sum) else 'gradient'}; step skipped "
                        f"({bad_in_row} in a row, {skipped} in all)")
                    if bad_in_row >= tc.max_bad_steps:
                        newest = latest_valid_checkpoint(run_dir)
                        where = f"the newest checkpoint, {newest[0]}, is intact" if newest else "no checkpoint was written yet"
                        raise MaskdiffError(f"{bad_in_row} steps in a row had a non-finite loss or gradient (steps "
                                            f"{step + 2 - bad_in_row}-{step + 1}); stopping: {where}. Lower the learning rate "
                                            "or check the data, then run the same command again to resume")
                else:
                    bad_in_row = 0
                    optimizer.step()
                    if ema is not None:
                        decay = min(tc.ema_decay, (1 + step) / (10 + step))
                        with torch.no_grad():
                            torch._foreach_lerp_(ema, [local(p).detach() for p in params], 1.0 - decay)
                step += 1
                last_loss = loss_sum
                window_tokens += tokens_per_step
                if logf is not None and (step % tc.log_every == 0 or step == tc.steps):
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_start, 1e-9)
                    window_start, window_tokens = now, 0
                    record = {
                        "step": step,
                        "loss_nats_per_token": loss_sum,
                        "loss_bits_per_token": loss_sum / math.log(2),
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "tokens_per_s": tok_s,
                        "elapsed_s": now - t_begin,
                        "skipped_steps": skipped,
                    }
                    logf.write(json.dumps(record) + "\n")
                    logf.flush()
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_sum:.3f}", bits=f"{loss_sum / math.log(2):.3f}", tok_s=f"{tok_s:,.0f}")
                if bar is not None:
                    bar.update(1)
                if step % tc.checkpoint_every == 0 and step < tc.steps:
                    checkpoint(step)
                stop_now = stopper.requested or (stop_after is not None and step >= stop_after)
                if ctx.distributed:  # a signal may reach one rank only: stop together
                    stop_now = sum_all(float(stop_now), ctx) > 0
                if stop_now:
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


def like_local(shard: Tensor, param: Tensor) -> Tensor:
    """A local shard (the EMA) as a tensor placed like ``param`` (a DTensor under FSDP2)."""
    from torch.distributed.tensor import DTensor

    if isinstance(param, DTensor):
        return DTensor.from_local(shard, param.device_mesh, param.placements, shape=param.shape, stride=param.stride())
    return shard


@contextmanager
def _open_log(path: Path, ctx: Context):
    if not ctx.main:
        yield None
        return
    with open(path, "a", encoding="utf-8") as f:
        yield f
