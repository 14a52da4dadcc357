"""Local files of MDLM's zero-shot corpora, read and packed the way MDLM's evaluation does (MDLM Sec. 4.1).

Reading: each corpus's file as the Hugging Face dataset MDLM loads presents it, one document per row
(:data:`ZERO_SHOT_CORPORA` says which file and split MDLM used). Packing follows the model's own setting:

* ``wrap`` (every GPT-2 model of the paper): each document is tokenized, EOS appended, and the
  documents of a group of ``group`` consecutive documents concatenated; the group is cut into pieces
  of L - 2 tokens, each row ``[BOS] piece [EOS]``; the group's remainder shorter than L - 2 is dropped.
  ``group`` is 1000, the batch MDLM's data pipeline maps at once; its rows also start afresh at the
  boundaries of its worker processes' shards, which depend on its machine's CPU count (not modelled).
* ``pad`` (the LM1B model with BERT's tokenizer): one document per row, ``[BOS] tokens [EOS]`` with
  the tokens cut at L - 2 (the rest is dropped), then padding; ``valid`` is False on padding.

Unlike maskdiff's own packing (``maskdiff.data.packing``), nothing continues past a row: the figures are
the reference's, on the tokens it keeps.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

MDLM_GROUP = 1000
"""Documents concatenated before a wrap group's remainder is dropped (the reference's map batch)."""


@dataclass(frozen=True)
class ZeroShotCorpus:
    """How MDLM reads one zero-shot corpus."""

    name: str
    """Also the name of its detokenizer (``maskdiff.data.detokenize``)."""
    reader: str
    """``lines`` (one document per line, stripped), ``raw-lines`` (each line with its newline; a blank
    line is an empty document) or ``json`` (JSON lines, the document in ``field``; a .csv file: AG News's
    columns class, title, description, the document ``title + " " + description``)."""
    field: Optional[str]
    """The JSON field of a document (a list of strings is joined with newlines)."""
    split: str
    """The split MDLM evaluates, and the file that holds it."""


ZERO_SHOT_CORPORA = {c.name: c for c in [
    ZeroShotCorpus("ptb", "lines", None, "validation (ptb.valid.txt)"),
    ZeroShotCorpus("wikitext", "raw-lines", None, "validation (wiki.valid.raw of WikiText-2 or -103)"),
    ZeroShotCorpus("lm1b", "lines", None, "test (news.en.heldout-00000-of-00050)"),
    ZeroShotCorpus("lambada", "json", "text", "test (lambada_test.jsonl, OpenAI's)"),
    ZeroShotCorpus("ag-news", "json", "text", "test (test.csv)"),
    ZeroShotCorpus("pubmed", "json", "article", "validation (val.txt: JSON lines, article_text)"),
    ZeroShotCorpus("arxiv", "json", "article", "validation (val.txt: JSON lines, article_text)"),
    ZeroShotCorpus("none", "lines", None, "any (one document per line)"),
]}
"""Corpus name -> how its local file is read."""


def zero_shot_corpus(name: str) -> ZeroShotCorpus:
    if name not in ZERO_SHOT_CORPORA:
        raise MaskdiffError(f"unknown zero-shot corpus {name!r}; choose one of: {', '.join(ZERO_SHOT_CORPORA)}")
    return ZERO_SHOT_CORPORA[name]


def read_documents(path, corpus: ZeroShotCorpus) -> List[str]:
    """The documents of a local file of ``corpus``, in file order."""
    path = Path(path)
    if not path.is_file():
        raise MaskdiffError(f"corpus file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return [" ".join(row[1:3]) for row in csv.reader(text.splitlines()) if row]
    if corpus.reader == "raw-lines":
        return [line if line.strip() else "" for line in text.splitlines(keepends=True)]
    if corpus.reader == "lines":
        return [line.strip() for line in text.splitlines()]
    docs = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise MaskdiffError(f"{path} line {i + 1} is not JSON ({err}); {corpus.name} files are JSON lines") from None
        docs.append(_field(row, corpus.field, path, i))
    return docs


def _field(row: dict, field: str, path: Path, i: int) -> str:
    """A document's text: ``field``, else the original release's ``article_text`` (a list of sentences)."""
    value = row.get(field, row.get("article_text")) if isinstance(row, dict) else None
    if isinstance(value, list):
        value = "\n".join(value)
    if not isinstance(value, str):
        raise MaskdiffError(f"{path} line {i + 1} has no text field {field!r}")
    return value


def mdlm_wrap(docs: Sequence[Sequence[int]], length: int, bos: int, eos: int, group: int = MDLM_GROUP) -> Tensor:
    """Rows (N, L) of MDLM's wrapped evaluation data (see the module docstring)."""
    if length < 3:
        raise MaskdiffError(f"MDLM's wrap needs L >= 3 (BOS, a token, EOS); got {length}")
    piece = length - 2
    rows = []
    for lo in range(0, len(docs), group):
        stream = [t for d in docs[lo : lo + group] for t in list(d) + [eos]]
        for s in range(0, len(stream) - piece + 1, piece):
            rows.append([bos] + stream[s : s + piece] + [eos])
    if not rows:
        raise MaskdiffError(f"the file has fewer than {piece} tokens per group of {group} documents: no row of L = {length}")
    return torch.tensor(rows, dtype=torch.long)


def mdlm_pad(docs: Sequence[Sequence[int]], length: int, bos: int, eos: int, pad_id: int) -> Tuple[Tensor, Tensor]:
    """Rows (N, L) and valid (N, L) of MDLM's padded evaluation data: one document per row, cut at L - 2."""
    if length < 2 or not docs:
        raise MaskdiffError(f"MDLM's pad needs L >= 2 and at least one document; got L = {length}, {len(docs)} documents")
    tokens = torch.full((len(docs), length), pad_id, dtype=torch.long)
    valid = torch.zeros(len(docs), length, dtype=torch.bool)
    for r, d in enumerate(docs):
        row = [bos] + list(d)[: length - 2] + [eos]
        tokens[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        valid[r, : len(row)] = True
    return tokens, valid
