"""Ancestral sampling on a time grid (MD4 Alg. 2; MDLM's "ddpm" sampler)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput, Timer, call_denoiser, initial_state, StepReporter, reverse_step, nfe_counter
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
    times = time_grid(steps, grid)
    with Timer() as timer, torch.no_grad():
        x = initial_state(denoise, shape, x_init, device)
        nfe = nfe_counter(x.shape[0])
        report = StepReporter(steps, progress, "ancestral", callback)
        for k in range(steps, 0, -1):
            t, s = times[k], times[k - 1]
            active = (x == mask_id).any(-1)
            if not bool(active.any()):
                break
            rows = active.nonzero().squeeze(-1)
            log_mu = adjust_log_probs(call_denoiser(denoise, x, float(t), rows, cond), temperature, top_p)
            nfe[rows.cpu()] += 1
            x[rows] = reverse_step(
                x[rows], log_mu, float(schedule.alpha(s)), float(schedule.alpha(t)), mask_id, generator, last=k == 1
            )
            report.step(x)
        report.close()
    return SampleOutput(tokens=x, nfe=nfe, seconds=timer.seconds, steps=steps, sampler="ancestral")
