"""The shard files of ``maskdiff data prepare``: written as the tokens stream in (SHA-256 computed on the
way), recorded when finished, checked and kept on a resume; and the splits as runs of shard documents."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from maskdiff.errors import MaskdiffError

SHARD_FILE = re.compile(r"shard-\d{5}\.(tokens|offsets)(\.partial)?")


class ShardWriter:
    """Appends documents to ``shard-NNNNN.tokens`` / ``.offsets`` (written as ``*.partial`` and renamed
    when finished); a shard is finished after the document that brings it to ``limit`` tokens."""

    def __init__(self, folder: Path, dtype: str, limit: int, index: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.limit, self.index = folder, limit, index
        self.dtype = "<u2" if dtype == "uint16" else "<u4"
        self.files = None
        self.tokens = 0
        self.documents = 0

    def _start(self) -> None:
        self.name = f"shard-{self.index:05d}"
        self.files = {k: open(self.folder / f"{self.name}.{k}.partial", "wb") for k in ("tokens", "offsets")}
        self.hashes = {k: hashlib.sha256() for k in ("tokens", "offsets")}
        self.tokens = self.documents = 0
        self._put("offsets", np.zeros(1, "<i8"))

    def _put(self, kind: str, array: np.ndarray) -> None:
        data = array.tobytes()
        self.files[kind].write(data)
        self.hashes[kind].update(data)

    def _append(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        lengths = lengths[lengths > 0]  # a document that encodes to no token is left out
        self._put("tokens", np.asarray(tokens, self.dtype))
        self._put("offsets", (self.tokens + np.cumsum(lengths)).astype("<i8"))
        self.tokens += int(lengths.sum())
        self.documents += int(lengths.size)

    def write(self, tokens: np.ndarray, lengths: np.ndarray) -> Iterator[Tuple[dict, int]]:
        """Append a batch of documents; yields (record, documents of this batch used) per shard finished."""
        ends = np.concatenate([[0], np.cumsum(lengths)])  # token offsets of the batch's documents
        i = 0
        while i < len(lengths):
            if self.files is None:
                self._start()
            # the first document j at which this shard reaches its limit (or the end of the batch)
            j = min(int(np.searchsorted(ends[i + 1 :] - ends[i], self.limit - self.tokens)) + i + 1, len(lengths))
            self._append(tokens[ends[i] : ends[j]], lengths[i:j])
            if self.tokens >= self.limit:
                yield self._close(), j
            i = j

    def _close(self) -> dict:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for kind in self.files:
            os.replace(self.folder / f"{self.name}.{kind}.partial", self.folder / f"{self.name}.{kind}")
        record = {"name": self.name, "documents": self.documents, "tokens": self.tokens,
                  "sha256": {k: h.hexdigest() for k, h in self.hashes.items()}}
        self.files, self.index, self.tokens, self.documents = None, self.index + 1, 0, 0
        return record

    def finish(self) -> Optional[dict]:
        """Finish the last shard; None when it holds no document (its files are removed)."""
        if self.files is None:
            return None
        if self.documents:
            return self._close()
        for kind, f in self.files.items():
            f.close()
            (self.folder / f"{self.name}.{kind}.partial").unlink()
        self.files = None
        return None


def resume_shards(out: Path, plan: dict, progress_name: str) -> Tuple[List[dict], int]:
    """(finished shards, input documents they hold) of an unfinished preparation in ``out``, after checking
    each against its SHA-256 and deleting the half-written one; ([], 0) for a new or empty folder."""
    from maskdiff.checkpoint import sha256

    progress = out / progress_name
    if not progress.is_file():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise MaskdiffError(f"{out} exists and is not an empty folder or an unfinished preparation; choose a new --out")
        out.mkdir(parents=True, exist_ok=True)
        return [], 0
    try:
        state = json.loads(progress.read_text(encoding="utf-8"))
        shards = list(state["shards"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MaskdiffError(f"{progress} cannot be read ({err}); delete {out} to prepare again") from None
    if state.get("plan") != plan:
        raise MaskdiffError(f"{out} holds an unfinished preparation of other inputs or options; run the same command to resume it, or choose another --out (nothing was changed)")
    folder = out / "shards"
    for s in shards:
        for kind in ("tokens", "offsets"):
            path = folder / f"{s['name']}.{kind}"
            if not path.is_file() or sha256(path) != s["sha256"][kind]:
                raise MaskdiffError(f"finished shard file {path} is missing or does not match its checksum; delete {out} to prepare again (nothing was changed)")
    kept = {f"{s['name']}.{kind}" for s in shards for kind in ("tokens", "offsets")}
    for path in folder.glob("shard-*"):
        if SHARD_FILE.fullmatch(path.name) and path.name not in kept:
            path.unlink()  # the shard being written when the preparation stopped
    return shards, (shards[-1]["input_documents"] if shards else 0)


def split_pieces(folder: Path, shards: List[dict], lo: int, hi: int) -> dict:
    """Documents [lo, hi) of the corpus (all shards in order) as pieces of shards, with their counts."""
    pieces, start = [], 0
    for index, s in enumerate(shards):
        a, b = max(lo, start), min(hi, start + s["documents"])
        if a < b:
            offsets = np.memmap(folder / f"{s['name']}.offsets", dtype="<i8", mode="r")
            tokens = int(offsets[b - start] - offsets[a - start])
            pieces.append({"shard": index, "first": a - start, "documents": b - a, "tokens": tokens})
            del offsets
        start += s["documents"]
    return {"documents": hi - lo, "tokens": sum(p["tokens"] for p in pieces), "pieces": pieces}
