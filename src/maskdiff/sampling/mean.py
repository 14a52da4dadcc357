"""MD4's "mean" parameterization of the reverse step, and greedy (argmax) decoding.

mean: each masked position unmasks with an independent Bernoulli((alpha_s - alpha_t)/(1 - alpha_t))
and, if it does, takes a value drawn from mu. This is the same per-step law as the ancestral sampler
(docs/math.md#samplers), drawn in two stages. greedy: the same unmasking, but the value is argmax mu (biased).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.process import sample_categorical, uniform
from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.loop import grid_sample
from maskdiff.sampling.transforms import adjust_log_probs, check_transform


def mean_step(x: Tensor, log_mu: Tensor, alpha_s: float, alpha_t: float, mask_id: int, generator, *, last: bool, greedy: bool = False) -> Tensor:
    """x: (B, L), log mu: (B, L, V). The uniforms are float64 and drawn for every position."""
    u = uniform(x.shape, generator, x.device)
    p_unmask = 1.0 if last else (alpha_s - alpha_t) / (1.0 - alpha_t)
    unmask = (x == mask_id) & (u < p_unmask)
    if not bool(unmask.any()):
        return x
    chosen = log_mu[unmask]
    values = chosen.argmax(-1) if greedy else sample_categorical(chosen, generator)
    out = x.clone()
    out[unmask] = values
    return out


def mean_sample(
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    steps: int,
    generator: Optional[torch.Generator] = None,
    grid: str = "uniform",
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    greedy: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """T-step reverse chain with the two-stage draw; ``greedy`` takes argmax mu for each unmasked value."""
    check_transform(temperature, top_p)
    mask_id = denoise.vocab_size

    def step(x: Tensor, log_mu: Tensor, s, t, *, last: bool) -> Tensor:
        log_mu = adjust_log_probs(log_mu, temperature, top_p)
        return mean_step(x, log_mu, float(schedule.alpha(s)), float(schedule.alpha(t)), mask_id, generator, last=last, greedy=greedy)

    return grid_sample(denoise, step, shape, time_grid(steps, grid), name="greedy" if greedy else "mean", x_init=x_init,
                       cond=cond, device=device, progress=progress, callback=callback)


def greedy_sample(denoise, schedule, shape, **kwargs) -> SampleOutput:
    """:func:`mean_sample` with argmax values (biased: it is not a sampler of p)."""
    return mean_sample(denoise, schedule, shape, greedy=True, **kwargs)
