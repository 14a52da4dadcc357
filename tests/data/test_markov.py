"""Known-entropy Markov sources: the exact entropies against enumeration and against samples."""
import itertools
import math

import pytest
import torch

from maskdiff.data.markov import MarkovSource
from maskdiff.errors import MaskdiffError


def brute_force_chunk_entropy(source: MarkovSource, length: int) -> float:
    """H(X_1..X_L) by enumerating every sequence of the stationary chain (tiny alphabets only)."""
    V, k = source.vocab_size, source.order
    total = 0.0
    for seq in itertools.product(range(V), repeat=length):
        state = 0
        for v in seq[:k]:
            state = state * V + v
        p = float(source.stationary[state])
        for v in seq[k:]:
            p *= float(source.transition[state, v])
            state = (state * V + v) % (V ** k)
        if p > 0:
            total -= p * math.log2(p)
    return total


@pytest.mark.parametrize("order,successors,length", [(1, 2, 5), (2, 2, 6), (2, 3, 5)])
def test_chunk_entropy_equals_enumeration(order, successors, length):
    source = MarkovSource(order=order, successors=successors, seed=3, alphabet="abc")
    assert source.chunk_entropy_bits(length) == pytest.approx(brute_force_chunk_entropy(source, length), abs=1e-9)


def test_stationary_distribution_is_stationary():
    source = MarkovSource(order=2, successors=4, seed=0)
    V, S = source.vocab_size, source.transition.shape[0]
    nxt = (torch.arange(S)[:, None] * V + torch.arange(V)[None]) % S
    moved = torch.zeros(S, dtype=torch.float64).index_add_(0, nxt.reshape(-1), (source.stationary[:, None] * source.transition).reshape(-1))
    assert torch.allclose(moved, source.stationary, atol=1e-12)


def test_entropies_against_samples():
    """Plug-in entropies of 300k sampled symbols match the exact unigram, first-order and rate."""
    source = MarkovSource(order=2, successors=4, seed=0, alphabet="abcdefgh")
    x = source.sample_ids(300_000, torch.Generator().manual_seed(0))
    V = source.vocab_size

    def plug_in(context: int) -> float:
        idx = torch.zeros(x.numel() - 2, dtype=torch.long)
        for j in range(1, context + 1):
            idx = idx * V + x[2 - j : x.numel() - j]
        joint = torch.bincount(idx * V + x[2:], minlength=V ** (context + 1)).double()
        ctx = joint.reshape(-1, V).sum(1)
        h = lambda c: float(-(c[c > 0] / c.sum() * torch.log2(c[c > 0] / c.sum())).sum())  # noqa: E731
        return h(joint) - h(ctx)

    for context in (0, 1, 2):
        assert plug_in(context) == pytest.approx(source.conditional_entropy_bits(context), abs=0.01), context
    assert source.conditional_entropy_bits(0) > source.conditional_entropy_bits(1) > source.conditional_entropy_bits(2)


def test_deterministic_chain_has_zero_rate_and_bad_arguments_are_clear():
    assert MarkovSource(order=1, successors=1, seed=0).entropy_rate_bits() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(MaskdiffError, match="successors must be in 1..27"):
        MarkovSource(order=1, successors=30)
    with pytest.raises(MaskdiffError, match="shorter than the order"):
        MarkovSource(order=2).chunk_entropy_bits(1)
