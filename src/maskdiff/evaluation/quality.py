"""Quality of generated samples in one report: generative perplexity under a judge LM
(evaluation/judge.py) beside unigram entropy and repeated n-grams (evaluation/metrics.py).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Optional

from maskdiff.errors import MaskdiffError
from maskdiff.evaluation.judge import EvaluatorLM
from maskdiff.evaluation.metrics import repeated_ngram_rate, repeated_word_ngram_rate, unigram_entropy


@dataclass(frozen=True, kw_only=True)
class QualityReport:
    """Quality of one batch of samples from one sampler setting."""

    gen_ppl: Optional[float]
    """Token-weighted perplexity of the decoded samples under ``evaluator``; None when not measured."""
    unigram_entropy: float
    """Entropy in bits of the pooled token frequencies of the samples (low = repetitive)."""
    repeated_4gram_rate: float
    """Mean fraction of a sample's token 4-grams that already occurred earlier in it."""
    nfe_mean: float
    """Mean number of network calls per sample."""
    seconds_per_sample: float
    """Wall-clock sampling time divided by the number of samples."""
    steps: int
    """Number of sampling steps asked for."""
    sampler: str
    """Name of the sampler."""
    evaluator: Optional[str]
    """Name of the evaluator LM behind ``gen_ppl``; None when gen_ppl was not measured."""
    repeated_word_4gram_rate: Optional[float] = None
    """As repeated_4gram_rate over whitespace-separated words (character models); None if not measured."""

    def __post_init__(self):
        if (self.gen_ppl is None) != (self.evaluator is None):
            raise MaskdiffError("QualityReport: gen_ppl and evaluator must be given together")

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line, e.g. ``ancestral, 128 steps: gen-PPL 41.30 (smollm2-135m-instruct-q4_1), ...``."""
        parts = []
        if self.gen_ppl is not None:
            parts.append(f"gen-PPL {self.gen_ppl:.2f} ({self.evaluator})")
        parts.append(f"unigram entropy {self.unigram_entropy:.3f} bits")
        parts.append(f"repeated 4-grams {self.repeated_4gram_rate:.3f}")
        if self.repeated_word_4gram_rate is not None:
            parts.append(f"repeated word 4-grams {self.repeated_word_4gram_rate:.3f}")
        parts.append(f"NFE {self.nfe_mean:.1f}")
        parts.append(f"{self.seconds_per_sample:.3f} s/sample")
        return f"{self.sampler}, {self.steps} steps: " + ", ".join(parts)


def report_for_samples(samples, sampler: str, steps: int, *, evaluator: Optional[EvaluatorLM] = None,
                       batch_size: int = 8, progress: bool = False, device=None) -> QualityReport:
    """QualityReport of sampler output with ``tokens`` (N, L), ``texts``, ``nfe`` (N,) and ``seconds``.

    Loads SmolLM2 (:meth:`EvaluatorLM.smollm2`) when no evaluator is given. Token statistics are
    over ``tokens``; the word 4-gram rate and gen-PPL over the decoded ``texts``.
    """
    n = len(samples.texts)
    if n == 0:
        raise MaskdiffError("report_for_samples: no samples")
    if evaluator is None:
        if progress:
            print("loading the evaluator LM (SmolLM2-135M-Instruct, about 30 s) ...", file=sys.stderr, flush=True)
        evaluator = EvaluatorLM.smollm2()
        if device is not None:
            evaluator.model.to(device)  # nll() sends each batch where the model is
    ppl, _ = evaluator.perplexity(samples.texts, batch_size=batch_size, progress=progress)
    try:
        words = repeated_word_ngram_rate(samples.texts, 4)
    except MaskdiffError:  # every sample has fewer than 4 words: the rate is undefined
        words = None
    return QualityReport(
        gen_ppl=ppl,
        unigram_entropy=unigram_entropy(samples.tokens),
        repeated_4gram_rate=repeated_ngram_rate(samples.tokens, 4),
        repeated_word_4gram_rate=words,
        nfe_mean=float(samples.nfe.float().mean()),
        seconds_per_sample=float(samples.seconds) / n,
        steps=int(steps),
        sampler=sampler,
        evaluator=evaluator.name,
    )
