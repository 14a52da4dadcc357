"""Classifier-free guidance for class-conditional denoisers (Ho & Salimans 2022; docs/math.md#samplers).

    log mu_guided = (1 + w) log mu(. | c) - w log mu(. | no class),   renormalized over the V values.

A class-conditional denoiser is called ``denoise(x_t, t, cond=labels)`` with labels (B,); the
"no class" input is ``null_class`` (the label the model was trained with when the class was dropped).
"""
from __future__ import annotations

import torch
from torch import Tensor

from maskdiff.denoiser import carry_over


class GuidedDenoiser:
    """Wraps a class-conditional denoiser; samplers pass ``cond`` row-sliced like x_t."""

    def __init__(self, denoise, guidance: float, null_class: int):
        self.denoise = denoise
        self.guidance = float(guidance)
        self.null_class = null_class
        self.vocab_size = denoise.vocab_size
        self.mask_id = denoise.vocab_size
        self.time_independent = denoise.time_independent

    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        log_c = self.denoise(x_t, t, cond=cond)
        if self.guidance == 0.0:
            return log_c
        log_u = self.denoise(x_t, t, cond=torch.full_like(cond, self.null_class))
        # finite floor so that -inf entries (values the model rules out) do not produce inf - inf
        floor = torch.finfo(log_c.dtype).min / 4
        mixed = (1.0 + self.guidance) * log_c.clamp(min=floor) - self.guidance * log_u.clamp(min=floor)
        return carry_over(torch.log_softmax(mixed, dim=-1), x_t, self.mask_id)
