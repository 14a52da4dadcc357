"""Negative ELBO of masked diffusion, continuous and discrete time (MD4 Sec. 3, MDLM Sec. 3;
docs/math.md#continuous-nelbo, docs/math.md#discrete-nelbo).

Per sequence, with C_t the masked cross-entropy  sum_{n masked in x_t} -log mu_theta(x_t, t)[n, x_0^n]:

    NELBO(x_0) = int_{t_min}^1 w(t) E_q[C_t] dt  +  R(t_min)  +  P                    (continuous)
    NELBO_T(x_0) = sum_{i=1}^T E_q[(alpha_s - alpha_t)/(1 - alpha_t) C_t]  +  R(0)  +  P  (discrete)

Each function returns an unbiased one-sample estimate per sequence, shape (B,). The weights come from
the schedule and nowhere else. Padding (``valid`` False) is never masked and never counted; neither is
the condition of conditional training (``cond`` True: the prompt), which the network sees unmasked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from maskdiff.denoiser import supports
from maskdiff.errors import MaskdiffError
from maskdiff.process import forward_mask
from maskdiff.schedules import Schedule

DEFAULT_T_MIN = 1e-3  # MDLM's sampling floor for t; [0, t_min] becomes the reconstruction term
TIME_SAMPLERS = ("uniform", "importance", "stratified")  # how the training loss draws t (importance_times, stratified_times)


def masked_cross_entropy(log_mu: Tensor, x0: Tensor, masked: Tensor) -> Tensor:
    """C_t = sum over masked positions of -log mu[n, x0^n].  (B, L, V), (B, L), (B, L) -> (B,)."""
    nll = -log_mu.gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
    return torch.where(masked, nll, torch.zeros_like(nll)).sum(-1)


def masked_only_cross_entropy(denoise, x_t: Tensor, t: Tensor, x0: Tensor, *, valid: Optional[Tensor] = None) -> Tensor:
    """C_t as :func:`masked_cross_entropy`, from log mu at the masked positions only (B,).

    Needs ``denoise.masked_log_probs(x_t, t, masked) -> (N, V)`` (:class:`SUBSDenoiser` has it): the
    network then computes output logits at the N masked positions instead of all B * L.
    """
    if not supports(denoise, "masked_log_probs"):
        raise MaskdiffError("this denoiser cannot compute logits at masked positions only (no masked_log_probs); "
                            "turn masked_logits off")
    masked = x_t == denoise.vocab_size
    log_mu = denoise.masked_log_probs(x_t, t, masked, **_valid_kwarg(denoise, valid))  # (N, V)
    nll = -log_mu.gather(-1, x0[masked][:, None]).squeeze(-1)  # (N,)
    return sum_per_sequence(nll, masked)


def sum_per_sequence(per_position: Tensor, masked: Tensor) -> Tensor:
    """Sum values given at the masked positions (N,), row-major as ``x[masked]``, into their rows: (B,)."""
    rows = masked.nonzero(as_tuple=True)[0]
    out = torch.zeros(masked.shape[0], dtype=per_position.dtype, device=per_position.device)
    return out.index_add(0, rows, per_position)


def _valid_kwarg(denoise, valid: Optional[Tensor]) -> dict:
    """Pass the padding mask to denoisers that take it (the network then ignores padding)."""
    return {"valid": valid} if valid is not None and supports(denoise, "accepts_valid") else {}


def _cross_entropy(denoise, x_t: Tensor, t: Tensor, x0: Tensor, valid: Optional[Tensor], masked_only: bool) -> Tensor:
    if masked_only:
        return masked_only_cross_entropy(denoise, x_t, t, x0, valid=valid)
    log_mu = denoise(x_t, t, **_valid_kwarg(denoise, valid))
    return masked_cross_entropy(log_mu, x0, x_t == denoise.vocab_size)


def low_discrepancy_times(batch: int, u: float, t_min: float = DEFAULT_T_MIN, *, offset: int = 0, global_batch: Optional[int] = None, dtype=torch.float32,
                          device=None) -> Tensor:
    """Stratified times t_i = t_min + (1 - t_min) ((u + i/B) mod 1) over the global batch (MDLM Sec. 3.4).

    ``offset`` and ``global_batch`` select this process's slice, so t depends on an example's global
    index only, never on how the batch is split. ``device``: where t is made (default: the CPU).
    """
    global_batch = batch if global_batch is None else global_batch
    i = torch.arange(offset, offset + batch, dtype=torch.float64, device=device)
    frac = torch.remainder(u + i / global_batch, 1.0)
    return (t_min + (1.0 - t_min) * frac).to(dtype)


def stratified_times(u: Tensor, t_min: float = DEFAULT_T_MIN, *, offset: int = 0, global_batch: Optional[int] = None,
                     dtype=torch.float32) -> Tensor:
    """One uniform per stratum: t_i = t_min + (1 - t_min) (u_i + i) / B over the global batch (MDLM's
    antithetic sampling, its ``_sample_t``), where :func:`low_discrepancy_times` shifts all strata by one u.

    u: (batch,) uniforms on [0, 1), one per row of this slice; ``offset`` and ``global_batch`` as in
    :func:`low_discrepancy_times`. Each t_i is uniform on its stratum, so the batch mean of any f(t_i)
    has the expectation of f under t ~ U[t_min, 1], and t_i depends only on u_i and the global index i.
    """
    global_batch = u.shape[0] if global_batch is None else global_batch
    i = torch.arange(offset, offset + u.shape[0], dtype=torch.float64, device=u.device)
    return (t_min + (1.0 - t_min) * (u.to(torch.float64) + i) / global_batch).to(dtype)


def importance_times(t: Tensor, schedule: Schedule, t_min: float = DEFAULT_T_MIN) -> tuple[Tensor, Tensor]:
    """Map uniform (or stratified) t on [t_min, 1] to importance-sampled times and their weights.

    The continuous term is int w(t) E[C_t] dt = int E[C | a] / a da over the masked fraction
    a = 1 - alpha_t, on [a_lo, a_hi] = [1 - alpha_{t_min}, 1 - alpha_1]. Drawing t uniformly gives each
    masked token the weight w(t), which grows like 1/t: a few tokens of the sequences with small t
    carry most of the gradient, whose variance grows like log(1/t_min). Here sqrt(a) is drawn
    uniformly instead, q(a) = 1 / (2 sqrt(a) (sqrt(a_hi) - sqrt(a_lo))), the proposal that minimises
    the gradient's variance when every masked token adds the same variance (docs/math.md#importance-sampled-time).
    The estimate C_t w(t) / q(t) = C_t 2 (sqrt(a_hi) - sqrt(a_lo)) / sqrt(a) has the same expectation (the
    NELBO is unchanged) and a weight bounded by 2 / sqrt(a_lo) instead of w(t_min).

    t: (B,) on [t_min, 1], any float dtype. Returns (t', weight), both (B,) float64: the times to use
    and the factor that replaces (1 - t_min) w(t) in :func:`continuous_diffusion_term`.
    """
    v = (t.to(torch.float64) - t_min) / (1.0 - t_min)  # uniform on [0, 1)
    a_lo = float(schedule.one_minus_alpha(torch.tensor(t_min, dtype=torch.float64, device=t.device)))
    a, weight = sqrt_uniform_fraction(v, a_lo, 1.0 - schedule.alpha_1)
    return schedule.inverse(1.0 - a).clamp(t_min, 1.0), weight


def sqrt_uniform_fraction(v: Tensor, a_lo: float, a_hi: float) -> tuple[Tensor, Tensor]:
    """The masked fraction a whose square root is uniform on [sqrt(a_lo), sqrt(a_hi)], at the uniforms v on
    [0, 1), and the weight 1 / (a q(a)) = 2 (sqrt(a_hi) - sqrt(a_lo)) / sqrt(a): C_a times it estimates
    int_{a_lo}^{a_hi} E[C | a] / a da (:func:`importance_times`; block diffusion's clipped rates)."""
    lo, hi = math.sqrt(a_lo), math.sqrt(a_hi)
    root = lo + (hi - lo) * v  # sqrt(a), uniform on [lo, hi)
    return root * root, 2.0 * (hi - lo) / root


def discrete_step(t: Tensor, steps: int, t_min: float = DEFAULT_T_MIN) -> Tensor:
    """Map t on [t_min, 1] (uniform or stratified) to a step i in 1..T, uniform over the steps:
    u = (t - t_min)/(1 - t_min), i = floor(u T) + 1."""
    u = (t.to(torch.float64) - t_min) / (1.0 - t_min)
    return (u * steps).floor().long().clamp(0, steps - 1) + 1


def importance_steps(t: Tensor, steps: int, schedule: Schedule, t_min: float = DEFAULT_T_MIN) -> tuple[Tensor, Tensor]:
    """Discrete time's importance sampling: :func:`importance_times`'s proposal (the square root of the masked
    fraction a = 1 - alpha uniform) summed over each step, q_i = (sqrt(a_i) - sqrt(a_{i-1})) / (sqrt(a_T) -
    sqrt(a_0)) with a_i = 1 - alpha_{i/T}. t (B,) on [t_min, 1] as for :func:`discrete_step`. Returns the
    steps (B,) in 1..T and q_i (B,) float64: the estimate weights the step's term by 1/q_i instead of T
    (:func:`discrete_diffusion_term`'s ``step_prob``), which keeps it unbiased for NELBO_T."""
    v = (t.to(torch.float64) - t_min) / (1.0 - t_min)  # uniform on [0, 1)
    roots = schedule.one_minus_alpha(torch.arange(steps + 1, dtype=torch.float64, device=t.device) / steps).sqrt()  # (T + 1,)
    root = roots[0] + (roots[-1] - roots[0]) * v
    step = torch.searchsorted(roots, root, right=True).clamp(1, steps)  # roots[i - 1] <= root < roots[i]
    return step, (roots[step] - roots[step - 1]) / (roots[-1] - roots[0])


def continuous_diffusion_term(
    denoise,
    x0: Tensor,
    t: Tensor,
    schedule: Schedule,
    generator: Optional[torch.Generator] = None,
    *,
    t_min: float = DEFAULT_T_MIN,
    valid: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
    masked_only: bool = False,
    cost: Optional[Callable[..., Tensor]] = None,
    time_sampler: str = "uniform",
    cond: Optional[Tensor] = None,
) -> Tensor:
    """One-sample estimate of int_{t_min}^1 w(t) E_q[C_t] dt for t ~ U[t_min, 1] (MD4 eq. 5).

    x0: (B, L); t: (B,) drawn uniformly (or stratified) on [t_min, 1]; noise: optional (B, L) uniforms
    for the masks (see :func:`forward_mask`); masked_only: compute log mu at masked positions only
    (:func:`masked_only_cross_entropy`; the same value). cost: ``cost(denoise, x_t, t, x0, valid) -> (B,)``
    in place of the cross-entropy C_t (SEDD's score entropy, loss/score_entropy.py).
    time_sampler: 'uniform' (or 'stratified': t drawn by :func:`stratified_times`) uses t as drawn;
    'importance' maps it with :func:`importance_times` (same expectation, lower variance; for training).
    cond: optional (B, L) bool, the condition (a prompt): never masked, so never scored. Returns (B,).
    """
    if time_sampler not in TIME_SAMPLERS:
        raise MaskdiffError(f"unknown time sampler {time_sampler!r}; choose one of: {', '.join(TIME_SAMPLERS)}")
    t64 = t.to(torch.float64)
    if time_sampler == "importance":
        t64, weight = importance_times(t64, schedule, t_min)
        t = t64.to(t.dtype)
    else:
        weight = (1.0 - t_min) * schedule.weight(t64)  # density of U[t_min, 1] is 1/(1 - t_min)
    x_t = forward_mask(x0, schedule.alpha(t64), denoise.vocab_size, generator, fixed=_fixed(valid, cond), noise=noise)
    ce = _cross_entropy(denoise, x_t, t, x0, valid, masked_only) if cost is None else cost(denoise, x_t, t, x0, valid)
    return weight.to(ce.dtype) * ce


def discrete_diffusion_term(
    denoise,
    x0: Tensor,
    step: Tensor,
    steps: int,
    schedule: Schedule,
    generator: Optional[torch.Generator] = None,
    *,
    valid: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
    masked_only: bool = False,
    step_prob: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
) -> Tensor:
    """One-sample estimate of sum_{i=1}^T E_q[(alpha_s - alpha_t)/(1 - alpha_t) C_t] (MDLM eq. 8).

    step: (B,) integers in 1..T, drawn uniformly; s = (i - 1)/T, t = i/T. The factor T makes the single
    sampled step an unbiased estimate of the sum. step_prob: (B,) the probability each step was drawn
    with when not uniform (:func:`importance_steps`); the factor is then 1/step_prob. Returns (B,).
    """
    t = step.to(torch.float64) / steps
    s = (step.to(torch.float64) - 1.0) / steps
    x_t = forward_mask(x0, schedule.alpha(t), denoise.vocab_size, generator, fixed=_fixed(valid, cond), noise=noise)
    ce = _cross_entropy(denoise, x_t, t.float(), x0, valid, masked_only)
    if step_prob is not None:
        return (schedule.discrete_weight(s, t) / step_prob).to(ce.dtype) * ce
    return (steps * schedule.discrete_weight(s, t)).to(ce.dtype) * ce


def reconstruction_term(
    denoise,
    x0: Tensor,
    t_min: float,
    schedule: Schedule,
    generator: Optional[torch.Generator] = None,
    *,
    valid: Optional[Tensor] = None,
    masked_only: bool = False,
    cond: Optional[Tensor] = None,
) -> Tensor:
    """R(t_min) = E_q[C_{t_min}]: the slice [0, t_min] that the continuous term leaves out. (B,).

    With alpha_{t_min} = 1 (t_min = 0 on an exact schedule) nothing is masked and it is exactly 0.
    """
    t = torch.full((x0.shape[0],), t_min, dtype=torch.float64, device=x0.device)
    x_t = forward_mask(x0, schedule.alpha(t), denoise.vocab_size, generator, fixed=_fixed(valid, cond))
    masked = x_t == denoise.vocab_size
    if not bool(masked.any()):
        return torch.zeros(x0.shape[0], device=x0.device)
    return _cross_entropy(denoise, x_t, t.float(), x0, valid, masked_only)


def prior_term(x0: Tensor, schedule: Schedule, vocab_size: int, *, valid: Optional[Tensor] = None,
               cond: Optional[Tensor] = None) -> Tensor:
    """P = KL(q(x_1 | x_0) || p(x_1)) = n_tokens * alpha_1 * log V, zero when alpha_1 = 0. (B,)."""
    return token_counts(x0, valid, cond) * (schedule.alpha_1 * math.log(vocab_size))


def scored_positions(valid: Optional[Tensor], cond: Optional[Tensor]) -> Optional[Tensor]:
    """The positions a NELBO scores, (B, L) bool: real tokens (``valid``) outside the condition (``cond``);
    None when every position counts."""
    if cond is None:
        return valid
    return ~cond if valid is None else valid & ~cond


def token_counts(x0: Tensor, valid: Optional[Tensor] = None, cond: Optional[Tensor] = None) -> Tensor:
    """Number of scored tokens per sequence (real, not padding, not the condition), float (B,)."""
    valid = scored_positions(valid, cond)
    if valid is None:
        return torch.full((x0.shape[0],), float(x0.shape[1]), device=x0.device)
    return valid.sum(-1).float()


@dataclass
class NELBOTerms:
    """Per-sequence terms of the NELBO estimate, each (B,), in nats."""

    diffusion: Tensor
    reconstruction: Tensor
    prior: Tensor
    tokens: Tensor

    @property
    def total(self) -> Tensor:
        return self.diffusion + self.reconstruction + self.prior


def nelbo(
    denoise,
    x0: Tensor,
    t: Tensor,
    schedule: Schedule,
    generator: Optional[torch.Generator] = None,
    *,
    t_min: float = DEFAULT_T_MIN,
    discrete_steps: Optional[int] = None,
    valid: Optional[Tensor] = None,
    masked_only: bool = False,
    cond: Optional[Tensor] = None,
) -> NELBOTerms:
    """All three terms of the NELBO for evaluation.

    t is (B,) on [t_min, 1] in both cases (as :func:`low_discrepancy_times` makes it). Continuous time
    (``discrete_steps`` None) uses it as the diffusion time. Discrete time with T steps maps it to
    u = (t - t_min)/(1 - t_min) on [0, 1) and picks the step i = floor(u T) + 1; the reconstruction is
    then R(0). cond: (B, L) bool, the condition (a prompt): the terms are then the NELBO of the rest given it.
    """
    vocab = denoise.vocab_size
    if discrete_steps is None:
        diffusion = continuous_diffusion_term(denoise, x0, t, schedule, generator, t_min=t_min, valid=valid, masked_only=masked_only,
                                              cond=cond)
        recon = reconstruction_term(denoise, x0, t_min, schedule, generator, valid=valid, masked_only=masked_only, cond=cond)
    else:
        step = discrete_step(t, discrete_steps, t_min)
        diffusion = discrete_diffusion_term(denoise, x0, step, discrete_steps, schedule, generator, valid=valid, masked_only=masked_only,
                                            cond=cond)
        recon = reconstruction_term(denoise, x0, 0.0, schedule, generator, valid=valid, masked_only=masked_only, cond=cond)
    return NELBOTerms(
        diffusion=diffusion.float(),
        reconstruction=recon.float(),
        prior=prior_term(x0, schedule, vocab, valid=valid, cond=cond).float(),
        tokens=token_counts(x0, valid, cond),
    )


def _fixed(valid: Optional[Tensor], cond: Optional[Tensor] = None) -> Optional[Tensor]:
    """Positions the forward process leaves clean: padding and the condition."""
    scored = scored_positions(valid, cond)
    return None if scored is None else ~scored
