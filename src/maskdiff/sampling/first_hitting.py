"""The first-hitting sampler (Zheng et al. 2024): exact in time, no grid, one token per network call.

With n masked positions at time t, each stays masked until s with probability
(1 - alpha_s)/(1 - alpha_t), independently, so the first of them unmasks at the time where
1 - alpha_next = (1 - alpha_t) u^(1/n), u ~ U(0, 1). At that time one uniformly chosen masked position
takes a value drawn from mu(x, t_next) (the position is drawn first, so the network's output layer runs
there only). Samples of a batch advance together, each at its own time;
every call unmasks one position of every active sample, so a sample of length L with alpha_0 = 1 costs
exactly L calls. When alpha_next would exceed alpha_0 (alpha_0 < 1), the remaining masks are filled at
t = 0 in one call.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.denoiser import supports
from maskdiff.process import sample_categorical, uniform
from maskdiff.schedules import Schedule
from maskdiff.sampling.common import SampleOutput, Timer, initial_state, StepReporter, nfe_counter
from maskdiff.sampling.transforms import adjust_log_probs, check_transform


def first_hitting_sample(
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    generator: Optional[torch.Generator] = None,
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    steps: Optional[int] = None,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """Sample by jumping from one unmasking event to the next. ``steps`` is ignored (no time grid)."""
    check_transform(temperature, top_p)
    mask_id = denoise.vocab_size
    alpha_0 = schedule.alpha_0
    with Timer() as timer, torch.no_grad():
        x = initial_state(denoise, shape, x_init, device)
        B, L = x.shape
        nfe = nfe_counter(B)
        one_minus_alpha = torch.full((B,), 1.0 - schedule.alpha_1, dtype=torch.float64, device=x.device)  # at t = 1
        report = StepReporter(int((x == mask_id).sum(-1).max()), progress, "first-hitting", callback)
        while True:
            n = (x == mask_id).sum(-1)
            rows = (n > 0).nonzero().squeeze(-1)
            if len(rows) == 0:
                break
            u = uniform(len(rows), generator, x.device)
            oma = one_minus_alpha[rows] * u ** (1.0 / n[rows].to(torch.float64))
            one_minus_alpha[rows] = oma
            fill_all = oma < 1.0 - alpha_0  # past t = 0: fill every remaining mask
            t_next = torch.where(fill_all, torch.zeros_like(oma), schedule.inverse(1.0 - oma).clamp(0.0, 1.0))
            t_rows = t_next.to(torch.float32)
            xr = x[rows]
            masked = xr == mask_id
            # one uniformly chosen masked position per row (float64 Gumbel over the masked positions)
            scores = torch.zeros(masked.shape, dtype=torch.float64, device=x.device).masked_fill_(~masked, -torch.inf)
            pick = sample_categorical(scores, generator)  # (R,)
            chosen = torch.zeros_like(masked).scatter_(-1, pick[:, None], True)
            update = torch.where(fill_all[:, None], masked, chosen & masked)
            log_mu = adjust_log_probs(_log_probs_at(denoise, xr, t_rows, update, None if cond is None else cond[rows]),
                                      temperature, top_p)  # (N, V) at the positions that take a value
            nfe[rows.cpu()] += 1
            values = sample_categorical(log_mu, generator)
            xr[update] = values
            x[rows] = xr
            report.step(x)
        report.close()
    return SampleOutput(tokens=x, nfe=nfe, seconds=timer.seconds, steps=int(nfe.max()) if B else 0, sampler="first-hitting")


def _log_probs_at(denoise, x: Tensor, t: Tensor, update: Tensor, cond: Optional[Tensor]) -> Tensor:
    """log mu (N, V) at the N positions of ``update`` (B, L), all masked, in row-major order.

    One network call either way; a denoiser with ``masked_log_probs`` (SUBSDenoiser) runs its output layer
    and softmax at those positions only (one per row here, instead of all B * L), others are called whole."""
    extra = {} if cond is None else {"cond": cond}
    if supports(denoise, "masked_log_probs"):
        return denoise.masked_log_probs(x, t, update, **extra)
    return denoise(x, t, **extra)[update]
