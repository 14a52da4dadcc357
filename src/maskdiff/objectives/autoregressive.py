"""The autoregressive baseline on the same transformer (causal attention, left-to-right sampling)."""
from __future__ import annotations

import torch

from maskdiff.denoiser import CausalLM
from maskdiff.errors import MaskdiffError
from maskdiff.loss import NELBOTerms, scored_positions, token_counts
from maskdiff.loss.autoregressive import autoregressive_nll
from maskdiff.objectives.base import Objective


class Autoregressive(Objective):
    """The autoregressive baseline: the same transformer with causal attention, an exact NLL."""

    name = "ar"
    uses_time = False
    causal = True
    time_conditioning_allowed = False
    exact_likelihood = True
    conditional = True
    samples_with = "autoregressive"

    def describe_estimate(self, discrete_steps=None) -> str:
        return "exact NLL"

    def own_sample(self, shape, *, steps, generator, x_init=None, progress=False, **kwargs):
        from maskdiff.sampling import autoregressive_sample

        return autoregressive_sample(self.denoiser, shape, generator=generator, x_init=x_init, progress=progress, **kwargs)

    def make_denoiser(self, network):
        return CausalLM(network, self.vocab_size, max_length=self.config.data.length)

    def train_loss(self, x0, t, noise, valid=None, labels=None, cond=None):
        # a condition (the prompt) is the prefix the model reads; only the positions after it are scored
        nll = autoregressive_nll(self.denoiser, x0, self.denoiser.bos_id, valid=scored_positions(valid, cond))
        return nll, nll.detach()

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None, cond=None):
        if discrete_steps:
            raise MaskdiffError("the autoregressive baseline has an exact likelihood; leave out --discrete-steps")
        nll = autoregressive_nll(self.denoiser, x0, self.denoiser.bos_id, valid=scored_positions(valid, cond)).float()
        zero = torch.zeros(x0.shape[0], device=x0.device)
        return NELBOTerms(nll, zero, zero, token_counts(x0, valid, cond))
