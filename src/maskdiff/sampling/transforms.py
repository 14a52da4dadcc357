"""Biased-by-design changes to mu before a draw: temperature and nucleus (top-p) truncation."""
from __future__ import annotations

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError


def check_transform(temperature: float, top_p: float) -> None:
    if not temperature > 0:
        raise MaskdiffError(f"temperature must be positive, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise MaskdiffError(f"top_p must be in (0, 1], got {top_p}")


def adjust_log_probs(log_mu: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """log mu / temperature, renormalized, then keep the smallest set of values whose mass reaches top_p.

    (..., V) -> (..., V). With temperature 1 and top_p 1 the input is returned unchanged. The most
    likely value is always kept; rows that are one-hot (carried-over positions) stay one-hot.
    """
    check_transform(temperature, top_p)
    if temperature == 1.0 and top_p == 1.0:
        return log_mu
    out = torch.log_softmax(log_mu / temperature, dim=-1) if temperature != 1.0 else log_mu
    if top_p < 1.0:
        sorted_lp, order = out.sort(dim=-1, descending=True)
        mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of strictly more likely values
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = torch.log_softmax(out.masked_fill(drop, -torch.inf), dim=-1)
    return out
