"""Packing tokenized documents into fixed-length rows, two ways (MDLM Sec. 4 data setups).

* ``wrap`` (MDLM's OpenWebText setup): each document becomes ``[BOS] tokens [EOS]`` and the documents
  are concatenated into one stream; training draws windows of L tokens from it, evaluation cuts it
  into consecutive rows. Nothing is padded except the end of the last evaluation row.
* ``pad`` (MDLM's LM1B setup): one document per row, ``[BOS] tokens [EOS]`` followed by padding, with a
  ``valid`` mask that keeps padding out of the masking and the loss. A document longer than L
  continues in further rows, so no token is dropped.

Tokenizers without BOS/EOS tokens (bytes, characters) separate wrapped documents by the encoding of a
blank line instead, and pad rows with nothing around the document.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

PACKINGS = ("wrap", "pad")


@dataclass
class TokenDocuments:
    """Tokenized documents stored flat: document i is ``tokens[offsets[i]:offsets[i + 1]]``."""

    tokens: np.ndarray  # (n,) integer ids
    offsets: np.ndarray  # (D + 1,) int64, offsets[0] = 0, offsets[-1] = n

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)

    @classmethod
    def from_lists(cls, docs: List) -> "TokenDocuments":
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]) if docs else np.zeros(0, np.int64)
        return cls(flat, offsets)


def document_bounds(tokenizer, packing: str) -> Tuple[List[int], List[int]]:
    """(prefix, suffix) token ids put around every document."""
    bos, eos = getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)
    if bos is not None or eos is not None:
        return ([bos] if bos is not None else []), ([eos] if eos is not None else [])
    if packing == "wrap":
        sep = " " if getattr(tokenizer, "normalize", None) == "text8" else "\n\n"
        return [], tokenizer.encode(sep).tolist()
    return [], []


def wrap(docs: TokenDocuments, prefix: List[int], suffix: List[int]) -> Tensor:
    """All documents as one stream ``prefix doc_0 suffix prefix doc_1 suffix ...``: (n,) long."""
    if len(docs) == 0:
        raise MaskdiffError("there are no documents to pack")
    pieces = []
    p, s = np.asarray(prefix, np.int64), np.asarray(suffix, np.int64)
    for i in range(len(docs)):
        pieces += [p, docs.document(i), s]
    return torch.from_numpy(np.concatenate(pieces))


def pad_rows(docs: TokenDocuments, length: int, prefix: List[int], suffix: List[int], pad_id: int) -> Tuple[Tensor, Tensor]:
    """One document per row (continued in further rows when longer than ``length``), padded with
    ``pad_id``. Returns tokens (N, L) and valid (N, L) bool, False on padding."""
    if len(docs) == 0:
        raise MaskdiffError("there are no documents to pack")
    p, s = np.asarray(prefix, np.int64), np.asarray(suffix, np.int64)
    seqs = [np.concatenate([p, docs.document(i), s]) for i in range(len(docs))]
    seqs = [q for q in seqs if q.size]
    rows = sum(-(-q.size // length) for q in seqs)
    tokens = np.full((rows, length), pad_id, dtype=np.int64)
    valid = np.zeros((rows, length), dtype=bool)
    r = 0
    for q in seqs:
        for lo in range(0, q.size, length):
            piece = q[lo : lo + length]
            tokens[r, : piece.size] = piece
            valid[r, : piece.size] = True
            r += 1
    return torch.from_numpy(tokens), torch.from_numpy(valid)


def pad_id_for(tokenizer) -> int:
    """The id written into padding (never seen by the loss): EOS where there is one, else 0."""
    eos = getattr(tokenizer, "eos_id", None)
    return int(eos) if eos is not None else 0


def length_log_probs(valid: Tensor, length: int) -> Tensor:
    """log p(n) of a row length n in 1..L: the lengths of the rows ``valid`` (N, L) (a training split),
    with one pseudo-count for every length (add-one smoothing), so that no length has probability 0.
    Returns (L + 1,) float64; entry 0 is -inf (a row holds at least one token). docs/math.md#packing."""
    return length_log_probs_from_counts(torch.bincount(valid.sum(-1).long(), minlength=length + 1)[: length + 1], length)


def length_log_probs_from_counts(counts: Tensor, length: int) -> Tensor:
    """:func:`length_log_probs` from the number of rows of each length 0..L, (L + 1,) integers (a prepared
    corpus counts them from its document offsets without building a row)."""
    counts = counts[: length + 1].double().clone()
    counts[1:] += 1.0
    counts[0] = 0.0
    return torch.log(counts / counts.sum())


def length_nll(valid: Tensor, log_probs: Tensor) -> Tensor:
    """-log p(length of each row) in nats, (N,) float64: what a pad run's bound adds so that it bounds
    -log p(x) rather than -log p(x | length) (the network is told each row's length)."""
    return -log_probs[valid.sum(-1).long()]
