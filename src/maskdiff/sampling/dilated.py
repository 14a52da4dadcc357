"""Dilated unmasking: few-step sampling that never fills neighbours together until it must (after DUS,
Luxembourg, Permuter & Nachmani 2025, "Plan for Speed: Dilated Scheduling for Masked Diffusion Language
Models", arXiv 2506.19037).

A step of the ancestral chain fills each masked position with probability (alpha_s - alpha_t)/(1 - alpha_t)
and draws the values of the positions it fills independently of each other, from mu. When a step fills
two positions that depend on each other given the rest (neighbouring characters, the two halves of a
word), their joint is drawn as a product of marginals: the factorization error, which grows as the steps
get fewer (docs/math.md#samplers). This sampler keeps the ancestral chain's counts (the expected number
of masks per step, rounded, as the confidence sampler) and the draw of each value from mu, but chooses
*which* masks a step fills by a fixed coarse-to-fine order instead of at random: position i of a sample
of length L gets the rank of i in the van der Corput order of the next power of two (0, L/2, L/4,
3L/4, L/8, ...), rotated by an offset drawn per sample. A step therefore fills positions spread evenly
over the sequence, as far from each other as its count allows, and each new position lies between
positions filled earlier, so the context of every draw is as wide as the step budget permits.

Law. With one position per step (T >= L on the uniform grid) it draws x_{pi(1)}, then x_{pi(2)} given
it, ...: a left-to-right chain in the order pi, whose law is p itself when mu is the true conditional
(any order factorizes p). With several positions per step it is biased like every parallel sampler, by
the dependence among the positions drawn together, which the dilated order keeps small for data whose
dependence decays with distance (text). ``maskdiff.exact.order_law`` computes its law on enumerable
cases (tests/sampling/test_dilated.py).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.process import sample_categorical, uniform
from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.loop import Chain, counted_steps
from maskdiff.sampling.transforms import check_transform


def dilated_order(length: int, device=None) -> Tensor:
    """(L,) the positions 0..L-1 in visiting order: the van der Corput (bit-reversal) order of the next power
    of two, with the values >= L left out. Every prefix is spread as evenly over 0..L-1 as that order allows."""
    bits = max(1, (length - 1).bit_length())
    order = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(1 << bits)]
    return torch.tensor([p for p in order if p < length], dtype=torch.long, device=device)


def dilated_ranks(length: int, offsets: Tensor) -> Tensor:
    """(B, L) the rank of each position in each sample's order: the dilated order rotated by ``offsets`` (B,),
    so that sample b visits (order + offsets[b]) mod L."""
    device = offsets.device
    rank = torch.empty(length, dtype=torch.long, device=device)
    positions = torch.arange(length, device=device)
    rank[dilated_order(length, device)] = positions
    return rank[(positions[None, :] - offsets[:, None]) % length]


def dilated_sample(
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    steps: int,
    generator: Optional[torch.Generator] = None,
    grid: str = "uniform",
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    rotate: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """T grid steps, each filling the ancestral chain's expected number of masks (rounded) at the masked
    positions of lowest dilated rank, every value drawn from mu. ``rotate``: rotate each sample's order by
    a uniform random offset (off: every sample starts at position 0). One network call per step for every
    sample that still has a mask; masks that ``x_init`` leaves are filled in the same order."""
    check_transform(temperature, top_p)
    with Chain(denoise, shape, steps, "dilated", x_init=x_init, device=device, progress=progress, callback=callback) as chain:
        batch, length = chain.x.shape
        offsets = (uniform((batch,), generator, chain.x.device) * length).long().clamp_(max=length - 1) if rotate \
            else torch.zeros(batch, dtype=torch.long, device=chain.x.device)
        rank = dilated_ranks(length, offsets)

        def fill(log_mu, xr, masked, count, k, rows):
            place = rank[rows].masked_fill(~masked, length).argsort(-1).argsort(-1)  # the masked positions first, by rank
            update = masked & (place < count[:, None])
            return update, sample_categorical(log_mu[update], generator)

        counted_steps(chain, schedule, time_grid(steps, grid), fill, cond=cond, temperature=temperature, top_p=top_p)
    return chain.output()
