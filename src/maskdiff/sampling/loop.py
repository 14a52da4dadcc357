"""The reverse chain on a time grid, written once: from all masks (or ``x_init``) at t = 1 down the grid
to t = 0, calling the denoiser on the samples that still have a mask and handing each step to a step
function. Ancestral (MD4 Alg. 2), mean / greedy and GenMD4 sampling are step functions of this loop.

    step(x, log_mu, s, t, last=...) -> x_s        x: (N, L) rows that still hold a mask; log_mu: (N, L, V)

s < t are grid points; ``last`` marks the step to s = 0, which must fill every remaining mask.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from maskdiff.sampling.common import SampleOutput, StepReporter, Timer, call_denoiser, initial_state, nfe_counter

StepFn = Callable[..., Tensor]


def grid_sample(
    denoise,
    step: StepFn,
    shape: Tuple[int, int],
    times: Tensor,
    *,
    name: str,
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """Run ``step`` over the grid ``times`` (T + 1 points, times[0] = 0, times[T] = 1), newest state first.

    Each step calls the network on every sample that still has a mask, so NFE per sample is at most T;
    the chain stops early once nothing is masked. The state lives on ``device`` (or ``x_init``'s, moved
    there), the denoiser's; the NFE counters stay on the CPU (sampling/common.py, "Devices")."""
    mask_id = denoise.vocab_size
    steps = len(times) - 1
    with Timer() as timer, torch.no_grad():
        x = initial_state(denoise, shape, x_init, device)
        nfe = nfe_counter(x.shape[0])
        report = StepReporter(steps, progress, name, callback)
        for k in range(steps, 0, -1):
            t, s = times[k], times[k - 1]
            active = (x == mask_id).any(-1)
            if not bool(active.any()):
                break
            rows = active.nonzero().squeeze(-1)
            log_mu = call_denoiser(denoise, x, float(t), rows, cond)
            nfe[rows.cpu()] += 1
            x[rows] = step(x[rows], log_mu, s, t, last=k == 1)
            report.step(x)
        report.close()
    return SampleOutput(tokens=x, nfe=nfe, seconds=timer.seconds, steps=steps, sampler=name)
