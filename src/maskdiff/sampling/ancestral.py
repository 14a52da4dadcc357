"""Ancestral sampling on a time grid (MD4 Alg. 2; MDLM's "ddpm" sampler)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput, reverse_step
from maskdiff.sampling.loop import grid_sample
from maskdiff.sampling.transforms import adjust_log_probs, check_transform


def ancestral_sample(
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    steps: int,
    generator: Optional[torch.Generator] = None,
    grid: str = "uniform",
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """Run the T-step reverse chain from all masks (or from ``x_init``) to t = 0.

    Each step calls the network on every sample that still has a mask, so NFE per sample is at most T.
    The last step fills every remaining mask from mu. ``x_init``: (B, L) with fixed tokens where it is
    not the mask id (prompts, infilling; never resampled). ``cond``: (B, ...) per-sample conditioning
    passed as ``denoise(x, t, cond=...)``. ``temperature`` and ``top_p`` change mu (biased by design).
    """
    check_transform(temperature, top_p)
    mask_id = denoise.vocab_size

    def step(x: Tensor, log_mu: Tensor, s, t, *, last: bool) -> Tensor:
        log_mu = adjust_log_probs(log_mu, temperature, top_p)
        return reverse_step(x, log_mu, float(schedule.alpha(s)), float(schedule.alpha(t)), mask_id, generator, last=last)

    return grid_sample(denoise, step, shape, time_grid(steps, grid), name="ancestral", x_init=x_init, cond=cond,
                       device=device, progress=progress, callback=callback)
