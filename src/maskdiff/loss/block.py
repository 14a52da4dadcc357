"""Block diffusion's NELBO (BD3-LM, Arriola et al. 2025; docs/math.md#block).

The sequence is cut into blocks x^1..x^K of L' tokens and log p(x) = sum_k log p(x^k | x^{<k}); each
factor is bounded by the masked-diffusion NELBO of the block, its denoiser seeing the clean blocks before
it (docs/math.md (eq. 25)):

    NELBO_block(x) = sum_k [ int_{t_min}^1 w(t) E_q[C_t^k] dt + R^k(t_min) + P^k ],

C_t^k the masked cross-entropy of block k. L' = 1 is the autoregressive NLL (each one-token block
integrates to -log mu(x^k | x^{<k}) because int w(t)(1 - alpha_t) dt = alpha_0 - alpha_1 = 1), and
L' = L is masked diffusion.

Each block gets its own time; the times of one sequence are spread over [t_min, 1] by shifting the
sequence's (stratified) t by k/K, so every block's t is uniform and the sum stays unbiased. The
``mask_rates`` option is BD3-LM's clipped schedule for training: the masked fraction a = 1 - alpha_t is
drawn uniform on [lo, hi] and the cross-entropy weighted by (hi - lo)/a, which estimates the part of the
integral with a in [lo, hi] (by MD4's invariance it is int E[C | a]/a da whatever the schedule). It is a
lower-variance training loss, not a bound; evaluation always takes the whole interval.

``time_sampler='importance'`` draws every block's time as the masked objective does (the square root of
a uniform, loss/masked.py :func:`importance_times`), on [t_min, 1] or, with clipped mask rates, with
sqrt(a) uniform on [sqrt(lo), sqrt(hi)] and the weight 2 (sqrt(hi) - sqrt(lo)) / sqrt(a): the same
expectation either way, a gradient of lower variance.

``cond`` (B, L) marks a condition (a prompt, conditional training): those positions are never masked and
never scored, so each block's term bounds -log p of its other positions given the clean blocks before it
and the condition within it, and the sum bounds -log p(response | prompt).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.loss.masked import (DEFAULT_T_MIN, TIME_SAMPLERS, NELBOTerms, importance_times, prior_term,
                                  sqrt_uniform_fraction, token_counts)
from maskdiff.process import forward_mask
from maskdiff.schedules import Schedule


def num_blocks(length: int, block_size: int) -> int:
    return math.ceil(length / block_size)


def block_times(t: Tensor, blocks: int, t_min: float = DEFAULT_T_MIN) -> Tensor:
    """Per-block times (B, K) float64 from the per-sequence t (B,) on [t_min, 1]: block k of a sequence
    takes u_k = (u + k/K) mod 1, u = (t - t_min)/(1 - t_min), so each block's t is uniform when t is."""
    u = (t.to(torch.float64) - t_min) / (1.0 - t_min)  # (B,)
    k = torch.arange(blocks, dtype=torch.float64, device=t.device) / blocks
    return t_min + (1.0 - t_min) * torch.remainder(u[:, None] + k[None], 1.0)


def check_mask_rates(mask_rates: Tuple[float, float]) -> None:
    lo, hi = mask_rates
    if not 0.0 <= lo < hi <= 1.0:
        raise MaskdiffError(f"the clipped mask-rate interval must satisfy 0 <= low < high <= 1, got [{lo}, {hi}]")


def _per_block(values: Tensor, block_size: int) -> Tensor:
    """(B, L) -> (B, K): sums over each block (the last one may be shorter)."""
    B, L = values.shape
    K = num_blocks(L, block_size)
    pad = K * block_size - L
    if pad:
        values = torch.cat([values, torch.zeros((B, pad), dtype=values.dtype, device=values.device)], dim=1)
    return values.view(B, K, block_size).sum(-1)


def _tokens(per_block: Tensor, block_size: int, length: int) -> Tensor:
    """(B, K) -> (B, L): each block's value at each of its positions."""
    return per_block.repeat_interleave(block_size, dim=1)[:, :length]


def block_cross_entropy(denoise, x_t: Tensor, x0: Tensor) -> Tensor:
    """C^k per block (B, K): sum over the masked positions of block k of -log mu[n, x0^n]."""
    log_mu = denoise(x_t, x0)  # (B, L, V)
    nll = -log_mu.gather(-1, x0[..., None]).squeeze(-1)
    masked = x_t == denoise.vocab_size
    return _per_block(torch.where(masked, nll, torch.zeros_like(nll)), denoise.block_size)


def block_diffusion_term(
    denoise,
    x0: Tensor,
    t: Tensor,
    schedule: Schedule,
    generator: Optional[torch.Generator] = None,
    *,
    t_min: float = DEFAULT_T_MIN,
    noise: Optional[Tensor] = None,
    mask_rates: Optional[Tuple[float, float]] = None,
    time_sampler: str = "uniform",
    cond: Optional[Tensor] = None,
) -> Tensor:
    """One-sample estimate of sum_k int_{t_min}^1 w(t) E_q[C_t^k] dt, one pass of the network. (B,).

    x0: (B, L); t: (B,) uniform or stratified on [t_min, 1] (spread over the blocks by :func:`block_times`);
    noise: optional (B, L) float64 mask uniforms. mask_rates: (lo, hi), BD3-LM's clipped interval for
    training (see the module docstring); None: the NELBO term. time_sampler: 'uniform' or 'importance'
    (the module docstring).
    """
    if time_sampler not in TIME_SAMPLERS:
        raise MaskdiffError(f"unknown time sampler {time_sampler!r}; choose one of: {', '.join(TIME_SAMPLERS)}")
    B, L = x0.shape
    tb = block_times(t, num_blocks(L, denoise.block_size), t_min)  # (B, K)
    if mask_rates is None:
        if time_sampler == "importance":
            tb, weight = importance_times(tb, schedule, t_min)
        else:
            weight = (1.0 - t_min) * schedule.weight(tb)  # density of U[t_min, 1] is 1/(1 - t_min)
        alpha = schedule.alpha(tb)
    else:
        check_mask_rates(mask_rates)
        lo, hi = mask_rates
        v = (tb - t_min) / (1.0 - t_min)  # uniform on [0, 1)
        if time_sampler == "importance":
            a, weight = sqrt_uniform_fraction(v, lo, hi)
        else:
            a = lo + (hi - lo) * v  # masked fraction, uniform on [lo, hi]
            weight = (hi - lo) / a
        alpha = 1.0 - a
    x_t = forward_mask(x0, _tokens(alpha, denoise.block_size, L), denoise.vocab_size, generator, noise=noise, fixed=cond)
    ce = block_cross_entropy(denoise, x_t, x0)  # (B, K)
    return (weight.to(ce.dtype) * ce).sum(-1)


def block_reconstruction_term(denoise, x0: Tensor, t_min: float, schedule: Schedule,
                              generator: Optional[torch.Generator] = None, *, cond: Optional[Tensor] = None) -> Tensor:
    """sum_k R^k(t_min): every block masked at t_min, each seeing the clean blocks before it. (B,)."""
    t = torch.full((x0.shape[0],), t_min, dtype=torch.float64, device=x0.device)
    x_t = forward_mask(x0, schedule.alpha(t), denoise.vocab_size, generator, fixed=cond)
    if not bool((x_t == denoise.vocab_size).any()):
        return torch.zeros(x0.shape[0], device=x0.device)
    return block_cross_entropy(denoise, x_t, x0).sum(-1)


def block_nelbo(denoise, x0: Tensor, t: Tensor, schedule: Schedule, generator: Optional[torch.Generator] = None, *,
                t_min: float = DEFAULT_T_MIN, cond: Optional[Tensor] = None) -> NELBOTerms:
    """The three terms of the block NELBO for evaluation (the whole interval), per sequence; with ``cond``,
    of the other positions given the condition."""
    diffusion = block_diffusion_term(denoise, x0, t, schedule, generator, t_min=t_min, cond=cond)
    recon = block_reconstruction_term(denoise, x0, t_min, schedule, generator, cond=cond)
    return NELBOTerms(diffusion=diffusion.float(), reconstruction=recon.float(),
                      prior=prior_term(x0, schedule, denoise.vocab_size, cond=cond).float(), tokens=token_counts(x0, cond=cond))
