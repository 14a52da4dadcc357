"""Experiments: ``maskdiff experiment NAME`` re-runs a comparison over seeds and writes its tables.

One framework (``base``: scales, the run config, training, paired intervals and verdicts, results as JSON
and Markdown; ``provenance``: the machine and commit of a result; ``reuse``: a run folder made elsewhere in
an experiment's place only if trained the same way) and these experiments on it:

* the papers' comparisons (``papers`` defines them, ``paper_runner`` runs one): variants trained with the
  same budget for several seeds, bits per character on held-out text, a verdict per paper trend;
* the sampler comparison (``samplers``, the name ``samplers``): one model sampled by every sampler at
  equal network calls, generative perplexity under judge models, a verdict per paper trend;
* the distillation experiment (``distill``): a teacher, its SDTT students and the target of few-step
  sampling, gen-PPL under two judges against calls per sample;
* the Sudoku comparison (``sudoku``): masked diffusion decoded in three orders against the autoregressive
  baseline on a task with exact answers, solve rates over seeds.
"""
from __future__ import annotations

from typing import Optional, Tuple

from maskdiff.errors import MaskdiffError
from maskdiff.experiments.base import Paired, paired_verdict, t_interval
from maskdiff.experiments.distill import DISTILL_SCALES, get_distill_scale, run_distill_experiment
from maskdiff.experiments.paper_runner import markdown, run_experiment, run_variant, verdict
from maskdiff.experiments.papers import (BPC_MARGIN, EXPERIMENTS, SCALES, Experiment, Scale, Trend, Variant, base_config,
                                         get_experiment, get_scale)
from maskdiff.experiments.provenance import provenance
from maskdiff.experiments.samplers import SAMPLER_SCALES, SamplerScale, get_sampler_scale, run_sampler_experiment, sampler_rows
from maskdiff.experiments.sudoku import SUDOKU_SCALES, get_sudoku_scale, run_sudoku_experiment

SAMPLERS = "samplers"
SUDOKU = "sudoku"
DISTILL = "distill"
NAMES: Tuple[str, ...] = (*EXPERIMENTS, SAMPLERS, SUDOKU, DISTILL)
"""Every experiment ``maskdiff experiment NAME`` runs."""


def check(name: str, scale_name: str) -> None:
    """Fail, before any work, on an unknown experiment or a scale it does not have (naming the valid ones)."""
    if name not in NAMES:
        raise MaskdiffError(f"unknown experiment {name!r}; choose one of: {', '.join(NAMES)}")
    if name == SAMPLERS:
        get_sampler_scale(scale_name)
    elif name == SUDOKU:
        get_sudoku_scale(scale_name)
    elif name == DISTILL:
        get_distill_scale(scale_name)
    else:
        get_scale(scale_name)


def run(name: str, scale_name: str = "cpu", out=None, *, seeds: Optional[int] = None, log=print, device: str = "auto") -> dict:
    """Run the experiment ``name`` (a paper comparison or ``samplers``) at ``scale_name``; its summary."""
    check(name, scale_name)
    if name == SAMPLERS:
        return run_sampler_experiment(scale_name, out, seeds=seeds, log=log, device=device)
    if name == SUDOKU:
        return run_sudoku_experiment(scale_name, out, seeds=seeds, log=log, device=device)
    if name == DISTILL:
        return run_distill_experiment(scale_name, out, seeds=seeds, log=log, device=device)
    return run_experiment(name, scale_name, out, seeds=seeds, log=log, device=device)


__all__ = ["BPC_MARGIN", "DISTILL", "DISTILL_SCALES", "EXPERIMENTS", "NAMES", "SAMPLERS", "SAMPLER_SCALES", "SCALES", "SUDOKU", "SUDOKU_SCALES", "Experiment", "Paired", "SamplerScale",
           "Scale", "Trend", "Variant", "base_config", "check", "get_experiment", "get_sampler_scale", "get_scale", "markdown",
           "paired_verdict", "provenance", "run", "run_distill_experiment", "run_experiment", "run_sampler_experiment", "run_variant", "sampler_rows",
           "t_interval", "verdict"]
