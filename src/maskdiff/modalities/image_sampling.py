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
                  sampler: str = "cached", seed: int = 0, progress: bool = False, **sampler_kwargs):
    """Draw ``num`` images (N, H*W) from a run: class-conditional when ``labels`` (N,) is given (the run
    must be class-conditional), unconditional otherwise. steps: default one per pixel."""
    from maskdiff.sampling import GuidedDenoiser, get_sampler

    fn = get_sampler(sampler)
    classes = pipe.config.model.num_classes
    if guidance < -1:
        raise MaskdiffError(f"the guidance weight must be >= -1 (-1: unconditional, 0: conditional), got {guidance}")
    if (labels is not None or guidance) and not classes:
        raise MaskdiffError("this run is not class-conditional; labels and guidance need a run trained with --num-classes")
    denoise, cond = pipe.denoiser, None
    if labels is not None:
        if labels.shape != (num,):
            raise MaskdiffError(f"give one label per sample: {num} samples, labels of shape {tuple(labels.shape)}")
        denoise, cond = GuidedDenoiser(pipe.denoiser, guidance, null_class=classes), labels
    elif guidance:
        raise MaskdiffError("guidance needs class labels to guide towards")
    device = getattr(pipe, "device", torch.device("cpu"))
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (num, pipe.config.data.length)
    cond = None if cond is None else cond.to(device)
    out = fn(denoise, pipe.schedule, shape, steps=steps or shape[1], generator=gen, cond=cond, progress=progress, device=device,
             **sampler_kwargs)
    out.tokens = out.tokens.cpu()
    return out
