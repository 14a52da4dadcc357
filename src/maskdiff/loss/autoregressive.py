"""The autoregressive baseline's loss: exact negative log-likelihood, sum_n -log p(x^n | x^{<n})
(docs/math.md (eq. 17)).

The network reads [BOS, x^1, ..., x^{L-1}] with causal attention and predicts x^1..x^L, so the figure
covers all L tokens and is directly comparable with a diffusion NELBO over the same sequences.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

NextTokenLogProbs = Callable[[Tensor], Tensor]  # inputs (B, L) -> log p(next token) (B, L, V)


def shift_right(x0: Tensor, bos_id: int) -> Tensor:
    """[BOS, x^1, ..., x^{L-1}]: the inputs that predict x^1..x^L.  (B, L) -> (B, L)."""
    bos = torch.full_like(x0[:, :1], bos_id)
    return torch.cat([bos, x0[:, :-1]], dim=1)


def autoregressive_nll(log_probs: NextTokenLogProbs, x0: Tensor, bos_id: int, *, valid: Optional[Tensor] = None) -> Tensor:
    """Exact NLL in nats of each sequence, padding (``valid`` False) left out. (B, L) -> (B,)."""
    log_p = log_probs(shift_right(x0, bos_id))  # (B, L, V)
    nll = -log_p.gather(-1, x0[..., None]).squeeze(-1)
    if valid is not None:
        nll = torch.where(valid, nll, torch.zeros_like(nll))
    return nll.sum(-1)
