"""Reading a corpus prepared by ``maskdiff data prepare`` (:mod:`maskdiff.data.prepare`): its shards are
read by position (random access with ``os.pread``; the page cache serves them as it would memory maps,
without the touched pages counting in the process's resident memory), so no process holds the corpus.

A prepared corpus is a folder::

    manifest.json          format, tokenizer (its config in full), vocab size, dtype, shards, splits
    tokenizer.json         the tokenizer's config (the same one; its SHA-256 is in the manifest)
    shards/NAME.tokens     token ids, uint16 (vocabulary <= 65,535) or uint32, little-endian, raw
    shards/NAME.offsets    int64 document offsets into NAME.tokens: D + 1 values, from 0 to its tokens

A split is a run of consecutive documents: ``pieces`` of shards (shard, first document, documents).
The training stream of a split (``wrap`` packing) is never stored: it is ``prefix doc suffix`` for
every document, with the prefix and suffix of :func:`stream_layout`, and any window of it is computed
from the document offsets. Rows of ``pad`` packing are computed the same way. Both are exactly what
:func:`maskdiff.data.packing.wrap` / :func:`~maskdiff.data.packing.pad_rows` (and, for characters,
today's joined text) build in memory from the same documents.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from maskdiff.errors import MaskdiffError

MANIFEST = "manifest.json"
FORMAT = "maskdiff-prepared-corpus"
VERSION = 1
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def is_prepared(path) -> bool:
    """Whether ``path`` is a folder holding a prepared corpus (its manifest.json)."""
    return isinstance(path, (str, Path)) and (Path(path) / MANIFEST).is_file()


def dtype_for(vocab_size: int, chosen: str = "auto") -> str:
    """The token dtype: 'uint16' when every id fits (vocabulary <= 65,535), else 'uint32'; a chosen dtype
    too small for the vocabulary is refused."""
    if chosen == "auto":
        return "uint16" if vocab_size <= 65535 else "uint32"
    if chosen not in DTYPES:
        raise MaskdiffError(f"unknown token dtype {chosen!r}; choose one of: auto, {', '.join(DTYPES)}")
    if vocab_size - 1 > np.iinfo(DTYPES[chosen]).max:
        raise MaskdiffError(f"a vocabulary of {vocab_size:,} tokens does not fit in {chosen} (ids up to {np.iinfo(DTYPES[chosen]).max:,}); use uint32 or auto")
    return chosen


def stream_layout(tokenizer) -> Tuple[List[int], List[int], bool]:
    """(prefix, suffix, trailing): what surrounds each document in the ``wrap`` stream, and whether the
    last document has its suffix too. Tokenizers with BOS/EOS and bytes: as :func:`~maskdiff.data.packing.wrap`;
    characters: the documents joined by the separator (no trailing one), as today's character streams."""
    from maskdiff.data.packing import document_bounds

    prefix, suffix = document_bounds(tokenizer, "wrap")
    return [int(i) for i in prefix], [int(i) for i in suffix], tokenizer.config().get("kind") != "char"


def _refuse(folder: Path, why: str) -> MaskdiffError:
    return MaskdiffError(f"the prepared corpus {folder} is damaged: {why}; prepare it again into a new folder (nothing was changed)")


def read_manifest(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.exists():
        raise MaskdiffError(f"{folder} does not exist; give a folder made by maskdiff data prepare")
    if not is_prepared(folder):
        raise MaskdiffError(f"{folder} is not a prepared corpus (it has no {MANIFEST}); make one with maskdiff data prepare")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _refuse(folder, f"{MANIFEST} cannot be read ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(folder, f"{MANIFEST} is not a maskdiff corpus manifest")
    if manifest.get("version") != VERSION:
        raise MaskdiffError(f"{folder} is a prepared corpus of format version {manifest.get('version')}; this maskdiff reads version {VERSION}")
    return manifest


class ShardFile:
    """One open shard file, read by position (``os.pread``): no memory map, so a training process's
    resident memory does not grow with the pages of the corpus it has touched."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Items [lo, hi) of the file."""
        size = self.dtype.itemsize
        data = os.pread(self.fd, (hi - lo) * size, lo * size)
        if len(data) != (hi - lo) * size:
            raise MaskdiffError(f"shard file {self.path} ended early (truncated after it was opened)")
        return np.frombuffer(data, dtype=self.dtype)

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)


@dataclass
class PreparedSplit:
    """One split: runs of documents of shard files (read by position), and the document offsets (in memory)."""

    name: str
    """train, validation or test."""
    pieces: List[Tuple[ShardFile, int]]
    """Each piece's token file and the position of its first token there."""
    offsets: np.ndarray
    """(D + 1,) int64 offsets of the split's documents in the concatenated pieces."""
    piece_starts: np.ndarray
    """(pieces + 1,) int64 token offsets of the pieces in the concatenated pieces."""

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    def span(self, lo: int, hi: int) -> np.ndarray:
        """Tokens [lo, hi) of the concatenated pieces (any number of pieces), int64."""
        parts = []
        first = int(np.searchsorted(self.piece_starts, lo, side="right")) - 1
        for k in range(max(first, 0), len(self.pieces)):
            a, b = max(lo, int(self.piece_starts[k])), min(hi, int(self.piece_starts[k + 1]))
            if a >= hi:
                break
            if a < b:
                shard, base = self.pieces[k]
                parts.append(shard.read(base + a - int(self.piece_starts[k]), base + b - int(self.piece_starts[k])))
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def take_rows(self, index: np.ndarray) -> np.ndarray:
        """The tokens at positions ``index`` (R, n), each row read as the one span it covers: (R, n) int64."""
        out = np.empty(index.shape, dtype=np.int64)
        for r, row in enumerate(index):
            lo = int(row.min())
            out[r] = self.span(lo, int(row.max()) + 1)[row - lo]
        return out

    def document(self, i: int) -> np.ndarray:
        return self.span(int(self.offsets[i]), int(self.offsets[i + 1]))


class PreparedCorpus:
    """An opened prepared corpus: ``splits`` (name -> :class:`PreparedSplit`), the manifest, the stored
    tokenizer config. Opening reads the manifest, checks every shard file's size against it and the
    ends of its offsets, and opens the files; ``verify()`` also checks every SHA-256."""

    def __init__(self, folder, verify: bool = False):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        m = self.manifest
        try:
            self.vocab_size = int(m["vocab_size"])
            self.dtype = m["dtype"]
            self.tokenizer_name = m["tokenizer"]["name"]
            self.tokenizer_config = m["tokenizer"]["config"]
            shards, splits = m["shards"], m["splits"]
        except (KeyError, TypeError, ValueError) as err:
            raise _refuse(self.folder, f"{MANIFEST} lacks {err}") from None
        if self.dtype not in DTYPES:
            raise _refuse(self.folder, f"{MANIFEST} names token dtype {self.dtype!r}, not one of {', '.join(DTYPES)}")
        if self.vocab_size - 1 > np.iinfo(DTYPES[self.dtype]).max:
            raise _refuse(self.folder, f"{MANIFEST} declares {self.dtype} tokens for a vocabulary of {self.vocab_size:,}")
        if verify:
            self.verify()
        self._maps = [self._map_shard(s) for s in shards]
        self.splits: Dict[str, PreparedSplit] = {name: self._split(name, spec) for name, spec in splits.items()}

    def _map_shard(self, shard: dict) -> Tuple[ShardFile, ShardFile]:
        name, docs, tokens = shard["name"], int(shard["documents"]), int(shard["tokens"])
        paths = {kind: self.folder / "shards" / f"{name}.{kind}" for kind in ("tokens", "offsets")}
        want = {"tokens": tokens * np.dtype(DTYPES[self.dtype]).itemsize, "offsets": (docs + 1) * 8}
        for kind, path in paths.items():
            if not path.is_file():
                raise _refuse(self.folder, f"shard file {path.name} is missing")
            if path.stat().st_size != want[kind]:
                raise _refuse(self.folder, f"shard file {path.name} has {path.stat().st_size:,} bytes, the manifest says {want[kind]:,} (truncated or changed)")
        toks = ShardFile(paths["tokens"], DTYPES[self.dtype])
        offs = ShardFile(paths["offsets"], np.dtype("<i8"))
        if offs.read(0, 1)[0] != 0 or offs.read(docs, docs + 1)[0] != tokens:
            raise _refuse(self.folder, f"the document offsets of shard {name} do not cover its {tokens:,} tokens")
        return toks, offs

    def _split(self, name: str, spec: dict) -> PreparedSplit:
        pieces, offsets, starts, total = [], [np.zeros(1, np.int64)], [0], 0
        for p in spec["pieces"]:
            toks, offs = self._maps[int(p["shard"])]
            first, n = int(p["first"]), int(p["documents"])
            if first < 0 or n < 0 or (first + n + 1) * 8 > offs.path.stat().st_size:
                raise _refuse(self.folder, f"split {name} names documents {first}..{first + n} of shard {p['shard']}, which it does not hold")
            local = offs.read(first, first + n + 1).astype(np.int64)
            if np.any(np.diff(local) < 0):
                raise _refuse(self.folder, f"the document offsets of shard {p['shard']} decrease")
            pieces.append((toks, int(local[0])))
            offsets.append(local[1:] - local[0] + total)
            total += int(local[-1] - local[0])
            starts.append(total)
        split = PreparedSplit(name, pieces, np.concatenate(offsets), np.asarray(starts, np.int64))
        if split.documents != int(spec["documents"]) or split.tokens != int(spec["tokens"]):
            raise _refuse(self.folder, f"split {name} has {split.documents:,} documents and {split.tokens:,} tokens, the manifest says {spec['documents']:,} and {spec['tokens']:,}")
        return split

    def split(self, name: str) -> PreparedSplit:
        if name not in self.splits or self.splits[name].documents == 0:
            have = ", ".join(k for k, s in self.splits.items() if s.documents)
            raise MaskdiffError(f"the prepared corpus {self.folder} has no documents in its {name} split (it has: {have}); prepare it with --split-docs or --split-fraction giving {name} documents")
        return self.splits[name]

    def verify(self) -> None:
        """Check every shard file's SHA-256 against the manifest (reads the whole corpus once)."""
        from maskdiff.checkpoint import sha256

        tok_file = self.folder / self.manifest["tokenizer"].get("file", "tokenizer.json")
        if not tok_file.is_file() or sha256(tok_file) != self.manifest["tokenizer"].get("sha256"):
            raise _refuse(self.folder, f"{tok_file.name} is missing or does not match its checksum")
        for shard in self.manifest["shards"]:
            for kind in ("tokens", "offsets"):
                path = self.folder / "shards" / f"{shard['name']}.{kind}"
                if not path.is_file() or sha256(path) != shard["sha256"][kind]:
                    raise _refuse(self.folder, f"shard file {path.name} is missing or does not match its checksum")

    def tokenizer_for(self, name: str):
        """The corpus's own tokenizer, when ``name`` (the config's data.tokenizer or data.form) is the one it
        was prepared with; else an error naming both."""
        from maskdiff.data.subword import tokenizer_from_config

        if name != self.tokenizer_name:
            raise MaskdiffError(f"the tokenizer {name!r} is not the one {self.folder} was prepared with ({self.tokenizer_name!r}); "
                                f"train with --tokenizer {self.tokenizer_name} or prepare the corpus again with --tokenizer {name}")
        return tokenizer_from_config(self.tokenizer_config)

    def check_tokenizer(self, tokenizer) -> None:
        """Refuse to read this corpus with a tokenizer other than its own (e.g. a model's, in eval)."""
        if tokenizer.config() != self.tokenizer_config:
            name = getattr(tokenizer, "name", None) or tokenizer.config().get("normalize") or tokenizer.config().get("kind")
            raise MaskdiffError(f"{self.folder} was prepared with the tokenizer {self.tokenizer_name!r}, not with this one ({name!r}); "
                                "evaluate it with a model of that tokenizer, or prepare the corpus again")


def open_prepared(path, verify: bool = False) -> PreparedCorpus:
    """Open the prepared corpus in folder ``path`` (see the module docstring); ``verify``: check every
    file's SHA-256 too. Raises MaskdiffError naming what is wrong."""
    return PreparedCorpus(path, verify=verify)
