"""Training batches and evaluation rows of a corpus, for any tokenizer and either packing.

Training draws from a *source*: ``draw(batch, generator) -> (x0 (B, L), valid (B, L) or None)``, and
every random choice comes from the generator it is given (the trainer's generator of step k), so a
resumed run replays the same batches. :class:`WindowSource` draws windows at random offsets of a
packed stream; :class:`RowSource` draws whole padded rows.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from maskdiff.data.chunking import random_windows
from maskdiff.data.packing import TokenDocuments, document_bounds, pad_id_for, pad_rows, wrap
from maskdiff.errors import MaskdiffError


class WindowSource:
    """Windows of ``length`` tokens at uniformly random offsets of a 1-D stream (``wrap`` packing)."""

    def __init__(self, stream: Tensor, length: int):
        if stream.numel() < length:
            raise MaskdiffError(f"the training data has {stream.numel()} tokens, fewer than one sequence of {length}")
        self.stream, self.length = stream, length

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor], None]:
        """(x0 (B, L), valid: None, labels: None)."""
        return random_windows(self.stream, self.length, batch, generator), None, None

    def describe(self) -> str:
        return "random_windows(seed, step)"


class RowSource:
    """Rows drawn uniformly with replacement from fixed padded rows (``pad`` packing)."""

    def __init__(self, tokens: Tensor, valid: Tensor):
        self.tokens, self.valid = tokens, valid

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor], None]:
        """(x0 (B, L), valid (B, L), labels: None)."""
        idx = torch.randint(0, self.tokens.shape[0], (batch,), generator=generator)
        return self.tokens[idx], self.valid[idx], None

    def describe(self) -> str:
        return "random_rows(seed, step)"


def encode_documents(tokenizer, texts: List[str]) -> List:
    """Token ids of each document (the tokenizer's batch encoder where it has one)."""
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(texts)
    if getattr(tokenizer, "normalize", None) == "text8":
        return [tokenizer.encode(" ".join(tokenizer.prepare(t).split())) for t in texts]
    return [tokenizer.encode(t) for t in texts]


def token_documents(tokenizer, texts: List[str], *, corpus: str, split: str, use_cache: bool = True) -> TokenDocuments:
    """The documents of a split as tokens, through the on-disk cache of tokenized documents."""
    from maskdiff.data.token_cache import cached_documents

    encode = lambda ts: encode_documents(tokenizer, ts)  # noqa: E731
    if not use_cache:
        return TokenDocuments.from_lists(encode(texts))
    return cached_documents(texts, tokenizer, encode, description={"corpus": corpus, "split": split})


def packed_stream(tokenizer, docs: TokenDocuments) -> Tensor:
    prefix, suffix = document_bounds(tokenizer, "wrap")
    return wrap(docs, prefix, suffix)


def padded_rows(tokenizer, docs: TokenDocuments, length: int) -> Tuple[Tensor, Tensor]:
    prefix, suffix = document_bounds(tokenizer, "pad")
    return pad_rows(docs, length, prefix, suffix, pad_id_for(tokenizer))

