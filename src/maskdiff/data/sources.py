"""Training batches and evaluation rows of a corpus, for any tokenizer and either packing.

Training draws from a *source*: ``draw(batch, generator) -> (x0 (B, L), valid (B, L) or None)``, and
every random choice comes from the generator it is given (the trainer's generator of step k), so a
resumed run replays the same batches. :class:`WindowSource` draws windows at random offsets of a
packed stream; :class:`RowSource` draws whole padded rows. On a corpus prepared by ``maskdiff data prepare``,
:class:`PreparedWindowSource` and :class:`PreparedRowSource` make the same draws and read the windows
and rows by position from the shard files (:class:`PackedStream`, :class:`PaddedRows`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
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



class PackedStream:
    """The ``wrap`` stream of a prepared split, ``prefix doc suffix`` for every document (see
    :func:`maskdiff.data.prepared.stream_layout`), computed from the document offsets: any window is
    read by random access from the shard files, and the stream itself is never built."""

    def __init__(self, split, prefix: List[int], suffix: List[int], trailing: bool):
        self.split = split
        self.prefix, self.suffix = np.asarray(prefix, np.int64), np.asarray(suffix, np.int64)
        per_doc = len(prefix) + len(suffix)
        self.starts = split.offsets[:-1] + np.arange(split.documents, dtype=np.int64) * per_doc  # (D,)
        self.length = split.tokens + split.documents * per_doc - (0 if trailing else len(suffix))

    def window(self, lo: np.ndarray, length: int) -> np.ndarray:
        """The windows ``stream[lo_b : lo_b + length]`` for every start in ``lo`` (B,): (B, L) int64."""
        pos = np.asarray(lo, np.int64)[:, None] + np.arange(length, dtype=np.int64)[None]
        doc = np.searchsorted(self.starts, pos, side="right") - 1
        local = pos - self.starts[doc]
        offsets, P = self.split.offsets, len(self.prefix)
        n = offsets[doc + 1] - offsets[doc]
        pre, body = local < P, (local >= P) & (local < P + n)
        suf = ~(pre | body)
        # every position's token index, clipped into its document: a window's tokens are one span of the split
        out = self.split.take_rows(offsets[doc] + np.clip(local - P, 0, n - 1))
        out[pre] = self.prefix[local[pre]]
        out[suf] = self.suffix[(local - P - n)[suf]]
        return out

    def read(self, block: int = 1 << 20) -> Tensor:
        """The whole stream as one (n,) long tensor (for evaluation splits), built a block at a time."""
        parts = [self.window(np.array([lo]), min(block, self.length - lo))[0] for lo in range(0, self.length, block)]
        return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, np.int64))


class PaddedRows:
    """The ``pad`` rows of a prepared split (as :func:`maskdiff.data.packing.pad_rows` builds them: one
    document per row, continued in further rows when longer than L), read by row index."""

    def __init__(self, split, prefix: List[int], suffix: List[int], length: int, pad_id: int):
        self.split, self.length, self.pad_id = split, length, pad_id
        self.prefix, self.suffix = np.asarray(prefix, np.int64), np.asarray(suffix, np.int64)
        seq = np.diff(split.offsets) + len(prefix) + len(suffix)  # (D,)
        self.row_starts = np.concatenate([[0], np.cumsum(-(-seq // length))]).astype(np.int64)  # (D + 1,)

    def __len__(self) -> int:
        return int(self.row_starts[-1])

    def length_counts(self) -> Tensor:
        """The number of rows of each length 0..L, (L + 1,) int64, from the document lengths alone: a
        document of n tokens (with BOS/EOS) fills n // L rows and, when n % L > 0, one row of n % L."""
        seq = np.diff(self.split.offsets) + len(self.prefix) + len(self.suffix)
        counts = np.bincount(seq[seq % self.length > 0] % self.length, minlength=self.length + 1).astype(np.int64)
        counts[self.length] += int((seq // self.length).sum())
        return torch.from_numpy(counts)

    def rows(self, index: np.ndarray) -> Tuple[Tensor, Tensor]:
        """Rows ``index`` (N,): tokens (N, L) long and valid (N, L) bool."""
        L = self.length
        tokens = np.full((len(index), L), self.pad_id, dtype=np.int64)
        valid = np.zeros((len(index), L), dtype=bool)
        docs = np.searchsorted(self.row_starts, index, side="right") - 1
        for r, (i, d) in enumerate(zip(np.asarray(index, np.int64), docs)):
            seq = np.concatenate([self.prefix, self.split.document(int(d)), self.suffix])
            piece = seq[(i - self.row_starts[d]) * L :][:L]
            tokens[r, : piece.size], valid[r, : piece.size] = piece, True
        return torch.from_numpy(tokens), torch.from_numpy(valid)


class PreparedWindowSource:
    """``wrap`` packing on a prepared corpus: the same draws as :class:`WindowSource` (one randint of the
    step's generator), the windows read from the shard files."""

    def __init__(self, stream: PackedStream, length: int):
        if stream.length < length:
            raise MaskdiffError(f"the training data has {stream.length} tokens, fewer than one sequence of {length}")
        self.stream, self.length = stream, length

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor], None]:
        starts = torch.randint(0, self.stream.length - self.length + 1, (batch,), generator=generator)
        return torch.from_numpy(self.stream.window(starts.numpy(), self.length)), None, None

    def describe(self) -> str:
        return "random_windows(seed, step) of a prepared corpus"


class PreparedRowSource:
    """``pad`` packing on a prepared corpus: the same draws as :class:`RowSource`, rows read by index."""

    def __init__(self, rows: PaddedRows):
        if len(rows) == 0:
            raise MaskdiffError("there are no documents to pack")
        self.rows = rows

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor], None]:
        idx = torch.randint(0, len(self.rows), (batch,), generator=generator)
        tokens, valid = self.rows.rows(idx.numpy())
        return tokens, valid, None

    def describe(self) -> str:
        return "random_rows(seed, step) of a prepared corpus"
