"""What a run trains: the network plus its parameterization and loss, built from a RunConfig.

* ``masked``  masked diffusion (MD4/MDLM) with SUBS; with ``carry_over`` or ``zero_mask`` off, MDLM's
              ablation (the full per-position discrete-time KL, loss/ablation.py);
* ``genmd4``  masked diffusion with GenMD4's learnable per-token schedule (MD4 Sec. 5);
* ``sedd``    SEDD's score-entropy loss on the same network (absorbing process; the papers' baseline);
* ``ar``      the autoregressive baseline: the same transformer with causal attention.

Each objective gives the trainer ``train_loss`` (what to backpropagate, and the NELBO to log) and the
evaluator ``eval_terms`` (per-sequence NELBO terms, an exact NLL for ``ar``). The weights of every
part are one flat dict: the network's own names (so checkpoints of masked runs keep their layout) and
``genmd4.log_w`` for GenMD4's exponents.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from maskdiff.config import OBJECTIVES, RunConfig
from maskdiff.denoiser import BoundCondition, CausalLM, SUBSDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.loss import NELBOTerms, continuous_diffusion_term, discrete_diffusion_term, discrete_step, nelbo, prior_term, token_counts
from maskdiff.loss.ablation import clean_reconstruction_term, full_kl_discrete_term
from maskdiff.loss.autoregressive import autoregressive_nll
from maskdiff.loss.genmd4 import LearnableExponents, genmd4_loss, genmd4_mask
from maskdiff.loss.masked import masked_cross_entropy, reconstruction_term
from maskdiff.loss.score_entropy import score_entropy_term
from maskdiff.networks.transformer import DiT
from maskdiff.process import uniform
from maskdiff.schedules import get_schedule


def build_network(config: RunConfig, vocab_size: int) -> DiT:
    m, d = config.model, config.diffusion
    return DiT(
        vocab_size,
        config.data.length,
        width=m.width,
        depth=m.depth,
        heads=m.heads,
        mlp_ratio=m.mlp_ratio,
        cond_dim=m.cond_dim,
        time_conditioned=m.time_conditioned and d.objective != "ar",
        causal=d.objective == "ar",
        dropout=m.dropout,
        output_mask_logit=d.objective == "masked" and not d.zero_mask,
        num_classes=m.num_classes,
    )


class Objective:
    """Base: a network, optional extra trainable modules, and the two loss entry points."""

    kind = "?"
    noise_draws = 1  # how many (B, L) sets of mask uniforms one training step needs
    uses_time = True  # whether the trainer's t matters

    def __init__(self, config: RunConfig, vocab_size: int):
        self.config = config
        self.vocab_size = vocab_size
        self.network = build_network(config, vocab_size)
        self.extras: Dict[str, nn.Module] = {}

    # --- parameters and weights, one flat namespace -------------------------------------------
    def named_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        yield from self.network.named_parameters()
        for prefix, module in self.extras.items():
            for n, p in module.named_parameters():
                yield f"{prefix}.{n}", p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> Dict[str, Tensor]:
        out = dict(self.network.state_dict())
        for prefix, module in self.extras.items():
            out.update({f"{prefix}.{n}": v for n, v in module.state_dict().items()})
        return out

    def load_state_dict(self, weights: Dict[str, Tensor], source) -> None:
        """Load a flat dict, with a clear error on any missing, unexpected or wrongly shaped entry."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
        if missing or unexpected or wrong:
            detail = (missing and f"missing {missing[:3]}") or (unexpected and f"unexpected {unexpected[:3]}") or f"shape of {wrong[:3]}"
            raise MaskdiffError(f"{source} does not fit this model's architecture ({detail})")
        self.network.load_state_dict({k: v for k, v in weights.items() if k in self.network.state_dict()})
        for prefix, module in self.extras.items():
            module.load_state_dict({k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(prefix + ".")})

    def train(self, mode: bool = True) -> "Objective":
        self.network.train(mode)
        for m in self.extras.values():
            m.train(mode)
        return self

    def eval(self) -> "Objective":
        return self.train(False)

    def to(self, device) -> "Objective":
        self.network.to(device)
        for m in self.extras.values():
            m.to(device)
        return self

    def set_check_inputs(self, on: bool) -> None:
        self.model.check_inputs = on

    # --- losses ---------------------------------------------------------------------------------
    def train_loss(self, x0: Tensor, t: Tensor, noise: Tensor, valid: Optional[Tensor] = None,
                   labels: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(what to backpropagate (B,), the NELBO estimate to log (B,)), in nats per sequence.

        t: (B,) on [t_min, 1]; noise: (noise_draws, B, L) float64 uniforms for the masks; labels: (B,)
        class labels of a class-conditional masked model (the null class included)."""
        raise NotImplementedError

    def eval_terms(self, x0: Tensor, t: Tensor, generator: torch.Generator, valid: Optional[Tensor] = None,
                   discrete_steps: Optional[int] = None) -> NELBOTerms:
        raise NotImplementedError


class MaskedDiffusion(Objective):
    kind = "masked"

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        d = config.diffusion
        self.schedule = get_schedule(d.schedule, **d.schedule_args)
        self.model = self.denoiser = SUBSDenoiser(
            self.network, vocab_size, time_conditioned=config.model.time_conditioned,
            max_length=config.data.length, carry_over=d.carry_over, zero_mask=d.zero_mask,
        )
        self.ablated = not (d.carry_over and d.zero_mask)
        self.masked_only = config.model.masked_logits  # logits at masked positions only (same loss, less work)

    def _diffusion(self, x0, t, noise, valid, steps: Optional[int], generator=None, labels=None) -> Tensor:
        d = self.config.diffusion
        den = self.denoiser if labels is None else BoundCondition(self.denoiser, labels)
        if steps:
            i = discrete_step(t, steps, d.t_min)
            if self.ablated:
                return full_kl_discrete_term(self.denoiser.full_log_probs, x0, i, steps, self.schedule, self.vocab_size,
                                             generator, valid=valid, noise=noise)
            return discrete_diffusion_term(den, x0, i, steps, self.schedule, generator, valid=valid, noise=noise,
                                           masked_only=self.masked_only)
        return continuous_diffusion_term(den, x0, t, self.schedule, generator, t_min=d.t_min, valid=valid, noise=noise,
                                         masked_only=self.masked_only)

    def train_loss(self, x0, t, noise, valid=None, labels=None):
        per_seq = self._diffusion(x0, t, noise[0], valid, self.config.diffusion.discrete_steps or None, labels=labels)
        if self.ablated and not self.config.diffusion.carry_over:
            per_seq = per_seq + clean_reconstruction_term(self.denoiser.full_log_probs, x0, valid=valid)
        return per_seq, per_seq.detach()

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None):
        d = self.config.diffusion
        steps = discrete_steps or (d.discrete_steps if self.ablated else None)
        if not self.ablated:
            return nelbo(self.denoiser, x0, t, self.schedule, generator, t_min=d.t_min, discrete_steps=steps, valid=valid,
                         masked_only=self.masked_only)
        diffusion = self._diffusion(x0, t, None, valid, steps, generator)
        recon = (torch.zeros(x0.shape[0], device=x0.device) if d.carry_over
                 else clean_reconstruction_term(self.denoiser.full_log_probs, x0, valid=valid))
        return NELBOTerms(diffusion.float(), recon.float(), prior_term(x0, self.schedule, self.vocab_size, valid=valid).float(),
                          token_counts(x0, valid))


class GenMD4(Objective):
    kind = "genmd4"

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        self.noise_draws = config.diffusion.genmd4_samples
        self.exponents = LearnableExponents(vocab_size)
        self.extras = {"genmd4": self.exponents}
        self.model = self.denoiser = SUBSDenoiser(
            self.network, vocab_size, time_conditioned=config.model.time_conditioned, max_length=config.data.length
        )

    @property
    def schedule(self):
        return self.exponents.schedule()

    def train_loss(self, x0, t, noise, valid=None, labels=None):
        out = genmd4_loss(self.denoiser, x0, t, self.exponents.exponents, noise, t_min=self.config.diffusion.t_min, valid=valid)
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
        recon = masked_cross_entropy(self.denoiser(x_t, t0.float()), x0, masked) if bool(masked.any()) else torch.zeros(x0.shape[0], device=x0.device)
        return NELBOTerms(diffusion.float(), recon.float(), torch.zeros(x0.shape[0], device=x0.device), token_counts(x0, valid))


class ScoreEntropy(Objective):
    """SEDD: the network's unnormalised logits are log concrete scores, trained by score entropy.

    Its NELBO is the score-entropy bound (never below the masked-diffusion bound of the same network
    read as a softmax; loss/score_entropy.py). Samplers read the network as that softmax, which is
    SEDD's own reverse step when the scores are normalised; the reported bound is then also an upper
    bound on -log p of the model that is sampled, since that model's own NELBO is never above it."""

    kind = "sedd"

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        self.schedule = get_schedule(config.diffusion.schedule, **config.diffusion.schedule_args)
        self.model = self.denoiser = SUBSDenoiser(
            self.network, vocab_size, time_conditioned=config.model.time_conditioned, max_length=config.data.length
        )

    def train_loss(self, x0, t, noise, valid=None, labels=None):
        per_seq = score_entropy_term(self.denoiser, x0, t, self.schedule, t_min=self.config.diffusion.t_min,
                                     valid=valid, noise=noise[0])
        return per_seq, per_seq.detach()

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None):
        if discrete_steps:
            raise MaskdiffError("the score-entropy objective is evaluated in continuous time only; leave out --discrete-steps")
        t_min = self.config.diffusion.t_min
        diffusion = score_entropy_term(self.denoiser, x0, t, self.schedule, generator, t_min=t_min, valid=valid)
        recon = reconstruction_term(self.denoiser, x0, t_min, self.schedule, generator, valid=valid)
        return NELBOTerms(diffusion.float(), recon.float(), prior_term(x0, self.schedule, self.vocab_size, valid=valid).float(),
                          token_counts(x0, valid))


class Autoregressive(Objective):
    kind = "ar"
    uses_time = False

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        self.model = self.lm = CausalLM(self.network, vocab_size, max_length=config.data.length)

    def train_loss(self, x0, t, noise, valid=None, labels=None):
        nll = autoregressive_nll(self.lm, x0, self.lm.bos_id, valid=valid)
        return nll, nll.detach()

    def eval_terms(self, x0, t, generator, valid=None, discrete_steps=None):
        if discrete_steps:
            raise MaskdiffError("the autoregressive baseline has an exact likelihood; leave out --discrete-steps")
        nll = autoregressive_nll(self.lm, x0, self.lm.bos_id, valid=valid).float()
        zero = torch.zeros(x0.shape[0], device=x0.device)
        return NELBOTerms(nll, zero, zero, token_counts(x0, valid))


def build_objective(config: RunConfig, vocab_size: int) -> Objective:
    kind = config.diffusion.objective
    if kind == "masked":
        return MaskedDiffusion(config, vocab_size)
    if kind == "genmd4":
        return GenMD4(config, vocab_size)
    if kind == "sedd":
        return ScoreEntropy(config, vocab_size)
    if kind == "ar":
        return Autoregressive(config, vocab_size)
    raise MaskdiffError(f"unknown objective {kind!r}; choose one of: {', '.join(OBJECTIVES)}")
