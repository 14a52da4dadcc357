"""Block diffusion (BD3-LM, Arriola et al. 2025): masked diffusion within blocks of L' tokens, each block
conditioned on the clean blocks before it; trained in one pass over [x_t, x_0] (docs/math.md#block)."""
from __future__ import annotations

from typing import Optional

from maskdiff.config import RunConfig
from maskdiff.denoiser import BlockDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.loss.block import block_diffusion_term, block_nelbo, check_mask_rates
from maskdiff.objectives.base import Objective
from maskdiff.schedules import get_schedule


class BlockDiffusion(Objective):
    """BD3-LM: the block NELBO (loss/block.py) on the transformer's two-stream mode, sampled block by block
    with a key-value cache of the finished blocks (sampling/block.py). ``diffusion.block_size`` = 1 is an
    autoregressive model, = L masked diffusion."""

    name = "block"
    time_conditioning_allowed = False
    continuous_time_only = True
    samples_with = "block"
    block_network = True
    streams = 2
    any_length = True
    conditional = True

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        d = config.diffusion
        self.schedule = get_schedule(d.schedule, **d.schedule_args)

    def make_denoiser(self, network):
        return BlockDenoiser(network, self.vocab_size, self.config.diffusion.block_size, max_length=self.config.data.length)

    @classmethod
    def validate(cls, config: RunConfig) -> None:
        super().validate(config)
        d, L = config.diffusion, config.data.length
        if d.block_size < 1:
            raise MaskdiffError("the block objective needs a block size: set block_size (--block-size N), e.g. 4 or 16")
        if L % d.block_size:
            raise MaskdiffError(f"the block size {d.block_size} must divide the sequence length {L}")
        check_mask_rates((d.mask_rate_min, d.mask_rate_max))
        if config.model.time_conditioned:
            raise MaskdiffError("the block objective's network is not time-conditioned (each block has its own t); "
                                "leave out --time-conditioned")
        if config.data.packing != "wrap":
            raise MaskdiffError("the block objective trains on 'wrap' packing only (no padding); leave out --packing pad")

    def describe_estimate(self, discrete_steps: Optional[int] = None) -> str:
        return f"block NELBO (L' = {self.config.diffusion.block_size})"

    @property
    def mask_rates(self):
        d = self.config.diffusion
        return None if (d.mask_rate_min, d.mask_rate_max) == (0.0, 1.0) else (d.mask_rate_min, d.mask_rate_max)

    def train_loss(self, x0, t, noise, valid=None, labels=None, cond=None):
        d = self.config.diffusion
        per_seq = block_diffusion_term(self.denoiser, x0, t, self.schedule, t_min=d.t_min, noise=noise[0],
                                       mask_rates=self.mask_rates, time_sampler=d.time_sampler, cond=cond)
        return per_seq, per_seq.detach()  # with clipped mask rates the logged figure is that loss, not a bound

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None, cond=None):
        if discrete_steps:
            raise MaskdiffError("the block objective evaluates in continuous time; leave out --discrete-steps")
        return block_nelbo(self.denoiser, x0, t, self.schedule, generator, t_min=self.config.diffusion.t_min, cond=cond)

    def own_sample(self, shape, *, steps, generator, x_init=None, progress=False, **kwargs):
        from maskdiff.sampling.block import block_sample

        prompt = None
        if x_init is not None:
            fixed = int((x_init[0] != self.vocab_size).long().cumprod(0).sum())
            prompt = x_init[0, :fixed] if fixed else None
        return block_sample(self.denoiser, self.schedule, shape[0], shape[1], steps=steps, generator=generator, prompt=prompt,
                            window=self.config.data.length, progress=progress, **kwargs)
