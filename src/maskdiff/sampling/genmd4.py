"""Sampling GenMD4 (MD4 Sec. 5), where the masking schedule depends on the token value.

For s < t a masked position becomes v with probability mu_v (alpha_{s,v} - alpha_{t,v})/(1 - alpha_{t,v})
and stays masked with the rest, sum_v mu_v (1 - alpha_{s,v})/(1 - alpha_{t,v}) (docs/math.md#genmd4). The denoiser
must see t: the posterior over x_0 given x_t depends on t when the schedule depends on the value.
First-hitting and caching do not apply.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.process import sample_categorical
from maskdiff.schedules import PerTokenPolynomial, time_grid
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.loop import grid_sample


def genmd4_step_log_probs(log_mu: Tensor, schedule: PerTokenPolynomial, s: float, t: float) -> Tensor:
    """(N, V) log mu of masked positions -> (N, V + 1) log-probabilities of x_s (mask last), float64."""
    oma_s = schedule.one_minus_alpha(torch.tensor(s, dtype=torch.float64, device=log_mu.device))  # (V,)
    oma_t = schedule.one_minus_alpha(torch.tensor(t, dtype=torch.float64, device=log_mu.device))
    stay = oma_s / oma_t  # (1 - alpha_s)/(1 - alpha_t) per value
    lm = log_mu.to(torch.float64)
    log_unmask = lm + torch.log1p(-stay)
    log_stay = torch.logsumexp(lm + torch.log(stay), dim=-1, keepdim=True)
    return torch.cat([log_unmask, log_stay], dim=-1)


def genmd4_sample(
    denoise,
    schedule: PerTokenPolynomial,
    shape: Tuple[int, int],
    *,
    steps: int,
    generator: Optional[torch.Generator] = None,
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """T steps on the uniform grid; the last step fills every remaining mask from mu."""
    mask_id = denoise.vocab_size

    def step(x: Tensor, log_mu: Tensor, s, t, *, last: bool) -> Tensor:
        masked = x == mask_id
        if last:
            x[masked] = sample_categorical(log_mu[masked], generator)
        else:
            x[masked] = sample_categorical(genmd4_step_log_probs(log_mu[masked], schedule, float(s), float(t)), generator)
        return x

    return grid_sample(denoise, step, shape, time_grid(steps, "uniform"), name="genmd4", x_init=x_init, cond=cond,
                       device=device, progress=progress, callback=callback)
