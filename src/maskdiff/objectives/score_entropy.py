"""SEDD's score-entropy objective on the same network (absorbing process; the papers' baseline)."""
from __future__ import annotations

import math

import torch

from maskdiff.config import RunConfig
from maskdiff.denoiser import SUBSDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.loss import NELBOTerms, prior_term, token_counts
from maskdiff.loss.masked import reconstruction_term
from maskdiff.loss.score_entropy import score_entropy_term
from maskdiff.objectives.base import Objective
from maskdiff.schedules import get_schedule


class ScoreEntropy(Objective):
    """SEDD: the network's unnormalised logits are log concrete scores, trained by score entropy.

    Its NELBO is the score-entropy bound (never below the masked-diffusion bound of the same network
    read as a softmax; loss/score_entropy.py). Samplers read the network as that softmax, which is
    SEDD's own reverse step when the scores are normalised; the reported bound is then also an upper
    bound on -log p of the model that is sampled, since that model's own NELBO is never above it."""

    name = "sedd"
    continuous_time_only = True

    def describe_estimate(self, discrete_steps=None) -> str:
        return "continuous score-entropy NELBO"

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        # The output layer starts at zero, so every log score would start at 0 and Z = sum_v e^{l_v} = V:
        # the gap Z - 1 - log Z (about 5e4 per masked token with GPT-2's vocabulary) would dominate the
        # first steps. Its bias starts at -log V instead: Z = 1, normalised scores, the masked-diffusion
        # bound of the uniform mu (docs/math.md#sedd). Only the initial value changes, not the layout.
        with torch.no_grad():
            self.network.output_bias().fill_(-math.log(vocab_size))
        self.schedule = get_schedule(config.diffusion.schedule, **config.diffusion.schedule_args)

    def make_denoiser(self, network):
        return SUBSDenoiser(network, self.vocab_size, time_conditioned=self.config.model.time_conditioned,
                            max_length=self.config.data.length)

    def train_loss(self, x0, t, noise, valid=None, labels=None):
        per_seq = score_entropy_term(self.denoiser, x0, t, self.schedule, t_min=self.config.diffusion.t_min,
                                     valid=valid, noise=noise[0], time_sampler=self.config.diffusion.time_sampler)
        return per_seq, per_seq.detach()

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None):
        if discrete_steps:
            raise MaskdiffError("the score-entropy objective is evaluated in continuous time only; leave out --discrete-steps")
        t_min = self.config.diffusion.t_min
        diffusion = score_entropy_term(self.denoiser, x0, t, self.schedule, generator, t_min=t_min, valid=valid)
        recon = reconstruction_term(self.denoiser, x0, t_min, self.schedule, generator, valid=valid)
        return NELBOTerms(diffusion.float(), recon.float(), prior_term(x0, self.schedule, self.vocab_size, valid=valid).float(),
                          token_counts(x0, valid))
