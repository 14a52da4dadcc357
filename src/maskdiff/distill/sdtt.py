"""SDTT, self-distillation through time (Deschenaux & Gulcehre 2024, arXiv 2410.21035), as functions over
denoisers: the target that one student step from t to s must match, built from two teacher steps t -> m -> s
of half the size, and the divergence between the two (docs/sampling.md, "Distilled models").

Notation: a masked position of x_t unmasks in the teacher's first step with probability
p1 = (alpha_m - alpha_t) / (1 - alpha_t), and, still masked at m, in its second step with probability
p2 = (alpha_s - alpha_m) / (1 - alpha_m) (1 at s = 0, the last step, which fills every mask). One student
step unmasks it with probability (alpha_s - alpha_t) / (1 - alpha_t) = p1 + (1 - p1) p2, the same, so the
two laws of position i after the step differ only in the value it takes when it unmasks:

    teacher (two steps): [p1 mu_T(x_t)_i + (1 - p1) p2 E[mu_T(x_m)_i | i masked at m]] / (p1 + (1 - p1) p2)
    student (one step):  mu_S(x_t)_i

The first line is the target of position i. It is estimated from one draw of the teacher's first step
x_m (one teacher call at t, one at m): a position that unmasked in that draw gets mu_T(x_t)_i, the
distribution its value was drawn from (the paper's target); one that is still masked gets the mixture
(1 - c) mu_T(x_t)_i + c mu_T(x_m)_i with c = p2 / (p1 + (1 - p1) p2). Given x_t, the expectation of
this estimate over the draw is the target above (the positions of a step are drawn independently, so
x_m is, at a still-masked i, a draw of the intermediate state given that i stayed masked).
The paper's code gives every still-masked position mu_T(x_m)_i (c = 1), which in expectation weights the
second teacher step by 1 - p1 instead of (1 - p1) p2: far more than the teacher's own chain does
whenever a step unmasks a small fraction of the masks.

The divergence is the forward KL(target || mu_S) per masked position, averaged over the masked
positions: its expectation over the draw of x_m is the KL to the expected target plus a term free of the
student, so its minimiser is the two-step law itself (a reverse KL against a random target would be
minimised by a normalised geometric mean of the draws instead), and it is mode-covering, which keeps
the diversity of the teacher's samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from maskdiff.denoiser import supports
from maskdiff.process import sample_categorical, uniform
from maskdiff.schedules import Schedule, time_grid


@dataclass
class HalfSteps:
    """Per row of a batch, the two teacher steps t -> m -> s that one student step t -> s replaces."""

    t: Tensor
    """(B,) float64, the student step's start."""
    m: Tensor
    """(B,) float64, the teacher's intermediate time."""
    s: Tensor
    """(B,) float64, the student step's end."""
    p1: Tensor
    """(B,) float64, probability that a mask unmasks in the teacher's first step."""
    p2: Tensor
    """(B,) float64, probability that a mask still there at m unmasks in the second (1 on the last step)."""

    @property
    def c(self) -> Tensor:
        """(B,) weight of the second step's prediction in the target of a position still masked at m."""
        return self.p2 / (self.p1 + (1.0 - self.p1) * self.p2)


def half_steps(schedule: Schedule, steps: int, k: Tensor, grid: str = "uniform") -> HalfSteps:
    """The student's step k (1..steps, (B,) long) on the ``steps``-point grid, split in two on the grid of
    2 x ``steps`` points: t = G_T[k], m = G_2T[2k - 1], s = G_T[k - 1] (the samplers' grids, time_grid)."""
    student, teacher = time_grid(steps, grid), time_grid(2 * steps, grid)
    t, m, s = student[k], teacher[2 * k - 1], student[k - 1]
    a_t, a_m, a_s = (schedule.alpha(v).to(torch.float64) for v in (t, m, s))
    p1 = (a_m - a_t) / (1.0 - a_t)
    p2 = torch.where(k == 1, torch.ones_like(a_s), (a_s - a_m) / (1.0 - a_m))
    return HalfSteps(t, m, s, p1, p2)


def _masked_log_mu(denoise, x: Tensor, t: Tensor, masked: Tensor) -> Tensor:
    """log mu (N, V) of ``denoise`` at the True positions of ``masked`` (all masks of x or some of them)."""
    t = t.to(torch.float32).to(x.device)
    if supports(denoise, "masked_log_probs"):
        return denoise.masked_log_probs(x, t, masked)
    return denoise(x, t)[masked]


@torch.no_grad()
def sdtt_target(teacher, x_t: Tensor, half: HalfSteps, generator: Optional[torch.Generator] = None,
                intermediate: Optional[Tensor] = None) -> Tensor:
    """The estimate of the two-step target (module docstring) at the masked positions of x_t: log-probabilities
    (N, V) for the N masks, in row-major order (as ``x_t[x_t == mask]``). Two teacher calls.

    ``intermediate``: the teacher's first step x_m (B, L) to use instead of drawing it (the exactness tests
    enumerate it); otherwise each mask unmasks with probability p1 of its row and takes a value drawn from
    mu_T(x_t) (float64 uniforms and Gumbel noise from ``generator``)."""
    mask_id = teacher.vocab_size
    masked = x_t == mask_id  # (B, L)
    log_mu1 = _masked_log_mu(teacher, x_t, half.t, masked)  # (N, V)
    if intermediate is None:
        u = uniform(x_t.shape, generator, x_t.device)  # (B, L)
        values = sample_categorical(log_mu1, generator)  # (N,)
        unmask = masked & (u < half.p1.to(x_t.device)[:, None])
        x_m = x_t.clone()
        x_m[unmask] = values[unmask[masked]]
    else:
        x_m = intermediate
    still = x_m == mask_id  # (B, L), within masked
    target = log_mu1.clone()
    if bool(still.any()):
        log_mu2 = _masked_log_mu(teacher, x_m, half.m, still)  # (N2, V)
        c = half.c.to(x_t.device)[:, None].expand_as(x_t)[still].to(log_mu1.dtype)[:, None]  # (N2, 1)
        keep = still[masked]  # (N,): which of the N masks are still masked at m
        log_one_minus_c = torch.log1p(-c.clamp(max=1.0)) if bool((c < 1).any()) else torch.full_like(c, -math.inf)
        target[keep] = torch.logaddexp(log_one_minus_c + log_mu1[keep], torch.log(c) + log_mu2)
    return target


def kl_to_target(target: Tensor, student: Tensor) -> Tensor:
    """KL(target || student) per position, (N,), from log-probabilities (N, V); 0 log 0 = 0."""
    p = target.exp()
    return torch.where(p > 0, p * (target - student), torch.zeros_like(p)).sum(-1)


def sdtt_loss(student, x_t: Tensor, target: Tensor, half: HalfSteps) -> Tensor:
    """The mean over the masks of x_t of KL(target || mu_S(x_t)): the student's loss (a scalar), differentiable
    in the student's parameters. ``target``: (N, V) from :func:`sdtt_target`."""
    masked = x_t == student.vocab_size
    log_mu = _masked_log_mu(student, x_t, half.t, masked).float()  # (N, V)
    if log_mu.shape[0] == 0:
        return log_mu.sum()
    return kl_to_target(target.float(), log_mu).mean()
