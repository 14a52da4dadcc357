"""``maskdiff data prepare``: a corpus tokenized once into shards that every training process memory maps
(the format: :mod:`maskdiff.data.prepared`).

The documents are streamed from the inputs (:mod:`maskdiff.data.documents`), grouped into batches of
about ``batch_chars`` characters and tokenized by ``workers`` processes, with at most two batches per
worker in flight (a bounded queue: memory does not grow with the corpus). Tokens go straight to the
current shard file, whose SHA-256 is updated as it is written; a shard is closed after the document
that brings it to ``shard_tokens`` tokens, and recorded in ``progress.json``. A killed preparation
resumes: the shards in progress.json are checked against their checksums and kept, a half-written
shard is deleted and redone, and the inputs are read again from the first document after the last
finished shard. The splits are runs of consecutive documents, decided at the end (the last ones are
test, those before them validation: MDLM's OpenWebText setup); ``manifest.json`` is written last.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections import deque
from dataclasses import dataclass, field as dc_field
from itertools import chain, islice
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from maskdiff.data.documents import InputFile, expand_sources, iter_documents
from maskdiff.data.prepare_shards import ShardWriter, resume_shards, split_pieces
from maskdiff.data.prepared import FORMAT, MANIFEST, VERSION, dtype_for, read_manifest
from maskdiff.errors import MaskdiffError

CHAR_FORMS = ("text8", "chars", "bytes")
PROGRESS = "progress.json"


@dataclass
class PrepareOptions:
    """How ``maskdiff data prepare`` reads, tokenizes, shards and splits a corpus."""

    tokenizer: str
    """text8, chars, bytes, gpt2, bert, or a local Hugging Face tokenizer folder (as data.tokenizer)."""
    unit: str = "file"
    """Text files: one document per 'file', per 'line', or per blank-line separated 'paragraph'."""
    field: str = "text"
    """The text column of JSON Lines, Parquet, CSV and dataset inputs."""
    split_docs: Dict[str, int] = dc_field(default_factory=dict)
    """Documents of 'validation' and 'test' (the last ones; a split not named has none); when given,
    split_fraction is not used."""
    split_fraction: Dict[str, float] = dc_field(default_factory=lambda: {"validation": 0.05, "test": 0.05})
    """Fractions of the documents for 'validation' and 'test' (rounded to whole documents)."""
    shard_tokens: int = 1 << 26
    """A shard is closed once it holds at least this many tokens (whole documents only)."""
    dtype: str = "auto"
    """Token dtype: 'auto' (uint16 when the vocabulary fits, else uint32), 'uint16' or 'uint32'."""
    workers: int = 0
    """Tokenizing processes; 0: one per CPU core; 1: in this process."""
    batch_chars: int = 1 << 20
    """About this many characters of text go to a worker at a time."""
    progress: bool = True
    """Show a tqdm progress bar."""


def build_tokenizer(name: str, inputs: List[InputFile], options: PrepareOptions):
    """The tokenizer ``name`` as training builds it (modalities/text.py); 'chars' reads the inputs once
    for their alphabet."""
    from maskdiff.data import subword
    from maskdiff.data.tokenizers import CharTokenizer, tokenizer_for

    if name == "text8":
        return tokenizer_for("text8")
    if name == "chars":
        seen = set()
        for doc in iter_documents(inputs, options.unit, options.field):
            seen.update(doc)
        return CharTokenizer("".join(sorted(seen)))
    return subword.named_tokenizer(name)


_WORKER: dict = {}


def _init_worker(tokenizer_config: dict, dtype: str) -> None:
    from maskdiff.data.subword import tokenizer_from_config

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process
    _WORKER.update(tokenizer=tokenizer_from_config(tokenizer_config), dtype=dtype)


def _encode(texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(tokens of every document concatenated, in the corpus dtype; (N,) int64 lengths)."""
    from maskdiff.data.sources import encode_documents

    tok, dtype = _WORKER["tokenizer"], "<u2" if _WORKER["dtype"] == "uint16" else "<u4"
    if hasattr(tok, "backend"):  # the tokenizers library, without a tensor per document
        ids = [e.ids for e in tok.backend.encode_batch(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum())), lengths
    arrays = [d.numpy() for d in encode_documents(tok, texts)]  # characters and bytes: one tensor per document
    lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype), lengths


def _batches(docs: Iterator[str], batch_chars: int) -> Iterator[List[str]]:
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if chars >= batch_chars or len(batch) >= 8192:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encoded(batches: Iterator[List[str]], tokenizer_config: dict, dtype: str, workers: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """The encodings of the batches in order, by ``workers`` processes with at most 2 x workers in flight."""
    if workers <= 1:
        _init_worker(tokenizer_config, dtype)
        yield from map(_encode, batches)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer_config, dtype)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_encode, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def resolve_splits(documents: int, options: PrepareOptions) -> Dict[str, Tuple[int, int]]:
    """Document ranges [lo, hi) of train, validation and test: test the last ones, validation before it."""
    if options.split_docs:  # a split it does not name has no documents
        counts = {name: int(options.split_docs.get(name, 0)) for name in ("validation", "test")}
    else:
        counts = {name: int(round(options.split_fraction.get(name, 0.0) * documents)) for name in ("validation", "test")}
    held = counts["validation"] + counts["test"]
    if held >= documents:
        raise MaskdiffError(f"the corpus has {documents:,} documents and the splits ask for {counts['validation']:,} validation "
                            f"+ {counts['test']:,} test, which leaves none for training; give smaller --split-docs or --split-fraction")
    train_end = documents - held
    return {"train": (0, train_end), "validation": (train_end, train_end + counts["validation"]), "test": (train_end + counts["validation"], documents)}


def prepare_corpus(sources: List[str], out, options: PrepareOptions) -> dict:
    """Prepare ``sources`` into folder ``out``; resume an unfinished preparation there. Returns the manifest."""
    from maskdiff.checkpoint import sha256

    out = Path(out)
    inputs = expand_sources(sources)
    unknown = set(options.split_docs) | set(options.split_fraction)
    if unknown - {"validation", "test"}:
        raise MaskdiffError(f"unknown split {sorted(unknown - {'validation', 'test'})[0]!r}; splits take validation and test (train is the rest)")
    if options.shard_tokens < 1:
        raise MaskdiffError(f"--shard-tokens must be at least 1, got {options.shard_tokens}")
    tokenizer = build_tokenizer(options.tokenizer, inputs, options)
    name = options.tokenizer if options.tokenizer in CHAR_FORMS + ("gpt2", "bert") else str(Path(options.tokenizer).resolve())
    dtype = dtype_for(tokenizer.vocab_size, options.dtype)
    config_sha = hashlib.sha256(json.dumps(tokenizer.config(), sort_keys=True).encode("utf-8")).hexdigest()
    plan = {"inputs": [i.fingerprint() for i in inputs], "tokenizer": name, "tokenizer_sha256": config_sha,
            "unit": options.unit, "field": options.field, "dtype": dtype, "shard_tokens": options.shard_tokens}
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        if manifest.get("plan") != plan:
            raise MaskdiffError(f"{out} already holds a corpus prepared from other inputs or options; choose another --out (nothing was changed)")
        if manifest.get("options") != {"split_docs": options.split_docs, "split_fraction": options.split_fraction}:
            raise MaskdiffError(f"{out} already holds this corpus with other splits ({manifest.get('options')}); choose another --out (nothing was changed)")
        return manifest
    shards, skip = resume_shards(out, plan, PROGRESS)
    docs = islice(iter_documents(inputs, options.unit, options.field), skip, None)
    workers = options.workers or os.cpu_count() or 1
    writer = ShardWriter(out / "shards", dtype, options.shard_tokens, len(shards))
    from tqdm import tqdm

    bar = tqdm(unit=" docs", unit_scale=True, disable=not options.progress, initial=skip, desc="prepare")
    consumed = skip
    for tokens, lengths in encoded(_batches(docs, options.batch_chars), tokenizer.config(), dtype, workers):
        for record, used in writer.write(tokens, lengths):
            shards.append(dict(record, input_documents=consumed + used))
            _save_progress(out, plan, shards)
        consumed += len(lengths)
        bar.update(len(lengths))
        bar.set_postfix(tokens=f"{sum(s['tokens'] for s in shards) + writer.tokens:,}", refresh=False)
    bar.close()
    last = writer.finish()
    if last is not None:
        shards.append(dict(last, input_documents=consumed))
        _save_progress(out, plan, shards)
    total_docs = sum(s["documents"] for s in shards)
    if total_docs == 0:
        raise MaskdiffError("the inputs hold no document with a token; nothing was prepared")
    ranges = resolve_splits(total_docs, options)
    tok_file = out / "tokenizer.json"
    tok_file.write_text(json.dumps(tokenizer.config()), encoding="utf-8")
    manifest = {
        "format": FORMAT, "version": VERSION, "created_by": "maskdiff data prepare",
        "tokenizer": {"name": name, "config": tokenizer.config(), "file": tok_file.name, "sha256": sha256(tok_file)},
        "vocab_size": tokenizer.vocab_size, "dtype": dtype,
        "documents": total_docs, "tokens": sum(s["tokens"] for s in shards),
        "input_documents": consumed, "skipped_documents": consumed - total_docs,
        "shards": [{k: v for k, v in s.items() if k != "input_documents"} for s in shards],
        "splits": {split: split_pieces(out / "shards", shards, lo, hi) for split, (lo, hi) in ranges.items()},
        "options": {"split_docs": options.split_docs, "split_fraction": options.split_fraction},
        "plan": plan,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    (out / PROGRESS).unlink()
    return manifest


def _save_progress(out: Path, plan: dict, shards: List[dict]) -> None:
    tmp = out / (PROGRESS + ".tmp")
    tmp.write_text(json.dumps({"plan": plan, "shards": shards}), encoding="utf-8")
    os.replace(tmp, out / PROGRESS)


def summary(manifest: dict, folder) -> str:
    """A few lines describing a prepared corpus, for the command line."""
    lines = [f"{folder}: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens ({manifest['dtype']}), "
             f"tokenizer {manifest['tokenizer']['name']} (vocabulary {manifest['vocab_size']:,}), {len(manifest['shards'])} shard(s)"]
    for name, s in manifest["splits"].items():
        lines.append(f"  {name:<10} {s['documents']:>12,} documents {s['tokens']:>15,} tokens")
    return "\n".join(lines)

