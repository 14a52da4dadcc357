"""Masked diffusion (MD4 / MDLM) with the SUBS parameterization, and MDLM's SUBS ablation."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.denoiser import BoundCondition, SUBSDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.loss import (NELBOTerms, continuous_diffusion_term, discrete_diffusion_term, discrete_step, importance_steps, nelbo,
                          prior_term, token_counts)
from maskdiff.loss.ablation import decoder_term, full_kl_discrete_term
from maskdiff.objectives.base import Objective
from maskdiff.schedules import get_schedule


class MaskedDiffusion(Objective):
    """MD4/MDLM masked diffusion with SUBS; with ``carry_over`` or ``zero_mask`` off, MDLM's ablation (the
    full per-position discrete-time KL, loss/ablation.py)."""

    name = "masked"
    discrete_time_eval = True
    subs_switches = True
    class_conditional = True
    conditional = True

    @classmethod
    def predicts_mask(cls, config: RunConfig) -> bool:
        return not config.diffusion.zero_mask

    def describe_estimate(self, discrete_steps: Optional[int] = None) -> str:
        d = self.config.diffusion
        steps = discrete_steps or (d.discrete_steps if self.ablated else None)
        return f"discrete T={steps} NELBO" if steps else "continuous NELBO"

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        d = config.diffusion
        self.schedule = get_schedule(d.schedule, **d.schedule_args)
        self.ablated = not (d.carry_over and d.zero_mask)
        self.masked_only = config.model.masked_logits  # logits at masked positions only (same loss, less work)

    def make_denoiser(self, network):
        d = self.config.diffusion
        return SUBSDenoiser(network, self.vocab_size, time_conditioned=self.config.model.time_conditioned,
                            max_length=self.config.data.length, carry_over=d.carry_over, zero_mask=d.zero_mask)

    def _diffusion(self, x0, t, noise, valid, steps: Optional[int], generator=None, labels=None,
                   time_sampler: str = "uniform", cond=None) -> Tensor:
        d = self.config.diffusion
        den = self.denoiser if labels is None else BoundCondition(self.denoiser, labels)
        if steps:
            if time_sampler == "importance":
                i, prob = importance_steps(t, steps, self.schedule, d.t_min)
            else:
                i, prob = discrete_step(t, steps, d.t_min), None
            if self.ablated:
                return full_kl_discrete_term(self.denoiser.full_log_probs, x0, i, steps, self.schedule, self.vocab_size,
                                             generator, valid=valid, noise=noise, step_prob=prob)
            return discrete_diffusion_term(den, x0, i, steps, self.schedule, generator, valid=valid, noise=noise,
                                           masked_only=self.masked_only, step_prob=prob, cond=cond)
        return continuous_diffusion_term(den, x0, t, self.schedule, generator, t_min=d.t_min, valid=valid, noise=noise,
                                         masked_only=self.masked_only, time_sampler=time_sampler, cond=cond)

    def _decoder(self, x0, valid, generator=None, noise=None) -> Tensor:
        """The ablation's t = 0 term (loss/ablation.py): zero only with carry-over and alpha_0 = 1."""
        if self.config.diffusion.carry_over and self.schedule.alpha_0 == 1.0:
            return torch.zeros(x0.shape[0], device=x0.device)
        return decoder_term(self.denoiser.full_log_probs, x0, self.schedule, self.vocab_size, generator,
                            valid=valid, noise=noise)

    def train_loss(self, x0, t, noise, valid=None, labels=None, cond=None):
        d = self.config.diffusion
        per_seq = self._diffusion(x0, t, noise[0], valid, d.discrete_steps or None, labels=labels, time_sampler=d.time_sampler,
                                  cond=cond)
        if self.ablated:
            per_seq = per_seq + self._decoder(x0, valid, noise=noise[0])  # same uniforms: each term stays unbiased
        return per_seq, per_seq.detach()

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None, cond=None):
        d = self.config.diffusion
        steps = discrete_steps or (d.discrete_steps if self.ablated else None)
        if not self.ablated:
            return nelbo(self.denoiser, x0, t, self.schedule, generator, t_min=d.t_min, discrete_steps=steps, valid=valid,
                         masked_only=self.masked_only, cond=cond)
        if cond is not None:
            raise MaskdiffError("a condition (prompt) needs SUBS; this run is MDLM's ablation (carry_over or zero_mask off)")
        diffusion = self._diffusion(x0, t, None, valid, steps, generator)
        recon = self._decoder(x0, valid, generator)
        return NELBOTerms(diffusion.float(), recon.float(), prior_term(x0, self.schedule, self.vocab_size, valid=valid).float(),
                          token_counts(x0, valid))
