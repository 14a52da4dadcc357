"""The caching sampler (MDLM Sec. 3.2, "ddpm_cache"), cached per sample.

With a time-independent denoiser, mu_theta(x_t) only changes when x_t changes. Most ancestral steps
unmask nothing in a given sample (with T > L most steps cannot), so that sample's log mu is reused.
The cache is kept per sample: the network runs only on the rows that changed since their last call,
so every sample makes at most min(T, L) calls, whatever the batch size. The law is that of the
ancestral chain on the same grid.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.denoiser import require_time_independent
from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput, reverse_step
from maskdiff.sampling.loop import Chain
from maskdiff.sampling.transforms import adjust_log_probs, check_transform


def cached_sample(
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
    """Ancestral sampling that calls the network only for samples whose tokens changed."""
    require_time_independent(denoise, "the caching sampler")
    check_transform(temperature, top_p)
    mask_id = denoise.vocab_size
    times = time_grid(steps, grid)
    with Chain(denoise, shape, steps, "cached", x_init=x_init, device=device, progress=progress, callback=callback) as chain:
        x = chain.x
        B = x.shape[0]
        cache: Optional[Tensor] = None  # (B, L, V) log mu of each sample's current state
        stale = torch.ones(B, dtype=torch.bool, device=x.device)
        for k in range(steps, 0, -1):
            t, s = times[k], times[k - 1]
            active = (x == mask_id).any(-1)
            if not bool(active.any()):
                break
            need = (stale & active).nonzero().squeeze(-1)
            if len(need):
                fresh = adjust_log_probs(chain.call(need, t, cond), temperature, top_p)
                if cache is None:
                    cache = torch.empty((B,) + fresh.shape[1:], dtype=fresh.dtype, device=fresh.device)
                cache[need] = fresh
                stale[need] = False
            rows = active.nonzero().squeeze(-1)
            new = reverse_step(
                x[rows], cache[rows], float(schedule.alpha(s)), float(schedule.alpha(t)), mask_id, generator, last=k == 1
            )
            stale[rows] |= (new != x[rows]).any(-1)
            x[rows] = new
            chain.report.step(x)
    return chain.output()
