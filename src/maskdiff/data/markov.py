"""Character sources of known entropy: random sparse Markov chains of order k.

Each context of k symbols allows ``successors`` next symbols, with Dirichlet(1) probabilities; the rest
have probability 0. The entropy rate, the conditional entropies given the last j < k symbols (j = 0
is the unigram entropy) and the entropy of a whole chunk of L symbols are computed exactly from the
stationary distribution, so a model's bound on such text can be set against the true value: a model
that only learnt the symbol frequencies sits at the unigram entropy, one that learnt the previous
symbol at the first-order entropy, and no valid bound goes below the chunk entropy.

The state is the last k symbols as a base-V number, the newest symbol least significant, so the next
state after symbol v is (state * V + v) mod V^k.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

TEXT8_ALPHABET = "abcdefghijklmnopqrstuvwxyz "


@dataclass
class MarkovSource:
    """A random sparse Markov chain of order ``order`` over ``alphabet``, drawn from ``seed``."""

    order: int = 2
    successors: int = 4
    seed: int = 0
    alphabet: str = TEXT8_ALPHABET

    def __post_init__(self):
        V = len(self.alphabet)
        if self.order < 1:
            raise MaskdiffError(f"order must be at least 1, got {self.order}")
        if not 1 <= self.successors <= V:
            raise MaskdiffError(f"successors must be in 1..{V}, got {self.successors}")
        if V ** self.order > 2_000_000:
            raise MaskdiffError(f"{V}^{self.order} contexts are too many; lower the order or the alphabet")
        g = torch.Generator().manual_seed(self.seed)
        S = V ** self.order
        nxt = torch.rand(S, V, generator=g, dtype=torch.float64).argsort(-1)[:, : self.successors]  # allowed symbols
        weights = -torch.log(torch.rand(S, self.successors, generator=g, dtype=torch.float64))  # Dirichlet(1)
        self.transition = torch.zeros(S, V, dtype=torch.float64).scatter_(1, nxt, weights / weights.sum(1, keepdim=True))
        self.stationary = self._stationary()

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def _next_state(self) -> Tensor:  # (S, V): the state after each symbol
        V, S = self.vocab_size, self.transition.shape[0]
        return (torch.arange(S)[:, None] * V + torch.arange(V)[None]) % S

    def _stationary(self, tol: float = 1e-15, max_iter: int = 100_000) -> Tensor:
        """The stationary distribution over states, by power iteration on the sparse chain."""
        S = self.transition.shape[0]
        nxt, P = self._next_state().reshape(-1), self.transition.reshape(-1)
        pi = torch.full((S,), 1.0 / S, dtype=torch.float64)
        for _ in range(max_iter):
            new = torch.zeros(S, dtype=torch.float64).index_add_(0, nxt, (pi[:, None] * self.transition).reshape(-1))
            # a lazy step (half stay) makes the iteration converge on periodic chains too
            new = 0.5 * (new + pi)
            if float((new - pi).abs().sum()) < tol:
                return new / new.sum()
            pi = new
        raise MaskdiffError("the chain's stationary distribution did not converge; try another seed")

    # ---- exact entropies, in bits --------------------------------------------------------------
    def conditional_entropy_bits(self, context: int) -> float:
        """H(X_n | the previous ``context`` symbols) under the stationary chain; context = order is the
        entropy rate, 0 the unigram entropy."""
        if not 0 <= context <= self.order:
            raise MaskdiffError(f"context must be in 0..{self.order}, got {context}")
        V, S = self.vocab_size, self.transition.shape[0]
        joint = self.stationary[:, None] * self.transition  # (S, V): P(state, next symbol)
        ctx = torch.arange(S) % (V ** context)  # the last `context` symbols of the state
        by_ctx = torch.zeros(V ** context, V, dtype=torch.float64).index_add_(0, ctx, joint)
        return _entropy_bits(by_ctx.reshape(-1)) - _entropy_bits(by_ctx.sum(1))

    def entropy_rate_bits(self) -> float:
        return self.conditional_entropy_bits(self.order)

    def chunk_entropy_bits(self, length: int) -> float:
        """H(X_1, ..., X_L) in bits for a chunk of ``length`` symbols taken from the stationary chain:
        the entropy of its first k symbols (a state) plus L - k times the entropy rate."""
        if length < self.order:
            raise MaskdiffError(f"chunk length {length} is shorter than the order {self.order}")
        return _entropy_bits(self.stationary) + (length - self.order) * self.entropy_rate_bits()

    def summary(self, length: int) -> Dict[str, float]:
        """The reference figures in bits per symbol: unigram, first order, the entropy rate and a chunk of
        ``length`` symbols (the floor of any valid bound on windows of that length)."""
        out = {"unigram_bits": self.conditional_entropy_bits(0)}
        if self.order > 1:
            out["first_order_bits"] = self.conditional_entropy_bits(1)
        out["entropy_rate_bits"] = self.entropy_rate_bits()
        out[f"chunk{length}_bits_per_symbol"] = self.chunk_entropy_bits(length) / length
        return out

    # ---- sampling ------------------------------------------------------------------------------
    def sample_ids(self, n: int, generator: torch.Generator) -> Tensor:
        """n symbols (ids into the alphabet) from the chain started in its stationary distribution."""
        from bisect import bisect_right

        V, S = self.vocab_size, self.transition.shape[0]
        cdf = self.transition.cumsum(1)
        cdf[:, -1] = 1.0
        rows = cdf.tolist()
        state = int(torch.multinomial(self.stationary, 1, generator=generator))
        out = []
        for u in torch.rand(n, generator=generator, dtype=torch.float64).tolist():  # about 1 s per million
            v = min(bisect_right(rows[state], u), V - 1)
            out.append(v)
            state = (state * V + v) % S
        return torch.tensor(out, dtype=torch.long)

    def sample_text(self, n: int, generator: torch.Generator) -> str:
        return "".join(self.alphabet[i] for i in self.sample_ids(n, generator).tolist())

    def write(self, path: Path, n: int, seed: int = 1) -> Path:
        """Write n symbols drawn with ``seed`` to a UTF-8 text file (for ``maskdiff train --corpus``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.sample_text(n, torch.Generator().manual_seed(seed)), encoding="utf-8")
        return path


def _entropy_bits(p: Tensor) -> float:
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())
