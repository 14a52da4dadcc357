"""SEDD's score-entropy loss for the absorbing (masking) process, the baseline both papers compare with
(docs/math.md#sedd).

SEDD (Lou et al., 2024, "Discrete diffusion modeling by estimating the ratios of the data
distribution") learns the concrete score instead of the clean-data posterior: at a masked position n,
s(x_t)[n, v] ~ q_t(x_t with position n set to v) / q_t(x_t). For masking with schedule alpha_t the true
score is r_t mu(x_t)[n, v], with r_t = alpha_t / (1 - alpha_t) and mu the posterior over clean tokens.
The network's unnormalised logits l give log s = l + log r_t (SEDD's scaling of the absorbing score),
and the diffusion-weighted denoising score entropy of one masked position, with forward rate
sigma_t = -alpha'_t / alpha_t, is

    sigma_t [ sum_v s_v - r_t log s_{x0} + r_t (log r_t - 1) ]  =  w(t) [ Z - 1 - l_{x0} ],

where Z = sum_v exp(l_v) and w(t) = -alpha'_t / (1 - alpha_t) = sigma_t r_t is MD4's weight. Split as

    Z - 1 - l_{x0}  =  -log softmax(l)_{x0}  +  (Z - 1 - log Z),

it is MD4's masked cross-entropy plus a penalty that is never negative and vanishes exactly when the
scores are normalised (sum_v s_v = r_t). So the score-entropy bound of a network is never below the
masked-diffusion bound of the same network read as a softmax, and equals it when the scores are
normalised: the relation MDLM's comparison with SEDD rests on.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.loss.masked import DEFAULT_T_MIN, _valid_kwarg, continuous_diffusion_term, sum_per_sequence
from maskdiff.schedules import Schedule


def score_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Z - 1 - l[target] per row, computed as (expm1(log Z) - log Z) + (log Z - l[target]) so that both
    parts are accurate near their zero. logits: (..., V) unnormalised log scores; target: (...)."""
    log_z = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, target[..., None]).squeeze(-1)
    return (torch.expm1(log_z) - log_z) + (log_z - picked)


def masked_score_entropy(scores, x_t: Tensor, t: Tensor, x0: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """sum over the masked positions of x_t of Z - 1 - l[n, x0^n], (B,): the score-entropy counterpart
    of the masked cross-entropy C_t, from logits at the masked positions only."""
    masked = x_t == scores.vocab_size
    logits = scores.masked_logits(x_t, t, masked, **_valid_kwarg(scores, valid))  # (N, V)
    return sum_per_sequence(score_entropy(logits, x0[masked]), masked)


def score_entropy_term(
    scores,
    x0: Tensor,
    t: Tensor,
    schedule: Schedule,
    generator: Optional[torch.Generator] = None,
    *,
    t_min: float = DEFAULT_T_MIN,
    valid: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
    time_sampler: str = "uniform",
) -> Tensor:
    """One-sample estimate of int_{t_min}^1 w(t) E_q[sum_{n masked} (Z - 1 - l[n, x0^n])] dt, (B,).

    scores: has ``vocab_size`` and ``masked_logits(x_t, t, masked) -> (N, V)``, the unnormalised logits
    at the masked positions (:class:`~maskdiff.denoiser.SUBSDenoiser` has it). The masks, t and the
    weight are those of :func:`~maskdiff.loss.masked.continuous_diffusion_term`, with the score entropy
    in place of the cross-entropy; the same noise gives the same masks.
    """
    if not hasattr(scores, "masked_logits"):
        raise MaskdiffError("the score-entropy loss needs unnormalised logits (a denoiser with masked_logits)")
    return continuous_diffusion_term(scores, x0, t, schedule, generator, t_min=t_min, valid=valid, noise=noise,
                                     cost=masked_score_entropy, time_sampler=time_sampler)
