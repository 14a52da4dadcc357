"""Evaluation: the NELBO over a whole split with a 95% interval, as BPC, bits per token or PPL
(docs/math.md#metrics).

A diffusion NELBO is an upper bound on -log p, so every figure is printed as "<=". It is also a
Monte-Carlo estimate: each sequence gets its own estimate (averaged over ``passes`` draws of t and
mask), and the interval is over sequences, so it covers both the choice of text and the Monte-Carlo
noise. Per-token figures are ratio estimates sum(NELBO) / sum(tokens) with a delta-method standard
error, which handles a shorter last chunk.

Conditional models (fine-tuned on prompt/response pairs) are evaluated with ``cond``, the prompt of each
row: the figure is then the NELBO of the response given the prompt, per response token (the end-of-text
padding included, since the model is trained to produce it) and per response (:meth:`EvalResult.per_sequence`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from maskdiff.loss import DEFAULT_T_MIN, NELBOTerms, low_discrepancy_times, nelbo, scored_positions
from maskdiff.process import uniform
from maskdiff.schedules import Schedule

# (x0 (B, L), t (B,) on [t_min, 1], generator, valid (B, L) or None) -> per-sequence NELBO terms; with a
# condition (the prompt of conditional models) it is called with a fifth argument, cond (B, L)
TermsFn = Callable[..., NELBOTerms]


def masked_terms(denoise, schedule: Schedule, *, t_min: float = DEFAULT_T_MIN, discrete_steps: Optional[int] = None,
                 masked_only: bool = False) -> TermsFn:
    """The NELBO terms of a plain masked-diffusion denoiser, continuous or discrete time; masked_only:
    logits at masked positions only (the same numbers, less work with a large vocabulary)."""

    def terms(x, t, gen, valid, cond=None):
        return nelbo(denoise, x, t, schedule, gen, t_min=t_min, discrete_steps=discrete_steps, valid=valid, masked_only=masked_only,
                     cond=cond)

    return terms

Z95 = 1.959963984540054


def _generator(seed: int, *keys: int) -> torch.Generator:
    """The generator of one (pass, batch): a CPU generator whatever the model's device, so that t and the
    masks, hence the estimate up to the network's arithmetic, are the same on every device."""
    value = seed
    for k in keys:
        value = (value * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(value)


@torch.no_grad()
def nelbo_estimates(
    terms: TermsFn,
    tokens: Tensor,
    valid: Optional[Tensor],
    *,
    t_min: float = DEFAULT_T_MIN,
    passes: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    device=None,
    cond: Optional[Tensor] = None,
) -> Tensor:
    """NELBO in nats of each row of ``tokens`` (N, L), averaged over ``passes`` estimates: (N,) float64.

    ``terms`` gives the per-sequence terms (see :func:`masked_terms`, or an objective's ``eval_terms``).
    Each pass draws stratified t over each batch (MDLM Sec. 3.4) and one mask per sequence; the
    reconstruction and prior terms are included. ``valid`` (N, L) marks real tokens (padding is never
    masked or counted, and the network does not attend to it). ``device``: where the batches go (the
    model's; default: where ``tokens`` are); the estimates come back on the CPU. ``cond`` (N, L): the
    condition (prompt) of each row, never masked or scored; the estimates are then conditional NELBOs.
    """
    N = tokens.shape[0]
    device = tokens.device if device is None else torch.device(device)
    total = torch.zeros(N, dtype=torch.float64, device="cpu")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=passes * N, desc="eval", unit="seq", leave=False, dynamic_ncols=True)
    for p in range(passes):
        for b, lo in enumerate(range(0, N, batch_size)):
            x = tokens[lo : lo + batch_size].to(device, non_blocking=True)
            v = None if valid is None else valid[lo : lo + batch_size].to(device, non_blocking=True)
            gen = _generator(seed, p, b)
            u = float(uniform((), gen, "cpu"))
            t = low_discrepancy_times(x.shape[0], u, t_min, device=device)
            c = () if cond is None else (cond[lo : lo + batch_size].to(device, non_blocking=True),)
            total[lo : lo + batch_size] += terms(x, t, gen, v, *c).total.double().cpu()
            if bar is not None:
                bar.update(x.shape[0])
    if bar is not None:
        bar.close()
    return total / passes


@dataclass
class EvalResult:
    """Per-sequence NELBO (nats) and token counts, with per-token summaries."""

    nelbo: Tensor
    tokens: Tensor
    bound: bool = True  # False for an exact likelihood (the autoregressive baseline): print "=", not "<="
    length: Optional[Tensor] = None  # -log p(row length) per row, included in nelbo ('pad' packing), or None
    conditional: bool = False  # the NELBO of each row's response given its prompt (tokens: the response's)

    @property
    def nats_per_token(self) -> float:
        return float(self.nelbo.sum() / self.tokens.sum())

    def interval(self, z: float = Z95):
        """(low, high) of nats per token: ratio estimator with a delta-method standard error."""
        y, n = self.nelbo.double(), self.tokens.double()
        r = y.sum() / n.sum()
        k = y.numel()
        if k < 2:
            return float(r), float(r)
        resid = y - r * n
        se = math.sqrt(float(k / (k - 1) * (resid**2).sum()) ) / float(n.sum())
        return float(r) - z * se, float(r) + z * se

    def per_sequence(self, z: float = Z95):
        """(mean, low, high) of the NELBO in nats per row (per response, for a conditional model)."""
        y = self.nelbo.double()
        mean = float(y.mean())
        if y.numel() < 2:
            return mean, mean, mean
        half = z * float(y.std()) / math.sqrt(y.numel())
        return mean, mean - half, mean + half

    def bits_per_token(self):
        """(estimate, low, high) in bits per token (bits per character for character models)."""
        lo, hi = self.interval()
        return self.nats_per_token / math.log(2), lo / math.log(2), hi / math.log(2)

    def perplexity(self):
        """(estimate, low, high) of exp(NELBO / tokens); the interval endpoints transform monotonically."""
        lo, hi = self.interval()
        return math.exp(self.nats_per_token), math.exp(lo), math.exp(hi)

    def summary(self, unit: str = "BPC") -> str:
        if unit.upper() == "PPL":
            est, lo, hi = self.perplexity()
            return f"PPL {self.relation} {est:.3f} (95% CI {lo:.3f}-{hi:.3f})"
        est, lo, hi = self.bits_per_token()
        return f"{unit} {self.relation} {est:.4f} (95% CI {lo:.4f}-{hi:.4f})"

    @property
    def relation(self) -> str:
        return "<=" if self.bound else "="

    def to_dict(self) -> dict:
        bpt, lo, hi = self.bits_per_token()
        ppl = self.perplexity()
        return {
            "sequences": int(self.nelbo.numel()),
            "tokens": int(self.tokens.sum()),
            "nats_per_token": self.nats_per_token,
            "bits_per_token": bpt,
            "bits_per_token_ci95": [lo, hi],
            "perplexity_bound": ppl[0],
            "perplexity_ci95": [ppl[1], ppl[2]],
            "bound": self.bound,
            "length_nats": None if self.length is None else float(self.length.sum()),
            **({"conditional": True, "nats_per_response": self.per_sequence()[0], "nats_per_response_ci95": list(self.per_sequence()[1:])}
               if self.conditional else {}),
        }


def evaluate(terms: TermsFn, tokens: Tensor, valid: Optional[Tensor], *, cond: Optional[Tensor] = None, **kwargs) -> EvalResult:
    """NELBO of every sequence of a split: see :func:`nelbo_estimates` for the arguments."""
    est = nelbo_estimates(terms, tokens, valid, cond=cond, **kwargs)
    scored = scored_positions(valid, cond)
    counts = (scored.sum(-1).double().cpu() if scored is not None
              else torch.full((tokens.shape[0],), float(tokens.shape[1]), dtype=torch.float64, device="cpu"))
    return EvalResult(est, counts, conditional=cond is not None)


def unigram_entropy_bits(stream: Tensor, vocab_size: int) -> float:
    """Entropy in bits of the token frequencies of a stream: what a model that ignores context gets."""
    p = torch.bincount(stream.flatten(), minlength=vocab_size).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())
