"""Ancestral sampling on a time grid (MD4 Alg. 2; MDLM's "ddpm" sampler)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput, Timer, initial_state, progress_bar, reverse_step


def ancestral_sample(
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    steps: int,
    generator: Optional[torch.Generator] = None,
    grid: str = "uniform",
    x_init: Optional[Tensor] = None,
    device=None,
    progress: bool = False,
) -> SampleOutput:
    """Run the T-step reverse chain from all masks (or from ``x_init``) to t = 0.

    Each step calls the network on every sample that still has a mask, so NFE per sample is at most T.
    The last step fills every remaining mask from mu.
    """
    mask_id = denoise.vocab_size
    times = time_grid(steps, grid)
    with Timer() as timer, torch.no_grad():
        x = initial_state(denoise, shape, x_init, device)
        nfe = torch.zeros(x.shape[0], dtype=torch.long)
        bar = progress_bar(steps, progress, "ancestral")
        for k in range(steps, 0, -1):
            t, s = times[k], times[k - 1]
            active = (x == mask_id).any(-1)
            if not bool(active.any()):
                break
            rows = active.nonzero().squeeze(-1)
            log_mu = denoise(x[rows], torch.full((len(rows),), float(t), device=x.device))
            nfe[rows.cpu()] += 1
            x[rows] = reverse_step(
                x[rows], log_mu, float(schedule.alpha(s)), float(schedule.alpha(t)), mask_id, generator, last=k == 1
            )
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return SampleOutput(tokens=x, nfe=nfe, seconds=timer.seconds, steps=steps, sampler="ancestral")
