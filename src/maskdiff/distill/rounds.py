"""The rounds of a distillation (``maskdiff distill``): each round halves the sampling steps. Round r trains
a student to do in one step of a T_r-step grid what its teacher does in two steps of the 2 T_r-step grid
(sdtt.py); the student starts as its teacher (the teacher run's EMA weights, then the previous round's),
and the next round's teacher is this round's student (its EMA weights).

The output folder is an ordinary run folder (config.json and tokenizer.json as the teacher's, checkpoints/
with ``model.*``, ``ema.*`` and the optimizer, log.jsonl) plus ``distill.json`` (maskdiff.runs), whose
``recommended_steps`` is the grid of the newest finished round, the default of ``maskdiff sample``.
Every finished round is also kept as a run folder of its own, ``OUT/rounds/T<steps>/``, so each grid's
student can be sampled and compared, and a resumed distillation reads its teacher back from there.

Step g draws everything (the data rows, the student's step k per row, the masks, the teacher's
intermediate step) from the generator of (seed, g) (maskdiff.step), so a killed distillation resumes
from its newest checkpoint as if it had not stopped.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from maskdiff.checkpoint import latest_valid_checkpoint, load_optimizer, optimizer_tensors, network_weights, prefixed_weights, read_tensors, \
    save_checkpoint
from maskdiff.config import RunConfig
from maskdiff.distill.sdtt import half_steps, sdtt_loss, sdtt_target
from maskdiff.errors import MaskdiffError
from maskdiff.modalities import training_source
from maskdiff.objectives import build_objective
from maskdiff.process import forward_mask
from maskdiff.runs import RunLog, checkpoint_to_load, read_distill_record, read_run_config, read_tokenizer, start_run, \
    write_distill_record
from maskdiff.step import learning_rate, make_optimizer, step_generator

METHODS = ("sdtt",)
"""The distillation methods ``maskdiff distill --method`` takes."""
ROUNDS_DIR = "rounds"


@dataclass
class DistillSettings:
    """How a teacher is distilled; recorded in the student's distill.json."""

    method: str = "sdtt"
    """The method: 'sdtt' (self-distillation through time, arXiv 2410.21035)."""
    rounds: int = 5
    """Rounds; each halves the steps: the student samples with start_steps / 2**rounds."""
    steps_per_round: int = 300
    """Optimizer steps per round."""
    start_steps: int = 1024
    """The teacher's sampling steps, the grid the first round starts from (a multiple of 2**rounds)."""
    batch_size: int = 32
    """Sequences per optimizer step."""
    lr: float = 1e-4
    """Learning rate of AdamW (constant after warm-up)."""
    warmup_steps: int = 50
    """Linear warm-up steps at the start of the distillation."""
    ema_decay: float = 0.99
    """Decay of the student's EMA, the weights sampled and the next round's teacher (0: no EMA)."""
    seed: int = 0
    """Fixes the data rows, the steps, the masks and the teacher's draws of every step."""
    grid: str = "uniform"
    """The time grid of the samplers the student is made for: 'uniform' or 'cosine' (maskdiff.schedules.time_grid)."""
    checkpoint_every: int = 100
    """Save a checkpoint every this many steps (and at the end of every round)."""

    def student_steps(self, round_index: int) -> int:
        """The student's sampling steps in round ``round_index`` (0-based)."""
        return self.start_steps // 2 ** (round_index + 1)

    def check(self) -> None:
        if self.method not in METHODS:
            raise MaskdiffError(f"unknown distillation method {self.method!r}; choose one of: {', '.join(METHODS)}")
        for name in ("rounds", "steps_per_round", "start_steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise MaskdiffError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.start_steps % 2**self.rounds:
            raise MaskdiffError(f"start-steps {self.start_steps} cannot be halved {self.rounds} times; use a multiple of "
                                f"{2 ** self.rounds} (e.g. 1024) or fewer rounds")
        if not (self.lr > 0 and 0 <= self.ema_decay < 1):
            raise MaskdiffError(f"lr must be > 0 and ema-decay in [0, 1), got {self.lr} and {self.ema_decay}")
        if self.grid not in ("uniform", "cosine"):
            raise MaskdiffError(f"unknown time grid {self.grid!r}; choose one of: uniform, cosine")


RESUMABLE = ("rounds", "checkpoint_every")
"""Settings that may change when a distillation resumes (more rounds extend it)."""


@dataclass
class DistillResult:
    out: Path
    """The student's run folder."""
    step: int
    """Optimizer steps done in all."""
    recommended_steps: Optional[int]
    """The grid of the newest finished round (None before the first)."""
    seconds: float
    """Wall-clock of this invocation."""
    resumed_from: Optional[int]
    """The checkpoint step it resumed from, or None."""


def check_teacher(config: RunConfig) -> None:
    """Distillation needs a masked-diffusion text run with SUBS, without padding or classes."""
    d = config.diffusion
    if d.objective != "masked" or not (d.carry_over and d.zero_mask):
        raise MaskdiffError(f"distillation needs a masked-diffusion teacher with SUBS (objective 'masked'); this run's is "
                            f"{d.objective!r}{'' if d.carry_over and d.zero_mask else ' with the SUBS ablation'}")
    if config.data.pairs:
        raise MaskdiffError("distillation supports unconditional runs; this run was trained on prompt/response pairs (data.pairs)")
    if config.model.num_classes or config.data.packing != "wrap":
        raise MaskdiffError("distillation supports unconditional runs with 'wrap' packing only")


def _teacher_weights(teacher_dir: Path) -> Dict[str, Tensor]:
    path, state = checkpoint_to_load(teacher_dir)
    return network_weights(path, state)[1]  # whole, or a sharded (FSDP2) checkpoint's pieces put together


def distill(teacher_dir, out_dir, settings: DistillSettings, *, device: str = "cpu", progress: bool = True,
            log: Callable[[str], None] = print, stop_after: Optional[int] = None) -> DistillResult:
    """Distil the run ``teacher_dir`` into ``out_dir`` (or resume that distillation from its newest checkpoint).
    ``stop_after``: stop with a checkpoint once this many steps are done (tests; splitting a run)."""
    settings.check()
    teacher_dir, out = Path(teacher_dir), Path(out_dir)
    config, tokenizer = read_run_config(teacher_dir), read_tokenizer(teacher_dir)
    check_teacher(config)
    _check_resume(out, teacher_dir, settings)
    source = training_source(config, tokenizer)
    start_run(out, config, tokenizer)
    if not read_distill_record(out):
        write_distill_record(out, _record(teacher_dir, settings, None, 0))
    dev = torch.device(device)
    student, teacher = build_objective(config, tokenizer.vocab_size), build_objective(config, tokenizer.vocab_size)
    for obj in (student, teacher):
        obj.set_check_inputs(False)
    names = list(student.state_dict())
    tc = dataclasses.replace(config.train, lr=settings.lr, warmup_steps=settings.warmup_steps, lr_schedule="constant",
                             steps=settings.rounds * settings.steps_per_round)
    found = latest_valid_checkpoint(out, warn=log)
    start, resumed = (int(found[1]["step"]), int(found[1]["step"])) if found else (0, None)
    n = settings.steps_per_round
    current = min(start // n, settings.rounds - 1)
    teacher.load_weights(_teacher_weights(teacher_dir) if current == 0 or start < n else
                         _round_weights(out, settings.student_steps(current - 1)), teacher_dir)
    if found:
        tensors = read_tensors(found[0] / "model.safetensors")
        student.load_weights(prefixed_weights(tensors, "model", found[0]), found[0])
    else:
        student.load_weights(_teacher_weights(teacher_dir), teacher_dir)
    student.to(dev).train()
    teacher.to(dev).eval().requires_grad_(False)
    params = [p for _, p in student.named_parameters()]
    optimizer = make_optimizer(student, tc)
    ema = [p.detach().clone() for p in params]
    if found:
        ema = [tensors[f"ema.{k}"].to(dev) for k in names] if f"ema.{names[0]}" in tensors else ema
        opt_t = read_tensors(found[0] / "optimizer.safetensors")
        load_optimizer(optimizer, opt_t, found[1]["optimizer"])
        if "rng.torch" in opt_t:  # the global generator (dropout) continues as without the stop
            torch.set_rng_state(opt_t["rng.torch"])
    total = settings.rounds * n
    if start >= total:
        return DistillResult(out, start, read_distill_record(out).get("recommended_steps"), 0.0, resumed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc="distill", unit="step", dynamic_ncols=True, mininterval=0.5)
    t0 = time.perf_counter()
    step = start
    with RunLog(out) as run_log:
        while step < total:
            r = step // n
            T = settings.student_steps(r)
            lr = learning_rate(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(student, teacher, source, settings, config, step, T, dev)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip else float("inf")))
            loss_value = float(loss.detach())
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                raise MaskdiffError(f"step {step + 1}: non-finite distillation loss or gradient; lower --lr and run the same "
                                    f"command again to resume from the newest checkpoint")
            optimizer.step()
            if settings.ema_decay:
                decay = min(settings.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
            else:
                ema = [p.detach().clone() for p in params]
            step += 1
            record = {"step": step, "round": r + 1, "student_steps": T, "loss_kl": loss_value, "lr": lr,
                      "grad_norm": grad_norm, "elapsed_s": time.perf_counter() - t0}
            if step % tc.log_every == 0 or step % n == 0:
                run_log.write(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(round=f"{r + 1}/{settings.rounds}", steps=T, kl=f"{loss_value:.4f}")
            if step % n == 0:  # the round is done: its student (EMA) is kept and becomes the next teacher
                with torch.no_grad():
                    for p, e in zip(params, ema):
                        p.copy_(e)
                teacher.load_state_dict(student.state_dict())
                _save(out, step, student, names, ema, optimizer, config, keep=0, folder=_round_dir(out, T))
                write_distill_record(_round_dir(out, T), _record(teacher_dir, settings, T, step))
                write_distill_record(out, _record(teacher_dir, settings, T, step))
                (bar.write if bar is not None else log)(f"round {r + 1}: the student samples with {T} steps ({_round_dir(out, T)})")
            if step % settings.checkpoint_every == 0 or step % n == 0 or step == total:
                _save(out, step, student, names, ema, optimizer, config, keep=2)
            if stop_after is not None and step >= stop_after and step < total:
                _save(out, step, student, names, ema, optimizer, config, keep=2)
                break
    if bar is not None:
        bar.close()
    return DistillResult(out, step, read_distill_record(out).get("recommended_steps"), time.perf_counter() - t0, resumed)


def _loss(student, teacher, source, settings: DistillSettings, config: RunConfig, step: int, T: int, dev) -> Tensor:
    """Step ``step``'s loss: data rows, a student step k per row on the T-step grid, x_t ~ q(x_t | x_0) at
    its t, the teacher's two-step target and the KL to it, every draw from the step's generator."""
    gen = step_generator(settings.seed, step)
    x0, _, _ = source.draw(settings.batch_size, gen)  # (B, L)
    k = torch.randint(1, T + 1, (settings.batch_size,), generator=gen)
    half = half_steps(student.schedule, T, k, settings.grid)
    x_t = forward_mask(x0, student.schedule.alpha(half.t).to(torch.float64), student.vocab_size, gen).to(dev)
    target = sdtt_target(teacher.denoiser, x_t, half, gen)
    return sdtt_loss(student.denoiser, x_t, target, half)


def _round_dir(out: Path, steps: int) -> Path:
    return out / ROUNDS_DIR / f"T{steps}"


def _round_weights(out: Path, steps: int) -> Dict[str, Tensor]:
    """The EMA weights of the finished round whose student samples with ``steps`` steps."""
    folder = _round_dir(out, steps)
    found = latest_valid_checkpoint(folder)
    if found is None:
        raise MaskdiffError(f"{folder} holds no valid checkpoint: the round that ends there is needed to resume; "
                            f"start the distillation again in a new folder")
    return prefixed_weights(read_tensors(found[0] / "model.safetensors"), "ema", found[0])


def _save(out: Path, step: int, student, names: List[str], ema: List[Tensor], optimizer, config: RunConfig, *, keep: int,
          folder: Optional[Path] = None) -> None:
    """A checkpoint of the student (weights, EMA, optimizer) at ``step`` in ``out`` or in a round's ``folder``
    (a run folder of its own: the config and tokenizer are copied there first)."""
    where = out if folder is None else folder
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json"):
            (folder / name).write_bytes((out / name).read_bytes())
    model_t = {f"model.{k}": v.detach().cpu() for k, v in student.state_dict().items()}
    model_t.update({f"ema.{k}": e.detach().cpu() for k, e in zip(names, ema)})
    opt_t, meta = optimizer_tensors(optimizer, convert=lambda v: v.cpu())
    opt_t["rng.torch"] = torch.get_rng_state()
    state = {"optimizer": meta, "data_position": {"kind": "draw(seed, step)", "next_step": step}, "config": config.to_dict()}
    save_checkpoint(where, step, model_t, opt_t, state, keep=keep)


def _record(teacher_dir: Path, settings: DistillSettings, steps: Optional[int], step: int) -> dict:
    """distill.json: the method, the teacher, the grid of the newest finished round (None before the first)."""
    return {"method": settings.method, "teacher": str(teacher_dir), "recommended_steps": steps, "grid": settings.grid,
            "after_step": step, "settings": dataclasses.asdict(settings)}


def _check_resume(out: Path, teacher_dir: Path, settings: DistillSettings) -> None:
    """A folder that holds a distillation resumes only with the same teacher and settings (``RESUMABLE`` aside)."""
    old = read_distill_record(out)
    if not old and (out / "config.json").exists():
        raise MaskdiffError(f"{out} holds a run that is not a distillation; use another output folder")
    if not old:
        return
    before = {k: v for k, v in old["settings"].items() if k not in RESUMABLE}
    now = {k: v for k, v in dataclasses.asdict(settings).items() if k not in RESUMABLE}
    diff = [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in now if before.get(k) != now[k]]
    if diff or Path(old["teacher"]).resolve() != teacher_dir.resolve():
        shown = ", ".join(diff[:3]) or f"teacher {old['teacher']} -> {teacher_dir}"
        raise MaskdiffError(f"{out} holds a distillation with other settings ({shown}); use another output folder")
