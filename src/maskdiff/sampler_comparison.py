"""The sampler comparison's former module path, kept for its callers: the comparison lives in
``maskdiff.experiments.samplers`` (and is exported by ``maskdiff.experiments``)."""
from maskdiff.experiments.samplers import SAMPLER_SCALES, SamplerScale, get_sampler_scale, run_sampler_experiment, sampler_rows

__all__ = ["SAMPLER_SCALES", "SamplerScale", "get_sampler_scale", "run_sampler_experiment", "sampler_rows"]
