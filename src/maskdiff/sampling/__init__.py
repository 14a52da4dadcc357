"""Samplers: functions of (denoise, schedule, shape, generator) that return a :class:`SampleOutput`."""
from maskdiff.errors import MaskdiffError
from maskdiff.sampling.ancestral import ancestral_sample
from maskdiff.sampling.cached import cached_sample
from maskdiff.sampling.common import SampleOutput

SAMPLERS = {"ancestral": ancestral_sample, "cached": cached_sample}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise MaskdiffError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = ["SAMPLERS", "SampleOutput", "ancestral_sample", "cached_sample", "get_sampler"]
