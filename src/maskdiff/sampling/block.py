"""Block diffusion sampling (BD3-LM, Arriola et al. 2025; docs/math.md#block): blocks of L' tokens left to
right, each drawn by a T-step ancestral chain (MDLM eq. 7) given the clean blocks before it.

``denoise`` is a block denoiser (:class:`~maskdiff.denoiser.BlockDenoiser`, or the exact
:class:`~maskdiff.exact.TrueBlockDenoiser`). With ``kv_cache`` the finished blocks are held in the
denoiser's cache (a network's keys and values: one call per finished block to add it, and each
denoising call then runs on the L' tokens of the block only); without it every denoising call runs the
two-stream network on the whole context again. Both give the same log mu, so the same samples for a seed.

Within a block the denoiser is time-independent, so a sample's log mu is reused while its block is
unchanged (MDLM's caching, per sample): at most min(T, L') denoising calls per block and sample.

Length: any number of tokens. The model sees at most ``window`` positions (its training length); when
the next block would not fit, the context is cut to its last ``context`` tokens (a multiple of L') and
the cache rebuilt from them at positions 0.. (one call), the same context the uncached path reads.
With ``eos_id`` a sample stops after the block in which it generated that token; its later positions
hold ``eos_id`` and ``extra['lengths']`` gives each sample's length up to and including it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.common import SampleOutput, StepReporter, Timer, nfe_counter, reverse_step, rows_of
from maskdiff.sampling.transforms import adjust_log_probs, check_transform
from maskdiff.schedules import Schedule, time_grid


def block_sample(
    denoise,
    schedule: Schedule,
    batch: int,
    length: int,
    *,
    steps: int,
    generator: Optional[torch.Generator] = None,
    prompt: Optional[Tensor] = None,
    kv_cache: bool = True,
    window: Optional[int] = None,
    context: Optional[int] = None,
    eos_id: Optional[int] = None,
    grid: str = "uniform",
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """Draw ``batch`` samples of ``length`` tokens (fewer where every sample stopped at ``eos_id``).

    steps: T, the ancestral steps per block. prompt: optional (P,) fixed first tokens (a prompt that
    ends inside a block fixes those positions of it). window: the most positions the model reads
    (default: ``length``); context: tokens kept when the window slides (default: half the window,
    rounded down to whole blocks). ``nfe`` counts denoising calls per sample; ``extra['cache_calls']``
    the calls that added finished blocks to the cache (or rebuilt it).
    """
    check_transform(temperature, top_p)
    Lb, mask_id = denoise.block_size, denoise.vocab_size
    window = length if window is None else window
    if window < Lb:
        raise MaskdiffError(f"the window of {window} tokens is shorter than one block ({Lb})")
    window -= window % Lb
    context = (window // 2) // Lb * Lb if context is None else context
    if context % Lb or not 0 <= context <= window - Lb:
        raise MaskdiffError(f"context must be a multiple of the block size {Lb} between 0 and {window - Lb}, got {context}")
    if batch < 1 or length < 1:
        raise MaskdiffError(f"batch and length must be at least 1, got {batch} and {length}")
    times = time_grid(steps, grid)
    with Timer() as timer, torch.no_grad():
        x = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
        if prompt is not None:
            if prompt.numel() >= length:
                raise MaskdiffError(f"the prompt has {prompt.numel()} tokens; the length {length} leaves nothing to generate")
            x[:, : prompt.numel()] = prompt.to(x.device)
        nfe, cache_calls = nfe_counter(batch), nfe_counter(batch)
        alive = torch.ones(batch, dtype=torch.bool, device=x.device)
        lengths = torch.full((batch,), length, dtype=torch.long, device=x.device)
        report = StepReporter(-(-length // Lb), progress, "block", callback)
        first = 0 if prompt is None else prompt.numel() // Lb * Lb  # the block the prompt ends in
        c0, cache, fresh = 0, None, True  # the context is x[:, c0:s]; cache holds it (kv_cache) unless fresh
        for s in range(first, length, Lb):
            e = min(s + Lb, length)
            if e - c0 > window:  # slide: keep the last `context` tokens, positions restart at 0
                c0, fresh = s - context, True
            if kv_cache and fresh:
                cache = denoise.extend(None, x[:, c0:s], 0) if s > c0 else None
                cache_calls[alive.cpu()] += int(s > c0)
            fresh = False
            rows = alive.nonzero().squeeze(-1)
            block = x[rows, s:e]

            def log_mu(sub: Tensor, state: Tensor) -> Tensor:
                if kv_cache:
                    return denoise.block_log_probs(state, denoise.cache_rows(cache, rows[sub]), s - c0)
                ctx = x[rows[sub], c0:s]  # the uncached path: the two-stream call on context + block
                full = torch.cat([ctx, state], dim=1)
                return denoise(full, torch.cat([ctx, state.masked_fill(state == mask_id, 0)], dim=1))[:, s - c0:]

            block = _block_chain(block, log_mu, schedule, times, mask_id, generator, nfe, rows, temperature, top_p)
            x[rows, s:e] = block
            if eos_id is not None:
                lo = max(s, 0 if prompt is None else prompt.numel())
                hit = (x[rows, lo:e] == eos_id)
                done = hit.any(-1)
                if bool(done.any()):
                    where = rows[done]
                    end = lo + hit[done].float().argmax(-1) + 1  # one past the first EOS
                    lengths[where] = end
                    after = torch.arange(length, device=x.device)[None] >= end[:, None]
                    x[where] = torch.where(after, torch.full_like(x[where], eos_id), x[where])
                    alive[where] = False
            report.step(x)
            if not bool(alive.any()):
                break
            if kv_cache and e < length and min(e + Lb, length) - c0 <= window:  # (a slide rebuilds it instead)
                cache = denoise.extend(cache, x[:, s:e], s - c0)
                cache_calls[alive.cpu()] += 1
        report.close()
        end = int(lengths.max())
    return SampleOutput(x[:, :end], nfe, timer.seconds, steps, "block",
                        {"lengths": lengths.cpu(), "cache_calls": cache_calls, "kv_cache": kv_cache})


def _block_chain(block: Tensor, log_mu, schedule: Schedule, times: Tensor, mask_id: int, generator, nfe: Tensor, rows: Tensor,
                 temperature: float, top_p: float) -> Tensor:
    """The T-step ancestral chain of one block (R, n), with per-sample reuse of log mu while unchanged."""
    R = block.shape[0]
    mu: Optional[Tensor] = None
    stale = torch.ones(R, dtype=torch.bool, device=block.device)
    for k in range(len(times) - 1, 0, -1):
        t, s = times[k], times[k - 1]
        active = (block == mask_id).any(-1)
        if not bool(active.any()):
            break
        need = (stale & active).nonzero().squeeze(-1)
        if len(need):
            fresh = adjust_log_probs(log_mu(need, block[need]), temperature, top_p)
            if mu is None:
                mu = torch.empty((R,) + fresh.shape[1:], dtype=fresh.dtype, device=fresh.device)
            mu[need] = fresh
            stale[need] = False
            nfe[rows[need].cpu()] += 1
        act = active.nonzero().squeeze(-1)
        new = reverse_step(block[act], rows_of(mu, act), float(schedule.alpha(s)), float(schedule.alpha(t)), mask_id, generator,
                           last=k == 1)
        stale[act] |= (new != block[act]).any(-1)
        block[act] = new
    return block
