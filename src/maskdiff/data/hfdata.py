"""Documents through Hugging Face ``datasets``: a folder of text files, a JSON Lines / Parquet / CSV
file with a ``text`` column, or a dataset on the hub (``hf:NAME`` or ``hf:NAME:CONFIG``).

``datasets`` is imported only here and only when one of these sources is used
(``pip install 'maskdiff[text]'``). A folder is read one document per file (``.txt``, ``.md``,
``.rst``); its files are split 90/5/5 by a hash of their relative names, as the named corpora. Rows of
a table file are split by a hash of their row number. A hub dataset keeps its own splits
('validation' falls back to 'valid', 'test' to 'validation' where a dataset lacks one).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from maskdiff.errors import MaskdiffError

DATASETS_HINT = "pip install 'maskdiff[text]' (or: pip install datasets)"
TEXT_SUFFIXES = (".txt", ".md", ".rst")
TABLE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def is_dataset_source(corpus: str) -> bool:
    """Whether ``corpus`` names something this module reads (and the plain text-file reader does not)."""
    return corpus.startswith("hf:") or Path(corpus).is_dir() or Path(corpus).suffix in TABLE_BUILDERS


def _datasets():
    try:
        import datasets
    except ImportError:
        raise MaskdiffError(f"reading folders, tables and hub datasets needs the 'datasets' library; {DATASETS_HINT}") from None
    datasets.disable_progress_bars()
    return datasets


def dataset_split_texts(corpus: str, split: str) -> List[str]:
    """The documents of one split of ``corpus`` (see the module docstring)."""
    from maskdiff.data.splits import split_of

    if corpus.startswith("hf:"):
        return _hub_split(corpus[3:], split)
    path = Path(corpus)
    ds = _datasets()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise MaskdiffError(f"folder {path} has no text files ({', '.join(TEXT_SUFFIXES)})")
        chosen = [str(p) for p in files if split_of(str(p.relative_to(path))) == split]
        if not chosen:
            raise MaskdiffError(f"folder {path} has {len(files)} text file(s), none of them in the {split} split; add more files")
        table = ds.load_dataset("text", data_files={split: chosen}, sample_by="document", split=split)
        return [t for t in table["text"] if t.strip()]
    table = ds.load_dataset(TABLE_BUILDERS[path.suffix], data_files=str(path), split="train")
    if "text" not in table.column_names:
        raise MaskdiffError(f"{path} has no 'text' column (columns: {', '.join(table.column_names)})")
    texts = [t for i, t in enumerate(table["text"]) if split_of(str(i)) == split and t and t.strip()]
    if not texts:
        raise MaskdiffError(f"{path} has {len(table)} rows, none of them in the {split} split")
    return texts


def _hub_split(spec: str, split: str) -> List[str]:
    ds = _datasets()
    name, _, config = spec.partition(":")
    try:
        table = ds.load_dataset(name, config or None)
    except Exception as err:  # hub or network failures come as many exception types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MaskdiffError(f"cannot load dataset {name!r} from the Hugging Face hub ({first[:200]}); "
                            "without the hub, use a local text file, folder or JSON Lines file (HF_HUB_OFFLINE=1 fails at once)") from None
    for candidate in {"validation": ("validation", "valid"), "test": ("test", "validation", "valid")}.get(split, (split,)):
        if candidate in table:
            column = table[candidate]
            if "text" not in column.column_names:
                raise MaskdiffError(f"dataset {name!r} has no 'text' column (columns: {', '.join(column.column_names)})")
            return [t for t in column["text"] if t and t.strip()]
    raise MaskdiffError(f"dataset {name!r} has no {split} split (splits: {', '.join(table)})")
