"""Samplers: functions of (denoise, schedule, shape, generator) that return a :class:`SampleOutput`.

| name | law | notes |
|---|---|---|
| ancestral | the T-step reverse chain (MD4 Alg. 2, MDLM "ddpm") | one call per step per unfinished sample |
| cached | the same chain | per-sample cache; time-independent denoisers; at most min(T, L) calls |
| mean | the same chain, two-stage draw (MD4) | |
| greedy | biased | argmax values |
| first-hitting | exact continuous-time reverse process (Zheng et al. 2024) | exactly L calls when alpha_0 = 1 |
| confidence | biased (MaskGIT, LLaDA) | unmasks the most confident positions |
| dilated | exact at one position per step, biased otherwise (DUS) | the chain's counts, positions in a spread-out coarse-to-fine order |
| remdm-cap, remdm-rescale, remdm-conf, remdm-loop | ReMDM's remasking posterior (Wang et al. 2025) | keeps the forward marginals; sigma = 0 is ancestral |
| threshold | biased (Fast-dLLM, Wu et al. 2025) | fills every position whose confidence exceeds a threshold; prefix / dual caches |

Three more take their own model kinds: ``genmd4`` (GenMD4's per-token schedule), ``autoregressive`` (the
autoregressive baseline, left to right) and ``block`` (block diffusion, block by block). Every sampler is an
entry of :data:`~maskdiff.sampling.registry.REGISTRY` that declares its options and needs; a request for
one is a :class:`~maskdiff.sampling.request.SampleRequest`, checked once against the model.
"""
from maskdiff.sampling.ancestral import ancestral_sample
from maskdiff.sampling.autoregressive import autoregressive_sample
from maskdiff.sampling.cached import cached_sample
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.conditioning import prompt_state, semi_autoregressive_sample
from maskdiff.sampling.confidence import confidence_sample
from maskdiff.sampling.dilated import dilated_sample
from maskdiff.sampling.first_hitting import first_hitting_sample
from maskdiff.sampling.genmd4 import genmd4_sample
from maskdiff.sampling.guidance import GuidedDenoiser
from maskdiff.sampling.mean import greedy_sample, mean_sample
from maskdiff.sampling.registry import MASKED_SAMPLERS, REGISTRY, Option, SamplerEntry, get_entry, options_for, sampler_kwargs
from maskdiff.sampling.remasking import remdm_sample
from maskdiff.sampling.request import CheckedRequest, SampleRequest, SamplingTarget
from maskdiff.sampling.threshold import threshold_sample

SAMPLERS = {name: REGISTRY[name].sampler for name in MASKED_SAMPLERS}
"""The masked-diffusion samplers by name: each a function of (denoise, schedule, shape, ...)."""


def get_sampler(name: str):
    """The masked-diffusion sampler called ``name`` (its registry entry's function, bound arguments applied)."""
    return get_entry(name).sampler


__all__ = [
    "MASKED_SAMPLERS", "REGISTRY", "SAMPLERS", "CheckedRequest", "Option", "SampleOutput", "SampleRequest", "SamplerEntry",
    "SamplingTarget", "options_for", "sampler_kwargs", "GuidedDenoiser", "ancestral_sample", "autoregressive_sample", "cached_sample", "confidence_sample", "dilated_sample",
    "first_hitting_sample", "genmd4_sample", "get_sampler", "greedy_sample", "mean_sample", "prompt_state",
    "remdm_sample", "semi_autoregressive_sample", "threshold_sample",
]
