"""FASTA reading: plain or gzip-compressed, one or many records.

Rules, applied line by line so that an error can name the file and the line:

* blank lines (or lines of whitespace only) are skipped anywhere;
* a record starts at a line beginning with ``>``; its name is the first word after it;
* sequence lines are folded to upper case (soft-masked repeats are lower case in many assemblies);
* the letters kept are A, C, G, T and N; the other IUPAC ambiguity codes (R, Y, K, M, S, W, B, D, H, V)
  mean "one of several bases" and are read as N, as genome language models do;
* anything else (digits, ``-`` gaps, ``*``, U of RNA, other letters) is an error, and so is sequence
  text before the first header or a record with no sequence.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List

from maskdiff.errors import MaskdiffError

NUCLEOTIDES = "ACGTN"
AMBIGUOUS = "RYKMSWBDHV"
_FOLD = str.maketrans(AMBIGUOUS, "N" * len(AMBIGUOUS))
_INVALID = re.compile(f"[^{NUCLEOTIDES}]")
FASTA_SUFFIXES = (".fasta", ".fa", ".fna", ".fas", ".fasta.gz", ".fa.gz", ".fna.gz", ".fas.gz")


@dataclass
class FastaRecord:
    name: str
    """The first word of the header line, without the ``>``."""
    sequence: str
    """Upper-case A, C, G, T, N."""


def is_fasta_path(path: Path) -> bool:
    return Path(path).name.lower().endswith(FASTA_SUFFIXES)


def _open_text(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="ascii", errors="strict")
    return open(path, "rt", encoding="ascii", errors="strict")


def read_fasta(path) -> List[FastaRecord]:
    """All records of a FASTA or FASTA.gz file (gzip is recognized by its magic bytes, not the name)."""
    path = Path(path)
    if not path.exists():
        raise MaskdiffError(f"FASTA file {path} does not exist")
    if path.is_dir():
        raise MaskdiffError(f"{path} is a directory; give a FASTA file")
    records: List[FastaRecord] = []
    name, parts, header_line = None, [], 0
    lineno = 0
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                if line.startswith(">"):
                    if name is not None:
                        records.append(_finish(path, name, parts, header_line))
                    words = line[1:].split()
                    name, parts, header_line = (words[0] if words else f"record{len(records) + 1}"), [], lineno
                    continue
                if name is None:
                    raise MaskdiffError(f"{path} line {lineno}: sequence before the first '>' header; is this a FASTA file?")
                seq = line.upper().translate(_FOLD)
                bad = _INVALID.search(seq)
                if bad:
                    raise MaskdiffError(
                        f"{path} line {lineno}: invalid character {line[bad.start()]!r} in a sequence; "
                        f"valid: A, C, G, T, N, the IUPAC ambiguity codes {', '.join(AMBIGUOUS)} (read as N), either case"
                    )
                parts.append(seq)
    except UnicodeDecodeError:
        raise MaskdiffError(f"{path} line {lineno + 1}: not ASCII text; is this a FASTA file?") from None
    except (OSError, EOFError) as err:  # a truncated or corrupt gzip stream
        raise MaskdiffError(f"{path} could not be read after line {lineno} ({err})") from None
    if name is None:
        raise MaskdiffError(f"{path} has no FASTA record (no line starting with '>')")
    records.append(_finish(path, name, parts, header_line))
    return records


def _finish(path: Path, name: str, parts: List[str], header_line: int) -> FastaRecord:
    if not parts:
        raise MaskdiffError(f"{path} line {header_line}: record {name!r} has no sequence")
    return FastaRecord(name, "".join(parts))
