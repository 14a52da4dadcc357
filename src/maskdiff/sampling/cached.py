"""The caching sampler (MDLM Sec. 3.2, "ddpm_cache"), cached per sample, and its cache.

With a time-independent denoiser, mu_theta(x_t) only changes when x_t changes. Most ancestral steps
unmask nothing in a given sample (with T > L most steps cannot), so that sample's log mu is reused.
The cache is kept per sample (:class:`StepCache`, also used by the ReMDM samplers): the network runs
only on the rows that changed since their last call, so every sample makes at most min(T, L) calls,
whatever the batch size. The law is that of the ancestral chain on the same grid.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.denoiser import Denoiser, require_time_independent
from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput, reverse_step, rows_of
from maskdiff.sampling.loop import Chain
from maskdiff.sampling.transforms import adjust_log_probs, check_transform


class StepCache:
    """log mu of each sample's state at its last network call, (B, L, V), refreshed only for the samples
    whose state changed since (``enabled=False`` refreshes every requested row at every step).

        cache = StepCache(chain, temperature, top_p)
        log_mu = cache.log_mu(rows, t, cond)   # rows: sorted indices of samples that still hold a mask
        ...                                     # the step, x_new from chain.x
        cache.changed(x_new_rows, rows)        # before chain.x[rows] = x_new_rows
    """

    def __init__(self, chain: Chain, temperature: float, top_p: float, *, enabled: bool = True):
        self.chain, self.temperature, self.top_p, self.enabled = chain, temperature, top_p, enabled
        self.store: Optional[Tensor] = None  # (B, L, V)
        self.stale = torch.ones(chain.x.shape[0], dtype=torch.bool, device=chain.x.device)

    def log_mu(self, rows: Tensor, t, cond: Optional[Tensor] = None) -> Tensor:
        """(len(rows), L, V) log mu (after temperature and top-p) of those rows, calling the network
        (counted by the chain) on the stale ones only."""
        need = rows[self.stale[rows]] if self.enabled else rows
        if len(need):
            fresh = adjust_log_probs(self.chain.call(need, t, cond), self.temperature, self.top_p)
            if self.store is None:
                self.store = torch.empty((len(self.stale),) + fresh.shape[1:], dtype=fresh.dtype, device=fresh.device)
            self.store[need] = fresh
            self.stale[need] = False
        return rows_of(self.store, rows)

    def changed(self, new: Tensor, rows: Optional[Tensor] = None) -> None:
        """Mark stale the samples whose new state differs from the chain's current one: ``new`` (len(rows), L)
        for those rows, or (B, L) for every sample when ``rows`` is None."""
        if rows is None:
            self.stale |= (new != self.chain.x).any(-1)
        else:
            self.stale[rows] |= (new != self.chain.x[rows]).any(-1)


def cached_sample(
    denoise: Denoiser,
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
        cache = StepCache(chain, temperature, top_p)
        for k in range(steps, 0, -1):
            t, s = times[k], times[k - 1]
            active = (x == mask_id).any(-1)
            if not bool(active.any()):
                break
            rows = active.nonzero().squeeze(-1)
            new = reverse_step(
                x[rows], cache.log_mu(rows, t, cond), float(schedule.alpha(s)), float(schedule.alpha(t)), mask_id, generator,
                last=k == 1,
            )
            cache.changed(new, rows)
            x[rows] = new
            chain.report.step(x)
    return chain.output()
