"""DNA: the nucleotide tokenizer and a corpus of whole genomes, split by whole genomes.

Tokens are A, C, G, T, N (ids 0-4); the mask is id 5. The corpus ``ragout`` is the 16 bacterial
reference genomes (4 species, about 48 Mbp) of the Debian package ``ragout-examples``; a directory
or a list of FASTA files is also a corpus. A genome is one file (all its records: chromosomes and
plasmids, in file order); no genome is in two splits, so validation and test measure how well the
model predicts a strain it has never seen.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from maskdiff.data.fasta import NUCLEOTIDES, is_fasta_path, read_fasta
from maskdiff.data.tokenizers import CharTokenizer
from maskdiff.errors import MaskdiffError

RAGOUT_ROOT = Path("/usr/share/doc/ragout/examples")
RAGOUT_HINT = "install it with: sudo apt-get install ragout-examples (Debian/Ubuntu)"

# One strain per species is the test set and three more are validation; the species label of a genome
# is its folder name. Everything else under references/ is training data.
RAGOUT_TEST = ["E.Coli/DH1", "H.Pylori/Puno120", "S.Aureus/N315", "V.Cholerae/O395"]
RAGOUT_VALIDATION = ["H.Pylori/Gambia94_24", "S.Aureus/RF122", "V.Cholerae/O1_biovar"]


def nucleotide_tokenizer() -> CharTokenizer:
    """A, C, G, T, N as ids 0-4; the mask id is 5. Sequences are upper case (read_fasta folds them)."""
    return CharTokenizer(NUCLEOTIDES)


@dataclass
class Genome:
    name: str
    """``species/strain`` for ragout, the file name (without suffixes) otherwise."""
    species: str
    """The folder a genome sits in (the label of the downstream probe)."""
    path: Path


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".fasta", ".fa", ".fna", ".fas"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def ragout_genomes() -> Dict[str, List[Genome]]:
    """The ragout reference genomes per split."""
    if not RAGOUT_ROOT.is_dir():
        raise MaskdiffError(f"the genome corpus 'ragout' is not installed (no {RAGOUT_ROOT}); {RAGOUT_HINT}")
    files = sorted(RAGOUT_ROOT.glob("*/references/*.fasta.gz"))
    genomes = {f"{p.parents[1].name}/{_stem(p)}": Genome(f"{p.parents[1].name}/{_stem(p)}", p.parents[1].name, p) for p in files}
    missing = sorted(set(RAGOUT_TEST + RAGOUT_VALIDATION) - set(genomes))
    if missing:
        raise MaskdiffError(f"the installed ragout-examples lacks genomes {missing}; {RAGOUT_HINT}")
    held = set(RAGOUT_TEST) | set(RAGOUT_VALIDATION)
    return {
        "train": [g for n, g in genomes.items() if n not in held],
        "validation": [genomes[n] for n in RAGOUT_VALIDATION],
        "test": [genomes[n] for n in RAGOUT_TEST],
    }


def directory_genomes(root: Path) -> Dict[str, List[Genome]]:
    """A directory with ``train/``, ``validation/`` and ``test/`` folders of FASTA files, one genome a
    file. The folder a file sits in below its split folder names its species (for the probe); a file
    directly in the split folder is its own species."""
    out: Dict[str, List[Genome]] = {}
    for split in ("train", "validation", "test"):
        folder = root / split
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_fasta_path(p)) if folder.is_dir() else []
        if not files:
            raise MaskdiffError(
                f"a genome directory needs FASTA files (.fasta, .fa, .fna, optionally .gz) under {folder}: "
                "give train/, validation/ and test/ folders, whole genomes in each"
            )
        out[split] = [Genome(_stem(p), p.parent.name if p.parent != folder else _stem(p), p) for p in files]
    return out


def genome_splits(corpus: str) -> Dict[str, List[Genome]]:
    """``ragout`` or a directory of FASTA files."""
    if corpus == "ragout":
        return ragout_genomes()
    root = Path(corpus)
    if root.is_dir():
        return directory_genomes(root)
    if root.exists():
        raise MaskdiffError(f"a DNA corpus is a directory of FASTA files (one genome each), not the file {root}")
    raise MaskdiffError(f"unknown DNA corpus {corpus!r}: give 'ragout' ({RAGOUT_HINT}) or a directory of FASTA files")


def genome_tokens(genome: Genome, tokenizer: CharTokenizer) -> Tensor:
    """One genome as a 1-D token stream: its records joined in file order."""
    seq = "".join(r.sequence for r in read_fasta(genome.path))
    ids = torch.frombuffer(bytearray(seq.encode("ascii")), dtype=torch.uint8).long()
    lut = torch.full((256,), -1, dtype=torch.long)
    for i, c in enumerate(tokenizer.alphabet):
        lut[ord(c)] = i
    out = lut[ids]
    if bool((out < 0).any()):
        raise MaskdiffError(f"{genome.path} holds symbols outside {tokenizer.alphabet}")
    return out


def split_genomes(corpus: str, split: str, tokenizer: CharTokenizer) -> List[Tensor]:
    """The genomes of one split as token streams, in a fixed order."""
    splits = genome_splits(corpus)
    if split not in splits:
        raise MaskdiffError(f"unknown split {split!r}; choose one of: {', '.join(splits)}")
    return [genome_tokens(g, tokenizer) for g in splits[split]]


def genome_windows(genomes: Sequence[Tensor], length: int, batch: int, generator: torch.Generator) -> Tensor:
    """``batch`` windows of ``length`` bases, each inside one genome: a genome is picked with probability
    proportional to its number of windows, then a uniform offset in it. (B, L)."""
    counts = torch.tensor([max(0, g.numel() - length + 1) for g in genomes], dtype=torch.float64)
    if float(counts.sum()) == 0:
        raise MaskdiffError(f"every genome is shorter than one sequence of {length} bases")
    which = torch.multinomial(counts, batch, replacement=True, generator=generator)
    offsets = (torch.rand(batch, generator=generator, dtype=torch.float64) * counts[which]).long()
    return torch.stack([genomes[int(w)][int(o) : int(o) + length] for w, o in zip(which, offsets)])
