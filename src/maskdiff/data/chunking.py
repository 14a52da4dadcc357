"""Turning a token stream into fixed-length sequences."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError


def random_windows(stream: Tensor, length: int, batch: int, generator: torch.Generator) -> Tensor:
    """``batch`` windows of ``length`` tokens at uniformly random offsets of a 1-D stream: (B, L)."""
    if stream.numel() < length:
        raise MaskdiffError(f"the training data has {stream.numel()} tokens, fewer than one sequence of {length}")
    starts = torch.randint(0, stream.numel() - length + 1, (batch,), generator=generator)
    return stream[starts[:, None] + torch.arange(length)[None]]


def contiguous_chunks(stream: Tensor, length: int, pad_id: int = 0) -> Tuple[Tensor, Tensor]:
    """Non-overlapping chunks covering the stream exactly once; the last is padded.

    Returns tokens (N, L) and valid (N, L) bool (False on padding).
    """
    n = stream.numel()
    if n == 0:
        raise MaskdiffError("cannot chunk an empty token stream")
    rows = -(-n // length)
    tokens = torch.full((rows * length,), pad_id, dtype=torch.long)
    tokens[:n] = stream
    valid = torch.zeros(rows * length, dtype=torch.bool)
    valid[:n] = True
    return tokens.view(rows, length), valid.view(rows, length)
