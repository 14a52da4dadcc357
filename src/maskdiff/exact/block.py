"""Exact answers for block diffusion (docs/math.md#block) on tiny problems: the true block conditional,
the block NELBO by enumeration and quadrature, and the law of the block-by-block sampler."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from maskdiff.denoiser import FunctionDenoiser
from maskdiff.exact.enumeration import _pattern_probs, chain_law, enumerate_sequences, gauss_legendre, mask_patterns, true_denoiser
from maskdiff.schedules import Schedule


class TrueBlockDenoiser:
    """The exact block-diffusion conditional on a toy: mu[n, v] = p(x^n = v | the unmasked tokens of n's
    block in x_t, the clean blocks before it), with the calls of
    :class:`~maskdiff.denoiser.BlockDenoiser`. Its "cache" is the clean context itself, (B, P) tokens.

    Sequences shorter than the toy's length are read as prefixes (the rest masked), so a sampler may pass
    a block with its context only.
    """

    time_independent = True

    def __init__(self, sequences: Tensor, probs: Tensor, vocab_size: int, block_size: int):
        self.inner = true_denoiser(sequences, probs, vocab_size)
        self.vocab_size = self.mask_id = vocab_size
        self.block_size = block_size
        self.length = sequences.shape[1]

    def _conditional(self, z: Tensor) -> Tensor:
        """log mu (B, n, V) of a partially masked prefix z (B, n), n <= the toy's length."""
        B, n = z.shape
        full = torch.cat([z, torch.full((B, self.length - n), self.mask_id, dtype=z.dtype)], dim=1)
        return self.inner(full, torch.zeros(B, dtype=torch.float64))[:, :n]

    def __call__(self, x_t: Tensor, x0: Tensor) -> Tensor:
        out = torch.empty(x_t.shape + (self.vocab_size,), dtype=torch.float64)
        for s in range(0, x_t.shape[1], self.block_size):
            e = min(s + self.block_size, x_t.shape[1])
            out[:, s:e] = self._conditional(torch.cat([x0[:, :s], x_t[:, s:e]], dim=1))[:, s:e]
        return out

    def extend(self, cache, clean: Tensor, start: int):
        return clean.clone() if cache is None else torch.cat([cache, clean], dim=1)

    def block_log_probs(self, x_block: Tensor, cache, start: int) -> Tensor:
        z = x_block if cache is None else torch.cat([cache, x_block], dim=1)
        return self._conditional(z)[:, start:]

    @staticmethod
    def cache_rows(cache, rows: Tensor):
        return None if cache is None else cache[rows]


def exact_block_nelbo(denoise, x0: Tensor, schedule: Schedule, *, t_min: float = 0.0, t_max: float = 1.0,
                      boundary_terms: bool = True, panels: int = 64, order: int = 16) -> Tensor:
    """The block NELBO (docs/math.md (eq. 25)) of each row of x0 (B, L), by enumeration of every block's
    mask patterns and quadrature in t; ``denoise(x_t, x0)`` is a block denoiser (time-independent). (B,).

    t_max < 1 with ``boundary_terms`` off gives the diffusion integral over [t_min, t_max] alone (what the
    clipped mask-rate loss estimates)."""
    B, L = x0.shape
    Lb = denoise.block_size
    nodes, weights = gauss_legendre(t_min, t_max, panels, order)
    oma_min = float(schedule.one_minus_alpha(torch.tensor([t_min], dtype=torch.float64)))
    total = torch.zeros(B, dtype=torch.float64)
    for s in range(0, L, Lb):
        e = min(s + Lb, L)
        patterns = mask_patterns(e - s)  # (P, L')
        P = patterns.shape[0]
        x_t = x0[:, None].repeat(1, P, 1)  # (B, P, L): only block s:e is masked (the others do not matter)
        x_t[:, :, s:e] = torch.where(patterns[None], torch.full_like(x_t[:, :, s:e], denoise.vocab_size), x_t[:, :, s:e])
        log_mu = denoise(x_t.reshape(B * P, L), x0.repeat_interleave(P, dim=0)).to(torch.float64).reshape(B, P, L, -1)
        nll = -log_mu[:, :, s:e].gather(-1, x0[:, None, s:e, None].expand(B, P, e - s, 1)).squeeze(-1)
        cost = torch.where(patterns[None], nll, torch.zeros_like(nll)).sum(-1)  # (B, P)
        q = _pattern_probs(patterns, schedule.one_minus_alpha(nodes))  # (T, P)
        total += cost @ (q * (schedule.weight(nodes) * weights)[:, None]).sum(0)
        if oma_min > 0 and boundary_terms:
            total += cost @ _pattern_probs(patterns, torch.tensor([oma_min], dtype=torch.float64))[0]
    return total + (L * schedule.alpha_1 * np.log(denoise.vocab_size) if boundary_terms else 0.0)


def block_chain_law(denoise, schedule: Schedule, length: int, steps: int, grid: str = "uniform") -> Tensor:
    """Exact law (V^L,) of the block sampler (sampling/block.py) with a T-step ancestral chain per block:
    the product over blocks of :func:`chain_law` of the block given each possible clean context."""
    V, Lb = denoise.vocab_size, denoise.block_size
    law = torch.ones(1, dtype=torch.float64)  # over the prefixes generated so far, enumerate_sequences order
    for s in range(0, length, Lb):
        n = min(Lb, length - s)
        prefixes = enumerate_sequences(V, s) if s else torch.zeros((1, 0), dtype=torch.long)
        rows = []
        for c in prefixes:
            cache = denoise.extend(None, c[None], 0) if s else None
            block = FunctionDenoiser(lambda z, t, cache=cache, s=s: denoise.block_log_probs(z, denoise.cache_rows(
                cache, torch.zeros(z.shape[0], dtype=torch.long)) if cache is not None else None, s), V, True)
            rows.append(chain_law(block, schedule, n, steps, grid))
        law = (law[:, None] * torch.stack(rows)).reshape(-1)  # prefix index * V^n + block index
    return law
