"""The documents of ``maskdiff data prepare``'s inputs, streamed one at a time (never the whole corpus).

An input is a text file (one document per file, per line, or per blank-line separated paragraph:
``unit``), a JSON Lines (``.jsonl``/``.json``), Parquet or CSV file (one document per row, from the
column ``field``), a folder written by ``datasets``' ``save_to_disk`` (every split in turn, memory
mapped) or any other folder (its files in sorted order, each read by its suffix). Blank documents are
left out. The inputs are checked before anything is read: a missing or empty file is refused.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

from maskdiff.errors import MaskdiffError

UNITS = ("file", "line", "paragraph")
TABLES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv"}
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass
class InputFile:
    """One input, as found when the sources were expanded."""

    path: Path
    """The file or (for kind 'hf') the dataset folder."""
    kind: str
    """'text', 'jsonl', 'parquet', 'csv' or 'hf' (a save_to_disk folder)."""
    size: int
    """Bytes (for 'hf': of its files together); with mtime_ns, what identifies the input on a resume."""
    mtime_ns: int
    """The latest modification time of the file (or of the folder's files), nanoseconds."""

    def fingerprint(self) -> dict:
        return {"path": str(self.path.resolve()), "kind": self.kind, "size": self.size, "mtime_ns": self.mtime_ns}


def _input(path: Path) -> InputFile:
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return InputFile(path, "hf", sum(p.stat().st_size for p in files), max(p.stat().st_mtime_ns for p in files))
    st = path.stat()
    if st.st_size == 0:
        raise MaskdiffError(f"input file {path} is empty")
    return InputFile(path, TABLES.get(path.suffix.lower(), "text"), st.st_size, st.st_mtime_ns)


def expand_sources(sources: List[str]) -> List[InputFile]:
    """The input files of ``sources`` in order (folders: a save_to_disk dataset, else their files sorted)."""
    if not sources:
        raise MaskdiffError("no input given; name text, JSON Lines, Parquet or CSV files, or folders")
    inputs = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise MaskdiffError(f"input {path} does not exist")
        if path.is_dir() and any((path / m).is_file() for m in HF_MARKERS):
            inputs.append(_input(path))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise MaskdiffError(f"input folder {path} holds no files")
            inputs += [_input(p) for p in files]
        else:
            inputs.append(_input(path))
    return inputs


def _text(path: Path, unit: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            if unit == "file":
                yield f.read()
            elif unit == "line":
                yield from (line.rstrip("\n") for line in f)
            else:
                para: List[str] = []
                for line in f:
                    if line.strip():
                        para.append(line)
                    elif para:
                        yield "".join(para).rstrip("\n")
                        para = []
                if para:
                    yield "".join(para).rstrip("\n")
    except UnicodeDecodeError as err:
        raise MaskdiffError(f"input file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _field(value, path: Path, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise MaskdiffError(f"{path} {where}: field {field!r} is {type(value).__name__}, not text")
    return value


def _jsonl(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise MaskdiffError(f"{path} line {number} is not JSON ({err})") from None
            if not isinstance(row, dict) or field not in row:
                raise MaskdiffError(f"{path} line {number} has no field {field!r}; name the text field with --field")
            yield _field(row[field], path, f"line {number}", field)


def _csv(path: Path, field: str) -> Iterator[str]:
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if field not in (reader.fieldnames or []):
            raise MaskdiffError(f"{path} has no column {field!r} (columns: {', '.join(reader.fieldnames or [])}); name it with --field")
        for row in reader:
            yield row[field] or ""


def _parquet(path: Path, field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MaskdiffError("reading Parquet needs pyarrow; pip install 'maskdiff[text]'") from None
    table = pq.ParquetFile(path)
    if field not in table.schema_arrow.names:
        raise MaskdiffError(f"{path} has no column {field!r} (columns: {', '.join(table.schema_arrow.names)}); name it with --field")
    for batch in table.iter_batches(batch_size=1024, columns=[field]):
        yield from (t or "" for t in batch.column(0).to_pylist())


def _hf_folder(path: Path, field: str) -> Iterator[str]:
    from maskdiff.data.hfdata import _datasets

    data = _datasets().load_from_disk(str(path))
    parts = [data[k] for k in data] if hasattr(data, "keys") else [data]
    for part in parts:
        if field not in part.column_names:
            raise MaskdiffError(f"dataset {path} has no column {field!r} (columns: {', '.join(part.column_names)}); name it with --field")
        for batch in part.iter(batch_size=1024):
            yield from (t or "" for t in batch[field])


def iter_documents(inputs: List[InputFile], unit: str = "file", field: str = "text") -> Iterator[str]:
    """Every non-blank document of the inputs, in order; an input without one is refused."""
    if unit not in UNITS:
        raise MaskdiffError(f"unknown document unit {unit!r}; choose one of: {', '.join(UNITS)}")
    for inp in inputs:
        if inp.kind == "text":
            docs = _text(inp.path, unit)
        else:
            docs = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "hf": _hf_folder}[inp.kind](inp.path, field)
        count = 0
        for doc in docs:
            if doc.strip():
                count += 1
                yield doc
        if count == 0:
            raise MaskdiffError(f"input {inp.path} holds no document (only blank text)")
