"""Exact answers for conditional models (fine-tuning on prompt/response pairs): the NELBO of the free
positions of a row given its condition (the prompt, never masked), by enumeration of the masks of the
free positions and quadrature over t, and the true -log p(response | prompt) of a toy law."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from maskdiff.exact.enumeration import _pattern_costs, _pattern_probs, gauss_legendre, mask_patterns
from maskdiff.schedules import Schedule


def exact_conditional_nelbo(denoise, x0: Tensor, cond: Tensor, schedule: Schedule, *, t_min: float = 0.0,
                            panels: int = 64, order: int = 16) -> Tensor:
    """Continuous NELBO of each row's free positions (``cond`` False) given its condition (``cond`` True,
    never masked): sum over the 2^R masks M of the R free positions of q(M | t) C(M), integrated with
    w(t) over [t_min, 1], plus the reconstruction R(t_min) and the prior R alpha_1 log V. (B,) float64."""
    nodes, weights = gauss_legendre(t_min, 1.0, panels, order)
    w = schedule.weight(nodes) * weights  # (T,)
    oma_min = schedule.one_minus_alpha(torch.tensor([t_min], dtype=torch.float64))
    out = torch.zeros(x0.shape[0], dtype=torch.float64)
    for pattern in torch.unique(cond, dim=0):  # the rows with one condition pattern, together
        rows = (cond == pattern).all(-1).nonzero(as_tuple=True)[0]
        free = (~pattern).nonzero(as_tuple=True)[0]
        small = mask_patterns(free.numel())  # (P, R) masks of the free positions
        patterns = torch.zeros((small.shape[0], x0.shape[1]), dtype=torch.bool)
        patterns[:, free] = small
        q = _pattern_probs(small, schedule.one_minus_alpha(nodes))  # (T, P)
        if denoise.time_independent:
            diffusion = _pattern_costs(denoise, x0[rows], patterns, 0.5) @ (q * w[:, None]).sum(0)
        else:
            diffusion = sum(_pattern_costs(denoise, x0[rows], patterns, float(n)) @ wq for n, wq in zip(nodes, q * w[:, None]))
        recon = 0.0
        if float(oma_min) != 0.0:
            recon = _pattern_costs(denoise, x0[rows], patterns, t_min) @ _pattern_probs(small, oma_min)[0]
        out[rows] = diffusion + recon + free.numel() * schedule.alpha_1 * np.log(denoise.vocab_size)
    return out


def true_conditional_nll(sequences: Tensor, probs: Tensor, x0: Tensor, cond: Tensor) -> Tensor:
    """-log p(x0's free positions | x0's condition positions) under the law ``probs`` over ``sequences``
    (toy_distribution): -log p(x0) + log sum of p(y) over the y that agree with x0 on the condition. (B,)."""
    out = torch.zeros(x0.shape[0], dtype=torch.float64)
    for b in range(x0.shape[0]):
        same = (sequences == x0[b]).all(-1)
        agree = ((sequences == x0[b]) | ~cond[b]).all(-1)
        out[b] = -torch.log(probs[same].sum()) + torch.log(probs[agree].sum())
    return out
