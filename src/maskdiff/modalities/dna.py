"""DNA: nucleotide tokens, windows that never cross from one genome into the next, held-out genomes."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.modalities.base import Modality


class GenomeSource:
    """DNA: windows that never cross from one genome into the next."""

    def __init__(self, genomes, length: int):
        self.genomes, self.length = genomes, length

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        from maskdiff.data.dna import genome_windows

        return genome_windows(self.genomes, self.length, batch, generator), None, None


class DNA(Modality):
    name = "dna"
    has_species_probe = True
    unit = "bits/base"
    token_word = "bases"

    def tokenizer(self, config: RunConfig):
        from maskdiff.data.dna import nucleotide_tokenizer

        return nucleotide_tokenizer()

    def training_source(self, config: RunConfig, tokenizer):
        from maskdiff.data.dna import split_genomes

        return GenomeSource(split_genomes(config.data.corpus, "train", tokenizer), config.data.length)

    def eval_chunks(self, config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None) -> Tuple[Tensor, Tensor]:
        """Each held-out genome cut into chunks of L bases, the last one padded; every base counted once."""
        from maskdiff.data.chunking import contiguous_chunks
        from maskdiff.data.dna import split_genomes

        L = config.data.length
        parts = [contiguous_chunks(g, L) for g in split_genomes(corpus or config.data.corpus, split, tokenizer)]
        # Interleave the genomes by relative position (chunk j of n sorts at j / n), so the first N
        # chunks (eval --limit N) spread evenly over every genome of the split.
        where = torch.cat([torch.arange(p[0].shape[0], dtype=torch.float64) / p[0].shape[0] for p in parts])
        order = torch.argsort(where, stable=True)
        return torch.cat([p[0] for p in parts])[order], torch.cat([p[1] for p in parts])[order]
