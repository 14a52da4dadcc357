"""Samplers: functions of (denoise, schedule, shape, generator) that return a :class:`SampleOutput`.

| name | law | notes |
|---|---|---|
| ancestral | the T-step reverse chain (MD4 Alg. 2, MDLM "ddpm") | one call per step per unfinished sample |
| cached | the same chain | per-sample cache; time-independent denoisers; at most min(T, L) calls |
| mean | the same chain, two-stage draw (MD4) | |
| greedy | biased | argmax values |
| first-hitting | exact continuous-time reverse process (Zheng et al. 2024) | exactly L calls when alpha_0 = 1 |
| confidence | biased (MaskGIT, LLaDA) | unmasks the most confident positions |
| remdm-cap, remdm-rescale, remdm-conf, remdm-loop | ReMDM's remasking posterior (Wang et al. 2025) | keeps the forward marginals; sigma = 0 is ancestral |
| threshold | biased (Fast-dLLM, Wu et al. 2025) | fills every position whose confidence exceeds a threshold; prefix / dual caches |

Two more take their own model kinds: ``genmd4_sample`` (GenMD4's per-token schedule) and
``autoregressive_sample`` (the autoregressive baseline, left to right).
"""
from functools import partial

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.ancestral import ancestral_sample
from maskdiff.sampling.autoregressive import autoregressive_sample
from maskdiff.sampling.cached import cached_sample
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.conditioning import prompt_state, semi_autoregressive_sample
from maskdiff.sampling.confidence import confidence_sample
from maskdiff.sampling.first_hitting import first_hitting_sample
from maskdiff.sampling.genmd4 import genmd4_sample
from maskdiff.sampling.guidance import GuidedDenoiser
from maskdiff.sampling.mean import greedy_sample, mean_sample
from maskdiff.sampling.remasking import remdm_sample
from maskdiff.sampling.threshold import threshold_sample

SAMPLERS = {
    "ancestral": ancestral_sample,
    "cached": cached_sample,
    "mean": mean_sample,
    "greedy": greedy_sample,
    "first-hitting": first_hitting_sample,
    "confidence": confidence_sample,
    "remdm-cap": partial(remdm_sample, strategy="cap"),
    "remdm-rescale": partial(remdm_sample, strategy="rescale"),
    "remdm-conf": partial(remdm_sample, strategy="conf"),
    "remdm-loop": partial(remdm_sample, strategy="loop"),
    "threshold": threshold_sample,
}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise MaskdiffError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = [
    "SAMPLERS", "SampleOutput", "GuidedDenoiser", "ancestral_sample", "autoregressive_sample", "cached_sample", "confidence_sample",
    "first_hitting_sample", "genmd4_sample", "get_sampler", "greedy_sample", "mean_sample", "prompt_state",
    "remdm_sample", "semi_autoregressive_sample", "threshold_sample",
]
