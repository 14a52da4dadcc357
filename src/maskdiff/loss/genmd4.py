"""GenMD4 (MD4 Sec. 5): a learnable state-dependent schedule alpha_{t,v} = 1 - t^{w_v}, its NELBO and
an unbiased gradient for the exponents w.

A position holding v is masked at time t with probability t^{w_v}, so alpha'_{t,v}/(1 - alpha_{t,v}) =
-w_v / t and the integrand of the NELBO (docs/math.md (eq. 13)) at a masked position n with x_0^n = c is

    (1/t) [ w_c (-log mu_c) + sum_v w_v mu_v - w_c ],

which with every w_v = 1 is the linear schedule's (1/t)(-log mu_c). The NELBO depends on w through
this weight (a pathwise gradient) and through the law of x_t (a score-function gradient): with k draws
of x_t per x_0 at the same t, REINFORCE with a leave-one-out baseline b_j = mean_{i != j} f_i gives the
surrogate f_j + (f_j - b_j).detach() * log q(x_t^j | x_0), whose gradient is unbiased; k = 1 has no
baseline. The surrogate is for backward only: log the NELBO (``GenMD4Loss.nelbo``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from maskdiff.loss.masked import _valid_kwarg, importance_times
from maskdiff.schedules import Linear, PerTokenPolynomial


class LearnableExponents(nn.Module):
    """The exponents w_v > 0, one per vocabulary entry, stored as log w (initialised to w = ``init``)."""

    def __init__(self, vocab_size: int, init: float = 1.0):
        super().__init__()
        self.log_w = nn.Parameter(torch.full((vocab_size,), math.log(init)))

    @property
    def exponents(self) -> Tensor:  # (V,)
        return self.log_w.exp()

    def schedule(self) -> PerTokenPolynomial:
        """The current schedule, detached, for sampling and exact checks."""
        return PerTokenPolynomial(self.exponents.detach().double())


def genmd4_mask(x0: Tensor, t: Tensor, w: Tensor, mask_id: int, noise: Tensor, *, valid: Optional[Tensor] = None) -> Tensor:
    """x_t ~ q(x_t | x_0): position n is masked iff noise >= alpha_{t,c} = 1 - t^{w_c}, c = x_0^n (the
    convention of :func:`maskdiff.process.forward_mask`, so w = 1 masks exactly as the linear schedule).
    (B, L), (B,), (V,), (B, L) -> (B, L)."""
    p_mask = t.to(torch.float64)[:, None] ** w.detach().to(torch.float64)[x0]
    masked = noise >= 1.0 - p_mask
    if valid is not None:
        masked &= valid
    return torch.where(masked, torch.full_like(x0, mask_id), x0)


def genmd4_integrand(log_mu: Tensor, x0: Tensor, masked: Tensor, t: Tensor, w: Tensor) -> Tensor:
    """sum over masked n of (1/t)[w_c (-log mu_c) + sum_v w_v mu_v - w_c], c = x_0^n.  Returns (B,)."""
    w_c = w[x0]  # (B, L)
    nll = -log_mu.gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
    w_mean = (log_mu.exp() * w).sum(-1)  # sum_v w_v mu_v, (B, L)
    per_pos = w_c * nll + w_mean - w_c
    return torch.where(masked, per_pos, torch.zeros_like(per_pos)).sum(-1) / t


def genmd4_log_q(x0: Tensor, masked: Tensor, t: Tensor, w: Tensor, *, valid: Optional[Tensor] = None) -> Tensor:
    """log q(x_t | x_0) = sum_n [masked] w_c log t + [unmasked] log(1 - t^{w_c}).  Returns (B,) in w's dtype.

    Computed in float64. At t = 1 (a float32 t within 6e-8 of 1 rounds there) every position is masked
    and log(1 - t^w) = -inf at the unmasked branch: it is evaluated at a harmless t^w there, since
    ``torch.where`` would otherwise pass 0 * inf = NaN back into the gradient of w.
    """
    log_t = torch.log(t.to(torch.float64))[:, None]
    w_c = w.to(torch.float64)[x0]
    log_masked = w_c * log_t  # log t^{w_c} <= 0
    kept = ~masked if valid is None else ~masked & valid
    safe = torch.where(kept, log_masked, torch.full_like(log_masked, -1.0))
    log_kept = torch.log(-torch.expm1(safe))  # log(1 - t^w), exact near t^w -> 1
    out = torch.where(masked, log_masked, log_kept)
    if valid is not None:
        out = torch.where(valid, out, torch.zeros_like(out))
    return out.sum(-1).to(w.dtype)


@dataclass
class GenMD4Loss:
    surrogate: Tensor  # (B,): backward through this
    nelbo: Tensor  # (B,): the continuous-term estimate, averaged over the k draws; log this


def genmd4_loss(
    denoise,
    x0: Tensor,
    t: Tensor,
    exponents: Tensor,
    noise: Tensor,
    *,
    t_min: float = 1e-3,
    valid: Optional[Tensor] = None,
    time_sampler: str = "uniform",
) -> GenMD4Loss:
    """The continuous diffusion term of GenMD4 for t ~ U[t_min, 1] with k draws of x_t per x_0.

    exponents: (V,) w with gradient; noise: (k, B, L) uniforms, one set per draw. The k draws share t.
    time_sampler 'importance': t mapped by :func:`~maskdiff.loss.masked.importance_times` with the linear
    schedule (GenMD4 at w = 1, its initialisation: sqrt(t) uniform) and each term weighted by 1/q(t); the
    proposal does not depend on w, so the NELBO and the gradient stay unbiased.
    """
    k = noise.shape[0]
    scale = 1.0 - t_min  # 1/q(t) of the uniform draw on [t_min, 1]
    if time_sampler == "importance":
        t64, weight = importance_times(t.to(torch.float64), Linear(), t_min)  # weight = w(t)/q(t) = 1/(t q(t))
        t, scale = t64.to(t.dtype), (weight * t64).repeat(k)  # 1/q(t), laid out as t_rep below
    B = x0.shape[0]
    V = exponents.shape[0]
    x_rep = x0.repeat(k, 1)  # (k B, L)
    t_rep = t.repeat(k)
    v_rep = None if valid is None else valid.repeat(k, 1)
    x_t = genmd4_mask(x_rep, t_rep, exponents, V, noise.reshape(k * B, -1), valid=v_rep)
    masked = x_t == V
    log_mu = denoise(x_t, t_rep.float(), **_valid_kwarg(denoise, v_rep))  # padding is not attended to
    scale = scale if isinstance(scale, float) else scale.to(log_mu.dtype)
    f = scale * genmd4_integrand(log_mu, x_rep, masked, t_rep.to(log_mu.dtype), exponents.to(log_mu.dtype))
    f = f.reshape(k, B)
    log_q = genmd4_log_q(x_rep, masked, t_rep, exponents, valid=v_rep).reshape(k, B)
    if k > 1:
        baseline = (f.sum(0, keepdim=True) - f) / (k - 1)
    else:
        baseline = torch.zeros_like(f)
    surrogate = f + (f - baseline).detach() * log_q
    return GenMD4Loss(surrogate=surrogate.mean(0), nelbo=f.detach().mean(0))
