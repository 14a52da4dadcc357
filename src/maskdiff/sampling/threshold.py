"""Parallel decoding by confidence threshold, with Fast-dLLM's approximate key/value caches (Wu et al. 2025,
"Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel Decoding").

The sequence is generated in blocks of ``block_size`` positions, left to right (the whole sequence is one
block by default). Each network call proposes a value at every masked position of the current block
(argmax mu, or a draw from mu) with its confidence c = mu(value), and fills **every** masked position
whose confidence exceeds the threshold, c > tau; when none does, the single most confident one is
filled, so every call fills at least one position. Hence:

* tau = 1 (nothing exceeds it): one position per call, the most confident (greedy one-at-a-time
  decoding): as many calls as masked positions;
* tau = 0 (every confidence exceeds it): the whole block in one call: one call per block.

Biased by design: positions filled in the same call are drawn independently given the state, which is
harmless only where mu is nearly deterministic (Fast-dLLM's argument for a high threshold).

Caches (``cache``): the first call of each block is a full call that also stores every layer's keys
and values. The later calls of that block reuse them:

* 'prefix': compute the block and everything after it; the finished blocks before it are read from
  the cache;
* 'dual': compute the block only; the prefix and the (still masked) suffix are read from the cache;
* 'none': every call is a full call (exact).

With bidirectional attention the cached keys and values are stale once the block changes (they were
computed against its earlier state): this is Fast-dLLM's approximation. NFE counts network calls;
``extra['positions']`` (B,) counts the positions those calls computed, in units of a full call (L
positions), which is what the caches save.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.denoiser import supports
from maskdiff.errors import MaskdiffError
from maskdiff.process import sample_categorical
from maskdiff.schedules import Schedule
from maskdiff.sampling.loop import Chain
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.transforms import adjust_log_probs, check_transform

CACHES = ("none", "prefix", "dual")


def check_threshold(threshold: float, cache: str, choose: str) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise MaskdiffError(f"the confidence threshold must be in [0, 1], got {threshold!r}")
    if cache not in CACHES:
        raise MaskdiffError(f"unknown cache {cache!r}; choose one of: {', '.join(CACHES)}")
    if choose not in ("argmax", "sample"):
        raise MaskdiffError(f"unknown candidate rule {choose!r}; choose one of: argmax, sample")


def threshold_sample(
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    threshold: float = 0.9,
    block_size: Optional[int] = None,
    cache: str = "none",
    choose: str = "argmax",
    steps: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """Fill every masked position of the current block whose confidence exceeds ``threshold`` (at least one
    per call). block_size: positions per block (default: the whole length); cache: 'none', 'prefix' or 'dual';
    choose: 'argmax' (Fast-dLLM) or 'sample' (a value drawn from mu, its probability as the confidence).
    ``steps`` is ignored: the threshold sets the number of calls. The time given to a time-conditioned
    denoiser is the one whose masking probability is the row's masked fraction."""
    check_threshold(threshold, cache, choose)
    check_transform(temperature, top_p)
    if cache != "none":
        if not supports(denoise, "window_log_probs"):
            raise MaskdiffError(f"the {cache} cache needs a denoiser with a key/value cache (prefill_log_probs, "
                                "window_log_probs), such as maskdiff's SUBS transformer; use cache='none'")
        if cond is not None:
            raise MaskdiffError("the key/value cache does not take class conditioning; use cache='none'")
    mask_id = denoise.vocab_size
    B, L = (x_init.shape if x_init is not None else shape)
    size = L if block_size is None else block_size
    if not 1 <= size <= L:
        raise MaskdiffError(f"block_size must be in 1..{L} (the sample length), got {block_size}")
    n_blocks = -(-L // size)
    name = f"threshold-{cache}" if cache != "none" else "threshold"
    with Chain(denoise, shape, L, name, x_init=x_init, device=device, progress=progress, callback=callback) as chain:
        x = chain.x
        positions = torch.zeros(B, dtype=torch.float64, device=x.device)
        for b in range(n_blocks):
            lo, hi = b * size, min((b + 1) * size, L)
            kv = None  # the cache of this block: (KVCache, index of each batch row in it)
            while True:
                in_block = x[:, lo:hi] == mask_id
                rows = in_block.any(-1).nonzero().squeeze(-1)
                if len(rows) == 0:
                    break
                t = _times(schedule, x[rows], mask_id)
                if cache == "none" or kv is None:
                    if cache == "none":
                        full = denoise(x[rows], t) if cond is None else denoise(x[rows], t, cond=cond[rows])
                    else:
                        full, layers = denoise.prefill_log_probs(x[rows], t)
                        where = torch.full((B,), -1, dtype=torch.long, device=x.device)
                        where[rows] = torch.arange(len(rows), device=x.device)
                        kv = (layers, where)
                    log_mu = full[:, lo:hi]
                    positions[rows] += 1.0
                else:
                    layers, where = kv
                    sub = layers.rows(where[rows])
                    end = L if cache == "prefix" else hi
                    log_mu = denoise.window_log_probs(x[rows, lo:end], t, lo, sub)[:, : hi - lo]
                    positions[rows] += (end - lo) / L
                chain.nfe[rows.cpu()] += 1
                log_mu = adjust_log_probs(log_mu, temperature, top_p)
                xr = x[rows, lo:hi]
                masked = in_block[rows]
                value = log_mu.argmax(-1) if choose == "argmax" else sample_categorical(log_mu, generator)
                conf = log_mu.gather(-1, value[..., None]).squeeze(-1).to(torch.float64).exp()
                conf = conf.masked_fill(~masked, -1.0)
                fill = masked & (conf > threshold)
                best = conf.argmax(-1)
                none = ~fill.any(-1)
                fill[none, best[none]] = True
                xr[fill] = value[fill]
                x[rows, lo:hi] = xr
                chain.report.step(x)
    out = chain.output()
    out.steps = int(out.nfe.max()) if B else 0
    out.extra.update(threshold=float(threshold), block=size, cache=cache, positions=positions.cpu())
    return out


def _times(schedule: Schedule, x: Tensor, mask_id: int) -> Tensor:
    """(R,) the time whose masking probability 1 - alpha_t is each row's masked fraction."""
    frac = (x == mask_id).to(torch.float64).mean(-1)
    alpha = (1.0 - frac).clamp(min=schedule.alpha_1, max=schedule.alpha_0)
    return schedule.inverse(alpha).clamp(0.0, 1.0).to(torch.float32)
