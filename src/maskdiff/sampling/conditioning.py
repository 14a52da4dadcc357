"""Prompts, infilling and semi-autoregressive generation: one mechanism, fixed positions.

A sampler started from ``x_init`` never masks or resamples a position that is not the mask id there
(carry-over, MDLM Sec. 3.2), so a prefix prompt, a suffix or any infilling template is just an
``x_init``. Semi-autoregressive generation (MDLM Sec. 4.2) goes beyond the training length L block by
block: each new block of ``block`` tokens is sampled with the last L - block tokens as fixed context.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.common import SampleOutput


def prompt_state(prefix: Tensor, length: int, mask_id: int, batch: int = 1) -> Tensor:
    """(B, length) with ``prefix`` (P,) or (B, P) fixed at the start and masks after it."""
    prefix = prefix.long()
    if prefix.dim() == 1:
        prefix = prefix[None].expand(batch, -1)
    if prefix.shape[1] > length:
        raise MaskdiffError(f"the prompt has {prefix.shape[1]} tokens, more than the sample length {length}")
    x = torch.full((prefix.shape[0], length), mask_id, dtype=torch.long, device=prefix.device)
    x[:, : prefix.shape[1]] = prefix
    return x


def semi_autoregressive_sample(
    sampler: Callable[..., SampleOutput],
    denoise,
    schedule,
    *,
    batch: int,
    total_length: int,
    window: int,
    block: int,
    generator: Optional[torch.Generator] = None,
    prompt: Optional[Tensor] = None,
    stop_at: Optional[int] = None,
    **sampler_kwargs,
) -> SampleOutput:
    """Generate ``total_length`` tokens with a model of length ``window`` (L), ``block`` new tokens at a time.

    The first window is sampled whole (after the optional prompt, which stays fixed). Every later call
    fixes the last window - block tokens generated so far and samples the next ``block``. NFE per
    sample is summed over the calls; ``extra['contexts']`` records the context each block saw.
    ``stop_at``: a token id (end-of-text); no block is added once every row has generated it after its
    prompt, so the output may be shorter than ``total_length``.
    """
    if not 0 < block <= window:
        raise MaskdiffError(f"block must be in 1..{window} (the model length), got {block}")
    if total_length < 1:
        raise MaskdiffError(f"total length must be positive, got {total_length}")
    mask_id = denoise.vocab_size
    start = time.perf_counter()
    first_len = min(window, total_length)
    if prompt is not None:
        x_init = prompt_state(prompt, first_len, mask_id, batch)
    else:
        x_init = torch.full((batch, first_len), mask_id, dtype=torch.long, device=sampler_kwargs.get("device"))
    out = sampler(denoise, schedule, (batch, first_len), x_init=x_init, generator=generator, **sampler_kwargs)
    tokens, nfe = out.tokens, out.nfe.clone()
    contexts: List[Tensor] = []
    fixed = 0 if prompt is None else prompt.shape[-1]
    while tokens.shape[1] < total_length:
        if stop_at is not None and bool((tokens[:, fixed:] == stop_at).any(-1).all()):
            break
        new = min(block, total_length - tokens.shape[1])
        context = tokens[:, -(window - new):] if window > new else tokens[:, :0]
        contexts.append(context.clone())
        x_init = torch.cat([context, torch.full((batch, new), mask_id, dtype=torch.long, device=tokens.device)], dim=1)
        out = sampler(denoise, schedule, tuple(x_init.shape), x_init=x_init, generator=generator, **sampler_kwargs)
        tokens = torch.cat([tokens, out.tokens[:, -new:]], dim=1)
        nfe += out.nfe
    return SampleOutput(tokens=tokens, nfe=nfe, seconds=time.perf_counter() - start, steps=out.steps,
                        sampler=f"semi-ar({out.sampler})", extra={"contexts": contexts, "block": block, "window": window})
