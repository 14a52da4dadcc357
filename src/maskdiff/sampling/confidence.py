"""Confidence-based decoding (MaskGIT, Chang et al. 2022; LLaDA's low-confidence remasking).

At each grid step a sample keeps the same number of masks that the ancestral chain would keep in
expectation, n_s = round(n_t (1 - alpha_s)/(1 - alpha_t)), and fills the n_t - n_s masked positions
where the model is most confident: a candidate value is drawn from mu (or taken as argmax) at every
masked position, and the positions with the largest score are kept. The score is the probability mu
gives the candidate ('probability', MaskGIT and LLaDA) or the margin between the two largest
probabilities of mu, whatever the candidate ('margin': Kim et al. 2025, "Train for the worst, plan for
the best", adaptive order on Sudoku; a position where two values compete waits even when one of them is
likely). Biased by design: it prefers easy, frequent tokens and is known to repeat; measure repeated
n-grams and entropy beside it.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.process import sample_categorical, uniform
from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.loop import Chain, counted_steps
from maskdiff.sampling.transforms import check_transform

SCORES = ("probability", "margin")
"""What ranks the masked positions: mu of the candidate, or the gap between mu's two largest probabilities."""


def confidence_sample(
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    steps: int,
    generator: Optional[torch.Generator] = None,
    grid: str = "uniform",
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    choose: str = "sample",
    score: str = "probability",
    confidence_noise: float = 0.0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """choose: 'sample' (candidate ~ mu, LLaDA) or 'argmax' (MaskGIT's greedy candidate).
    score: 'probability' (mu of the candidate) or 'margin' (largest minus second largest probability of mu).
    confidence_noise: scale of Gumbel noise added to the log-score, annealed linearly to 0 (MaskGIT)."""
    if choose not in ("sample", "argmax"):
        raise MaskdiffError(f"unknown candidate rule {choose!r}; choose one of: sample, argmax")
    if score not in SCORES:
        raise MaskdiffError(f"unknown confidence score {score!r}; choose one of: {', '.join(SCORES)}")
    check_transform(temperature, top_p)

    def fill(log_mu, xr, masked, count, k, rows):
        cand = log_mu.argmax(-1) if choose == "argmax" else sample_categorical(log_mu, generator)
        conf = log_mu.gather(-1, cand[..., None]).squeeze(-1).to(torch.float64) if score == "probability" else log_margin(log_mu)
        if confidence_noise > 0:
            u = uniform(conf.shape, generator, conf.device).clamp_(min=1e-300)
            conf = conf + confidence_noise * (k / steps) * -torch.log(-torch.log(u))
        rank = conf.masked_fill(~masked, -torch.inf).argsort(-1, descending=True).argsort(-1)
        update = masked & (rank < count[:, None])
        return update, cand[update]

    with Chain(denoise, shape, steps, "confidence", x_init=x_init, device=device, progress=progress, callback=callback) as chain:
        counted_steps(chain, schedule, time_grid(steps, grid), fill, cond=cond, temperature=temperature, top_p=top_p)
    return chain.output()


def log_margin(log_mu: Tensor) -> Tensor:
    """log(p1 - p2) of each position, p1 >= p2 the two largest probabilities of mu, in float64.
    (..., V) -> (...). A tie (p1 = p2) gives the smallest positive float64 instead of log 0, so that a
    masked position never ranks with the unmasked ones (-inf)."""
    top = log_mu.to(torch.float64).topk(2, dim=-1).values.exp()  # (..., 2)
    return (top[..., 0] - top[..., 1]).clamp(min=torch.finfo(torch.float64).tiny).log()
