"""The forward masking process q(x_t | x_0) and the reverse posterior q(x_s | x_t, x_0).

MD4 Sec. 2 / MDLM Sec. 3: every position is masked independently, with probability 1 - alpha_t.
The posterior of a masked position for s < t keeps the mask with probability (1 - alpha_s)/(1 - alpha_t)
and becomes x_0 otherwise; replacing the one-hot x_0 by mu_theta gives the model's reverse step
(MDLM eq. 7). Unmasked positions never change.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor


def uniform(shape: Union[int, Sequence[int]], generator: Optional[torch.Generator], device) -> Tensor:
    """float64 uniforms on [0, 1) of ``shape``, returned on ``device``: every random draw of maskdiff.

    The rule: a draw is made where its generator lives and then moved to ``device`` (the denoiser's).
    A CUDA generator draws on the GPU with no copy (the fast path; ``Pipeline`` makes its generators on
    the model's device); a CPU generator gives the same uniforms on every device, so the same seed
    gives the same masks on a CPU and a GPU (the evaluator uses this). Without a generator the default
    generator of ``device`` draws. float64 throughout (docs/math.md#samplers).
    """
    where = device if generator is None else generator.device
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=where)
    return u.to(device)


def forward_mask(
    x0: Tensor,
    alpha_t: Tensor,
    mask_id: int,
    generator: Optional[torch.Generator] = None,
    *,
    fixed: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """Draw x_t ~ q(x_t | x_0).

    x0: (B, L) token ids; alpha_t: (B,) or broadcastable to (B, L), the probability of staying unmasked;
    fixed: optional (B, L) bool, positions that are never masked (padding, prompts).
    noise: optional (B, L) float64 uniforms to use instead of drawing from ``generator`` (the trainer
    draws them for the global batch, so a mask does not depend on how the batch is split).
    The uniforms are float64 so that alpha_t within 1e-8 of 0 or 1 is honoured.
    """
    if alpha_t.dim() == 1:
        alpha_t = alpha_t[:, None]
    u = noise if noise is not None else uniform(x0.shape, generator, x0.device)
    masked = u >= alpha_t.to(u.device, torch.float64)  # P(masked) = 1 - alpha_t
    if fixed is not None:
        masked &= ~fixed
    return torch.where(masked, torch.full_like(x0, mask_id), x0)


def reverse_log_probs(
    x_t: Tensor, log_x0: Tensor, alpha_s: Tensor, alpha_t: Tensor, mask_id: int
) -> Tensor:
    """log q(x_s | x_t, x_0) over the V + 1 values (the mask is the last column, id ``mask_id`` = V).

    log_x0: (B, L, V) log-probabilities of x_0: log one-hot for the true posterior, log mu_theta for the
    model's reverse step. alpha_s, alpha_t: (B,), s < t. Returns (B, L, V + 1) in float64. Unmasked
    positions of x_t return the point mass at themselves.
    """
    B, L, V = log_x0.shape
    a_s = alpha_s.to(torch.float64).reshape(B, 1, 1)
    a_t = alpha_t.to(torch.float64).reshape(B, 1, 1)
    log_unmask = torch.log(a_s - a_t) - torch.log1p(-a_t)  # log (alpha_s - alpha_t)/(1 - alpha_t)
    log_stay = torch.log1p(-a_s) - torch.log1p(-a_t)  # log (1 - alpha_s)/(1 - alpha_t)
    out = torch.cat(
        [log_x0.to(torch.float64) + log_unmask, log_stay.expand(B, L, 1)], dim=-1
    )  # (B, L, V + 1)
    is_masked = (x_t == mask_id)[..., None]
    point = torch.full_like(out, -torch.inf).scatter_(-1, x_t[..., None].clamp(max=V), 0.0)
    return torch.where(is_masked, out, point)


def sample_categorical(log_probs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Gumbel-max draw over the last axis with float64 noise.

    float32 Gumbel noise is capped near 16.6, so values below about 6e-8 of the largest probability
    would be drawn too rarely (Zheng et al. 2024; docs/math.md#samplers). float64 removes that cap.
    """
    u = uniform(log_probs.shape, generator, log_probs.device)
    gumbel = -torch.log(-torch.log(u.clamp_(min=torch.finfo(torch.float64).tiny)))
    return torch.argmax(log_probs.to(torch.float64) + gumbel, dim=-1)
