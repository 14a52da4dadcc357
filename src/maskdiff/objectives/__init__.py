"""What a run trains: the network plus its parameterization and loss, built from a RunConfig.

* ``masked``  masked diffusion (MD4/MDLM) with SUBS; with ``carry_over`` or ``zero_mask`` off, MDLM's
              ablation (the full per-position discrete-time KL, loss/ablation.py);
* ``genmd4``  masked diffusion with GenMD4's learnable per-token schedule (MD4 Sec. 5);
* ``sedd``    SEDD's score-entropy loss on the same network (absorbing process; the papers' baseline);
* ``ar``      the autoregressive baseline: the same transformer with causal attention;
* ``block``   block diffusion (BD3-LM): masked diffusion within blocks, each conditioned on the clean
              blocks before it (block size 1: autoregressive; L: masked diffusion).

Each objective gives the trainer ``train_loss`` (what to backpropagate, and the NELBO to log) and the
evaluator ``eval_terms`` (per-sequence NELBO terms, an exact NLL for ``ar``); its class attributes
(:class:`~maskdiff.objectives.base.Objective`) say what a run of it supports. The weights of every
part are one flat dict: the network's own names (so checkpoints of masked runs keep their layout) and
``genmd4.log_w`` for GenMD4's exponents.
"""
from __future__ import annotations

from typing import Dict, Type

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.objectives.autoregressive import Autoregressive
from maskdiff.objectives.base import Objective, build_network
from maskdiff.objectives.block import BlockDiffusion
from maskdiff.objectives.genmd4 import GenMD4
from maskdiff.objectives.masked import MaskedDiffusion
from maskdiff.objectives.score_entropy import ScoreEntropy

OBJECTIVES: Dict[str, Type[Objective]] = {o.name: o for o in (MaskedDiffusion, GenMD4, ScoreEntropy, Autoregressive, BlockDiffusion)}


def get_objective(name: str) -> Type[Objective]:
    """The objective class called ``name``."""
    if name not in OBJECTIVES:
        raise MaskdiffError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def build_objective(config: RunConfig, vocab_size: int) -> Objective:
    return get_objective(config.diffusion.objective)(config, vocab_size)


__all__ = ["OBJECTIVES", "Objective", "MaskedDiffusion", "GenMD4", "ScoreEntropy", "Autoregressive", "BlockDiffusion", "build_network",
           "build_objective", "get_objective"]
