"""Sampling images from a trained run, class-conditional with classifier-free guidance.

    log mu_guided = (1 + w) log mu(. | c) - w log mu(. | no class)      (sampling/guidance.py)

w = 0 is the conditional model and w = -1 the unconditional one (the null class); ``labels`` None on a
class-conditional run also draws with the null class.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError


def class_labels(num: int, num_classes: int, labels: Optional[Sequence[int]] = None) -> Tensor:
    """``labels`` repeated to ``num`` entries (default: 0, 1, ..., C-1, 0, 1, ...), checked."""
    chosen = list(labels) if labels else list(range(num_classes))
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise MaskdiffError(f"class {bad[0]} is out of range: this model has classes 0..{num_classes - 1}")
    return torch.tensor([chosen[i % len(chosen)] for i in range(num)], dtype=torch.long)


@torch.no_grad()
def sample_images(pipe, num: int, *, labels: Optional[Tensor] = None, guidance: float = 0.0, steps: Optional[int] = None,
                  sampler: Optional[str] = None, seed: int = 0, progress: bool = False, callback=None, **options):
    """Draw ``num`` images (N, H*W) from a run: class-conditional when ``labels`` (N,) is given (the run
    must be class-conditional), unconditional otherwise. steps: default one per pixel. The request goes
    the way of every other (:meth:`maskdiff.pipeline.Pipeline.draw`); a SampleOutput, tokens on the CPU."""
    from maskdiff.sampling.request import SampleRequest

    request = SampleRequest(num=num, sampler=sampler, steps=steps or pipe.config.data.length, seed=seed, options=options,
                            labels=labels, guidance=guidance)
    return pipe.draw(request, progress=progress, callback=callback)
