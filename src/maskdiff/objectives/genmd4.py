"""GenMD4: masked diffusion whose schedule is learned per token value (MD4 Sec. 5)."""
from __future__ import annotations

import torch

from maskdiff.config import RunConfig
from maskdiff.denoiser import SUBSDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.loss import NELBOTerms, token_counts
from maskdiff.loss.genmd4 import LearnableExponents, genmd4_loss, genmd4_mask
from maskdiff.loss.masked import masked_cross_entropy
from maskdiff.objectives.base import Objective
from maskdiff.process import uniform


class GenMD4(Objective):
    """Masked diffusion with GenMD4's learnable per-token schedule (MD4 Sec. 5); samples with its own sampler."""

    name = "genmd4"
    continuous_time_only = True
    learns_schedule = True
    samples_with = "genmd4"

    @classmethod
    def validate(cls, config: RunConfig) -> None:
        super().validate(config)
        if config.diffusion.genmd4_samples < 1:
            raise MaskdiffError(f"genmd4_samples must be at least 1, got {config.diffusion.genmd4_samples}")

    def own_sample(self, shape, *, steps, generator, x_init=None, progress=False, **kwargs):
        from maskdiff.sampling import genmd4_sample

        return genmd4_sample(self.denoiser, self.schedule, shape, steps=steps, generator=generator, x_init=x_init,
                             progress=progress, **kwargs)

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        self.noise_draws = config.diffusion.genmd4_samples
        self.exponents = LearnableExponents(vocab_size)  # registered after the denoiser: its weights come last

    def make_denoiser(self, network):
        return SUBSDenoiser(network, self.vocab_size, time_conditioned=self.config.model.time_conditioned,
                            max_length=self.config.data.length)

    @property
    def schedule(self):
        return self.exponents.schedule()

    def train_loss(self, x0, t, noise, valid=None, labels=None):
        d = self.config.diffusion
        out = genmd4_loss(self.denoiser, x0, t, self.exponents.exponents, noise, t_min=d.t_min, valid=valid, time_sampler=d.time_sampler)
        return out.surrogate, out.nelbo

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None):
        if discrete_steps:
            raise MaskdiffError("GenMD4 is evaluated in continuous time only; leave out --discrete-steps")
        d = self.config.diffusion
        w = self.exponents.exponents.detach()
        noise = uniform((1,) + tuple(x0.shape), generator, x0.device)
        diffusion = genmd4_loss(self.denoiser, x0, t, w, noise, t_min=d.t_min, valid=valid).nelbo
        # R(t_min): the slice [0, t_min] of the integral, as the masked objective reports it.
        t0 = torch.full((x0.shape[0],), d.t_min, dtype=torch.float64, device=x0.device)
        u = uniform(tuple(x0.shape), generator, x0.device)
        x_t = genmd4_mask(x0, t0, w, self.vocab_size, u, valid=valid)
        masked = x_t == self.vocab_size
        recon = masked_cross_entropy(self.denoiser(x_t, t0.float(), valid=valid), x0, masked) if bool(masked.any()) else torch.zeros(x0.shape[0], device=x0.device)
        return NELBOTerms(diffusion.float(), recon.float(), torch.zeros(x0.shape[0], device=x0.device), token_counts(x0, valid))
