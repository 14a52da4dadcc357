"""Statistics of generated samples that need no model: unigram entropy and repeated n-grams.

Generative perplexity alone rewards dull, repetitive text (evaluation/judge.py scores it), so it is
reported beside the unigram entropy of the samples (low entropy = repetition, MDLM/ReMDM report both)
and the rate of repeated n-grams (evaluation/quality.py puts them in one report).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, List, Optional, Sequence

from torch import Tensor

from maskdiff.errors import MaskdiffError

def _samples(samples, what: str) -> List[Sequence[Hashable]]:
    """A list of samples (each a str, a sequence of tokens or a 1-D tensor) or a (N, L) tensor."""
    if isinstance(samples, Tensor):
        if samples.dim() != 2:
            raise MaskdiffError(f"{what}: a tensor of samples must be 2-D (N, L), got shape {tuple(samples.shape)}")
        return samples.tolist()
    if isinstance(samples, str):
        raise MaskdiffError(f"{what}: expected a list of samples, got one string; pass [text]")
    out = []
    for i, s in enumerate(samples):
        if isinstance(s, Tensor):
            if s.dim() != 1:
                raise MaskdiffError(f"{what}: sample {i} is a tensor of shape {tuple(s.shape)}; each sample must be 1-D")
            s = s.tolist()
        elif not isinstance(s, (str, Sequence)):
            raise MaskdiffError(f"{what}: sample {i} is a {type(s).__name__}; each sample must be a str or a sequence of tokens")
        out.append(s)
    if not out:
        raise MaskdiffError(f"{what}: no samples given")
    return out


def unigram_entropy(samples) -> float:
    """Entropy in bits of the pooled unigram frequencies of all samples.

    Strings count characters, token sequences count tokens: ``unigram_entropy(["aabb"]) == 1.0``.
    """
    counts: Counter = Counter()
    for s in _samples(samples, "unigram_entropy"):
        counts.update(s)
    total = sum(counts.values())
    if total == 0:
        raise MaskdiffError("unigram_entropy: the samples hold no tokens")
    return max(0.0, -sum(c / total * math.log2(c / total) for c in counts.values()))


def _repeated_rate(sample: Sequence[Hashable], n: int) -> Optional[float]:
    """Fraction of the n-grams of one sample that already occurred earlier in it; None if it has none."""
    seen, repeated, total = set(), 0, 0
    for i in range(len(sample) - n + 1):
        gram = tuple(sample[i : i + n])
        repeated += gram in seen
        seen.add(gram)
        total += 1
    return repeated / total if total else None


def repeated_ngram_rate(samples, n: int = 4) -> float:
    """Mean over samples of the fraction of a sample's n-grams that already occurred earlier in it.

    Strings give character n-grams, token sequences token n-grams. "abababab" has the 4-grams
    abab, baba, abab, baba, abab: three of five are repeats, rate 0.6. Samples shorter than ``n``
    have no n-grams and are left out of the mean (an error if every sample is that short).
    """
    if not isinstance(n, int) or n < 1:
        raise MaskdiffError(f"repeated_ngram_rate: n must be a positive integer, got {n!r}")
    rates = [r for r in (_repeated_rate(s, n) for s in _samples(samples, "repeated_ngram_rate")) if r is not None]
    if not rates:
        raise MaskdiffError(f"repeated_ngram_rate: every sample is shorter than n={n}")
    return sum(rates) / len(rates)


def repeated_word_ngram_rate(texts: Sequence[str], n: int = 4) -> float:
    """repeated_ngram_rate over whitespace-separated words of decoded texts (for character models)."""
    texts = _samples(texts, "repeated_word_ngram_rate")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise MaskdiffError(f"repeated_word_ngram_rate: sample {bad[0]} is not a str; pass decoded texts")
    return repeated_ngram_rate([t.split() for t in texts], n)
