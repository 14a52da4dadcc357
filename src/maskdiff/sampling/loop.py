"""The reverse chain on a time grid, written once: from all masks (or ``x_init``) at t = 1 down the grid
to t = 0, calling the denoiser on the samples that still have a mask and handing each step to a step
function. Ancestral (MD4 Alg. 2), mean / greedy and GenMD4 sampling are step functions of this loop;
the caching and confidence samplers, which choose differently which rows call the network, share its
scaffolding, :class:`Chain` (the state, the network calls and their count, the progress, the clock).

    step(x, log_mu, s, t, last=...) -> x_s        x: (N, L) rows that still hold a mask; log_mu: (N, L, V)

s < t are grid points; ``last`` marks the step to s = 0, which must fill every remaining mask.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from maskdiff.sampling.common import SampleOutput, StepReporter, Timer, call_denoiser, initial_state, masks_kept, nfe_counter
from maskdiff.sampling.transforms import adjust_log_probs

StepFn = Callable[..., Tensor]
FillFn = Callable[..., Tuple[Tensor, Tensor]]


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
    with Chain(denoise, shape, len(times) - 1, name, x_init=x_init, device=device, progress=progress, callback=callback) as chain:
        x = chain.x
        for k in range(chain.steps, 0, -1):
            t, s = times[k], times[k - 1]
            active = (x == mask_id).any(-1)
            if not bool(active.any()):
                break
            rows = active.nonzero().squeeze(-1)
            log_mu = chain.call(rows, t, cond)
            x[rows] = step(x[rows], log_mu, s, t, last=k == 1)
            chain.report.step(x)
    return chain.output()


class Chain:
    """What every grid sampler shares, as a context manager: the state ``x`` (B, L) on the denoiser's
    device (from ``x_init`` or all masks), per-sample network-call counters on the CPU, the progress
    bar / callback (``report.step(x)`` after each step), the clock and ``torch.no_grad``.

        with Chain(denoise, shape, steps, "cached", ...) as chain:
            log_mu = chain.call(rows, t, cond)   # the network on those rows of chain.x, counted
        return chain.output()
    """

    def __init__(self, denoise, shape: Tuple[int, int], steps: int, name: str, *, x_init: Optional[Tensor] = None,
                 device=None, progress: bool = False, callback=None):
        self.denoise, self.shape, self.steps, self.name = denoise, shape, steps, name
        self._x_init, self._device, self._progress, self._callback = x_init, device, progress, callback
        self._timer, self._no_grad = Timer(), torch.no_grad()

    def __enter__(self) -> "Chain":
        self._timer.__enter__()
        self._no_grad.__enter__()
        self.x = initial_state(self.denoise, self.shape, self._x_init, self._device)
        self.nfe = nfe_counter(self.x.shape[0])
        self.report = StepReporter(self.steps, self._progress, self.name, self._callback)
        return self

    def call(self, rows: Tensor, t, cond: Optional[Tensor] = None) -> Tensor:
        """log mu (len(rows), L, V) of those rows of the state at time t; counts one call per row."""
        log_mu = call_denoiser(self.denoise, self.x, float(t), rows, cond)
        self.nfe[rows.cpu()] += 1
        return log_mu

    def __exit__(self, *exc) -> None:
        self.report.close()
        self._no_grad.__exit__(*exc)
        self._timer.__exit__(*exc)

    def output(self) -> SampleOutput:
        return SampleOutput(tokens=self.x, nfe=self.nfe, seconds=self._timer.seconds, steps=self.steps, sampler=self.name)


def counted_steps(chain: "Chain", schedule, times: Tensor, fill: FillFn, *, cond: Optional[Tensor] = None, temperature: float = 1.0,
                  top_p: float = 1.0) -> None:
    """The loop of the samplers that fix how many masks each step fills (the ancestral chain's expected count,
    :func:`~maskdiff.sampling.common.masks_kept`) and choose which: the confidence and dilated samplers.
    At each step the rows with masks to fill call the network, and

        fill(log_mu, x, masked, count, k, rows) -> (update, values)

    (log_mu (N, L, V) after temperature / top-p; x and masked (N, L); count (N,) masks to fill; k the step,
    T .. 1; rows (N,) their indices) returns the positions to fill, (N, L) bool with ``count`` True per row
    among ``masked``, and their values in row-major order."""
    x, mask_id = chain.x, chain.denoise.vocab_size
    for k in range(chain.steps, 0, -1):
        t, s = times[k], times[k - 1]
        n_t = (x == mask_id).sum(-1)
        count = n_t - masks_kept(n_t, schedule, s, t, last=k == 1)
        rows = (count > 0).nonzero().squeeze(-1)
        if len(rows):
            log_mu = adjust_log_probs(chain.call(rows, t, cond), temperature, top_p)
            xr = x[rows]
            update, values = fill(log_mu, xr, xr == mask_id, count[rows], k, rows)
            xr[update] = values
            x[rows] = xr
        chain.report.step(x)
