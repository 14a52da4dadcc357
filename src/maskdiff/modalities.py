"""What differs between text, DNA and images, behind one dispatch on ``config.data.modality``:
the tokenizer, how a training batch is drawn, how a split is cut for evaluation, and the unit of the
NELBO figure (BPC, bits per base, bits per dimension).

Every draw of a training batch comes from the step's generator, so the trainer's determinism (a
step is a function of (seed, step)) holds for every modality.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError

UNITS = {"text": "BPC", "dna": "bits/base", "image": "BPD"}
TOKEN_WORDS = {"text": "characters", "dna": "bases", "image": "pixels"}


def validate_modality(config: RunConfig) -> None:
    """Checks that only make sense for one modality; called by RunConfig.validate."""
    d, m = config.data, config.model
    if m.num_classes < 0:
        raise MaskdiffError(f"num_classes must be 0 (unconditional) or positive, got {m.num_classes}")
    if not 0.0 <= config.train.class_dropout < 1.0:
        raise MaskdiffError(f"class_dropout must be in [0, 1), got {config.train.class_dropout}")
    if m.num_classes and d.modality != "image":
        raise MaskdiffError(f"class-conditional training needs labelled data (modality 'image'), not {d.modality!r}")
    if d.modality == "image":
        from maskdiff.data.images import native_size

        native = native_size(d.corpus)
        side = d.image_size or native
        if native % side:
            raise MaskdiffError(f"image size {side} does not divide the native size {native} of {d.corpus}; choose a divisor of {native}")
        if d.length != side * side:
            raise MaskdiffError(f"an image run's length is its number of pixels: {side}x{side} = {side * side}, not {d.length}")
        if m.num_classes not in (0, 10):
            raise MaskdiffError(f"{d.corpus} has 10 classes; num_classes must be 10 (class-conditional) or 0, got {m.num_classes}")


def modality_tokenizer(config: RunConfig):
    d = config.data
    if d.modality == "dna":
        from maskdiff.data.dna import nucleotide_tokenizer

        return nucleotide_tokenizer()
    if d.modality == "image":
        from maskdiff.data.images import PixelTokenizer, corpus_levels, native_size

        side = d.image_size or native_size(d.corpus)
        return PixelTokenizer(d.levels or corpus_levels(d.corpus), side, side)
    raise MaskdiffError(f"modality {d.modality!r} has no tokenizer here")


class GenomeSource:
    """DNA: windows that never cross from one genome into the next."""

    def __init__(self, genomes, length: int):
        self.genomes, self.length = genomes, length

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
        from maskdiff.data.dna import genome_windows

        return genome_windows(self.genomes, self.length, batch, generator), None, None


class ImageSource:
    """Images: whole images with their labels (dropped to the null class with prob class_dropout)."""

    def __init__(self, tokens: Tensor, labels: Tensor, num_classes: int, class_dropout: float):
        self.tokens, self.labels = tokens, labels
        self.num_classes, self.class_dropout = num_classes, class_dropout

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
        from maskdiff.data.images import image_batch

        if not self.num_classes:
            idx = torch.randint(0, self.tokens.shape[0], (batch,), generator=generator)
            return self.tokens[idx], None, None
        x0, labels = image_batch(self.tokens, self.labels, batch, generator, class_dropout=self.class_dropout, null_class=self.num_classes)
        return x0, None, labels


def training_source(config: RunConfig, tokenizer):
    """Where training batches come from: ``draw(batch, generator) -> (x0 (B, L), valid (B, L) or None,
    labels (B,) or None)``, every draw from the step's generator."""
    d = config.data
    if d.modality == "dna":
        from maskdiff.data.dna import split_genomes

        return GenomeSource(split_genomes(d.corpus, "train", tokenizer), d.length)
    if d.modality == "image":
        from maskdiff.data.images import load_images

        split = load_images(d.corpus, "train", size=d.image_size, levels=tokenizer.levels)
        return ImageSource(split.tokens, split.labels, config.model.num_classes, config.train.class_dropout)
    from maskdiff.pipeline import text_source

    return text_source(config, tokenizer)


def eval_data(config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """(tokens (N, L), valid (N, L)) for DNA (each held-out genome cut into chunks of L bases, the last
    one padded; every base counted once) and images (one image per row)."""
    d = config.data
    corpus = corpus or d.corpus
    if d.modality == "dna":
        from maskdiff.data.chunking import contiguous_chunks
        from maskdiff.data.dna import split_genomes

        parts = [contiguous_chunks(g, d.length) for g in split_genomes(corpus, split, tokenizer)]
        # Interleave the genomes by relative position (chunk j of n sorts at j / n), so the first N
        # chunks (eval --limit N) spread evenly over every genome of the split.
        where = torch.cat([torch.arange(p[0].shape[0], dtype=torch.float64) / p[0].shape[0] for p in parts])
        order = torch.argsort(where, stable=True)
        return torch.cat([p[0] for p in parts])[order], torch.cat([p[1] for p in parts])[order]
    if d.modality == "image":
        from maskdiff.data.images import load_images

        images = load_images(corpus, split, size=d.image_size, levels=tokenizer.levels)
        return images.tokens, torch.ones_like(images.tokens, dtype=torch.bool)
    raise MaskdiffError(f"modality {d.modality!r} is evaluated by the text pipeline")
