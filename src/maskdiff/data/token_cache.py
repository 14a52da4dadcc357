"""A cache of tokenized documents on disk, so that a second run on the same data starts at once.

An entry is a folder ``<cache>/<key>/`` with ``tokens.npy`` (the flat token ids, uint16 when the
vocabulary fits, else int32), ``offsets.npy`` (int64 document boundaries) and ``meta.json``. The key is
a SHA-256 of the cache format, the tokenizer's full configuration and every source document's text, so
a changed file or tokenizer gives a new entry. Arrays are read with ``np.load(allow_pickle=False)``
as memory maps; the SHA-256 of each file, recorded in meta.json, is checked on every read, and an entry
that does not pass is refused with an error naming the folder to delete (never silently rebuilt).
The cache lives under ``$MASKDIFF_HOME/tokens`` (default ``~/.cache/maskdiff/tokens``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from maskdiff.checkpoint import sha256
from maskdiff.data.packing import TokenDocuments
from maskdiff.errors import MaskdiffError

FORMAT = 1
FILES = ("tokens.npy", "offsets.npy")


def cache_root() -> Path:
    from maskdiff.data.catalog import maskdiff_home

    return maskdiff_home() / "tokens"


def cache_key(texts: List[str], tokenizer_config: dict) -> str:
    h = hashlib.sha256()
    h.update(f"maskdiff-token-cache-{FORMAT}\n".encode())
    h.update(json.dumps(tokenizer_config, sort_keys=True).encode("utf-8"))
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _holds_objects(path: Path) -> bool:
    """Whether an .npy header declares an object dtype (read without loading any data)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0(f) if version == (1, 0) else np.lib.format.read_array_header_2_0(f)
    except (OSError, ValueError):
        return False  # np.load reports a malformed file
    return bool(header[2].hasobject)


def read_entry(folder: Path, key: str, vocab_size: int) -> TokenDocuments:
    """Read and verify one cache entry; raise MaskdiffError when it is not a sound maskdiff entry."""
    def refuse(why: str) -> MaskdiffError:
        return MaskdiffError(f"the token cache {folder} is corrupt or not maskdiff's ({why}); delete that folder to rebuild it")

    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise refuse(f"meta.json unreadable: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
        raise refuse("meta.json does not describe this entry")
    arrays = {}
    for name in FILES:
        path = folder / name
        if not path.is_file() or sha256(path) != meta.get("sha256", {}).get(name):
            raise refuse(f"{name} is missing or its checksum does not match")
        if _holds_objects(path):
            raise refuse(f"{name} holds Python objects (a pickle), which maskdiff never loads")
        try:
            arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise refuse(f"{name}: {err}") from None
    tokens, offsets = arrays["tokens.npy"], arrays["offsets.npy"]
    if tokens.ndim != 1 or offsets.ndim != 1 or offsets.dtype != np.int64 or tokens.dtype.kind not in "ui":
        raise refuse("unexpected array shapes or types")
    if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != tokens.size or np.any(np.diff(offsets) < 0):
        raise refuse("document offsets do not cover the tokens")
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise refuse(f"a token id is outside the vocabulary of {vocab_size}")
    return TokenDocuments(tokens, np.asarray(offsets))


def write_entry(folder: Path, key: str, docs: TokenDocuments, vocab_size: int, description: dict) -> None:
    """Write an entry atomically: into a temporary folder that is then renamed."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32
        np.save(tmp / "tokens.npy", np.asarray(docs.tokens, dtype=dtype), allow_pickle=False)
        np.save(tmp / "offsets.npy", np.asarray(docs.offsets, dtype=np.int64), allow_pickle=False)
        meta = dict(description, format=FORMAT, key=key, documents=len(docs), tokens=int(docs.offsets[-1]),
                    sha256={name: sha256(tmp / name) for name in FILES})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_documents(
    texts: List[str],
    tokenizer,
    encode: Callable[[List[str]], List],
    *,
    description: Optional[dict] = None,
    root: Optional[Path] = None,
) -> TokenDocuments:
    """The tokenized ``texts``: read from the cache when an entry exists, else encoded with
    ``encode(texts) -> list of id sequences`` and stored."""
    cfg = tokenizer.config()
    key = cache_key(texts, cfg)
    folder = (root or cache_root()) / key[:40]
    if folder.exists():
        return read_entry(folder, key, tokenizer.vocab_size)
    docs = TokenDocuments.from_lists(encode(texts))
    tok_desc = {k: v for k, v in cfg.items() if k != "serialized" and k != "alphabet"}
    write_entry(folder, key, docs, tokenizer.vocab_size, dict(description or {}, tokenizer=tok_desc))
    return docs
