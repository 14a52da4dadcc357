"""The discrete-time NELBO without the SUBS simplifications: MDLM's parameterization ablation
(docs/math.md#ablation).

SUBS (MDLM Sec. 3.2) makes two choices: the network gives the mask zero probability as a clean token,
and an unmasked input position is carried over unchanged. Switching either off gives back the general
absorbing-state model of D3PM, whose loss is the full per-position KL at each of T steps plus a
reconstruction term. With ``x_theta`` the network's distribution over the V + 1 values (mask last),
the model's reverse step at a masked position is (Bayes rule over the forward kernels)

    p_theta(z_s = v | z_t = m) = (alpha_s - alpha_t) x_v / Z_t,
    p_theta(z_s = m | z_t = m) = (x_m + (1 - alpha_s)(1 - x_m)) / Z_t,    Z_t = x_m + (1 - alpha_t)(1 - x_m),

and the true posterior puts a = (alpha_s - alpha_t)/(1 - alpha_t) on x_0 and b = 1 - a on the mask, so

    KL_n = a (log(1 + x_m alpha_t/(1 - alpha_t)) - log x_{x_0})
         + b (log(1 + x_m alpha_t/(1 - alpha_t)) - log(1 + x_m alpha_s/(1 - alpha_s))).

With x_m = 0 this is a * (-log x_{x_0}): exactly the SUBS discrete term. Unmasked positions have zero KL
(the forward process never changes them). Without carry-over the network must also predict the
unmasked tokens at t = 0: the reconstruction term -log x_theta(x_0 | z_0 = x_0) over every position,
which carry-over makes exactly 0.

When alpha_0 < 1 (the geometric schedule: alpha_0 = exp(-s_min)) z_0 is not x_0: each token is already
masked with probability 1 - alpha_0, and the bound needs the decoder term E_{z_0 ~ q(z_0|x_0)}[-log
x_theta(z_0, 0)[x_0]] summed over every position (:func:`decoder_term`; docs/math.md (eq. 12)). With
carry-over it is the sum over the positions masked at t = 0 only; with alpha_0 = 1 it is the term above.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from maskdiff.process import forward_mask
from maskdiff.schedules import Schedule

FullLogProbs = Callable[[Tensor, Tensor], Tensor]  # (x_t (B, L), t (B,)) -> log x_theta (B, L, V + 1)


def full_kl(log_x: Tensor, x0: Tensor, masked: Tensor, alpha_s: Tensor, alpha_t: Tensor) -> Tensor:
    """Sum over masked positions of KL(q(z_s | z_t, x_0) || p_theta(z_s | z_t)).

    log_x: (B, L, V + 1) with the mask column last; alpha_s, alpha_t: (B,) float64, s < t. Returns (B,).
    """
    V = log_x.shape[-1] - 1
    log_x = log_x.to(torch.float64)
    a_s, a_t = alpha_s[:, None], alpha_t[:, None]
    x_m = log_x[..., V].exp()  # (B, L)
    log_x0 = log_x[..., :V].gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
    a = (a_s - a_t) / (1.0 - a_t)
    b = (1.0 - a_s) / (1.0 - a_t)
    log_zt = torch.log1p(x_m * a_t / (1.0 - a_t))
    # b = 0 at the last step (alpha_s = 1): the mask term vanishes; keep 0/0 out of it.
    safe = b > 0
    log_zs = torch.log1p(x_m * torch.where(safe, a_s / torch.where(safe, 1.0 - a_s, 1.0), 0.0))
    kl = a * (log_zt - log_x0) + torch.where(safe, b * (log_zt - log_zs), 0.0)
    return torch.where(masked, kl, torch.zeros_like(kl)).sum(-1)


def full_kl_discrete_term(
    log_probs: FullLogProbs,
    x0: Tensor,
    step: Tensor,
    steps: int,
    schedule: Schedule,
    mask_id: int,
    generator: Optional[torch.Generator] = None,
    *,
    valid: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
    step_prob: Optional[Tensor] = None,
) -> Tensor:
    """One-sample estimate of sum_{i=1}^T E_q[sum_n KL_n]: step i (B,) uniform on 1..T, times T; or drawn
    with probability step_prob (B,) (loss.masked.importance_steps), divided by it. (B,)."""
    t = step.to(torch.float64) / steps
    s = (step.to(torch.float64) - 1.0) / steps
    alpha_t, alpha_s = schedule.alpha(t), schedule.alpha(s)
    fixed = None if valid is None else ~valid
    x_t = forward_mask(x0, alpha_t, mask_id, generator, fixed=fixed, noise=noise)
    kl = full_kl(_call(log_probs, x_t, t.float(), valid), x0, x_t == mask_id, alpha_s, alpha_t)
    if step_prob is not None:
        return (kl / step_prob).float()
    return (steps * kl).float()


def _call(log_probs: FullLogProbs, x_t: Tensor, t: Tensor, valid: Optional[Tensor]) -> Tensor:
    """log_probs(x_t, t), told which positions are padding when there is any (it is then not attended to)."""
    return log_probs(x_t, t) if valid is None else log_probs(x_t, t, valid=valid)


def decoder_term(
    log_probs: FullLogProbs,
    x0: Tensor,
    schedule: Schedule,
    mask_id: int,
    generator: Optional[torch.Generator] = None,
    *,
    valid: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """One-sample estimate of E_{z_0 ~ q(z_0 | x_0)}[-log x_theta(z_0, 0)[n, x_0^n]] summed over the real
    positions: the t = 0 end of the discrete bound. (B,).

    z_0 keeps each token with probability alpha_0 (masks are drawn as :func:`forward_mask` draws them;
    ``noise`` (B, L) uniforms fix them). With alpha_0 = 1, z_0 = x_0 and this is -log x_theta(x_0 | x_0),
    the reconstruction that carry-over makes exactly 0; carry-over makes the unmasked positions contribute 0.
    """
    alpha_0 = schedule.alpha(torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device))
    fixed = None if valid is None else ~valid
    z0 = forward_mask(x0, alpha_0, mask_id, generator, fixed=fixed, noise=noise)
    log_x = _call(log_probs, z0, torch.zeros(x0.shape[0], device=x0.device), valid)
    nll = -log_x.to(torch.float64).gather(-1, x0[..., None]).squeeze(-1)
    if valid is not None:
        nll = torch.where(valid, nll, torch.zeros_like(nll))
    return nll.sum(-1).float()
