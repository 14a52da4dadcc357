"""Images: grey-level pixel tokens, whole images per row, optional class labels (classifier-free guidance)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.modalities.base import Modality


class ImageSource:
    """Images: whole images with their labels (dropped to the null class with prob class_dropout)."""

    def __init__(self, tokens: Tensor, labels: Tensor, num_classes: int, class_dropout: float):
        self.tokens, self.labels = tokens, labels
        self.num_classes, self.class_dropout = num_classes, class_dropout

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        from maskdiff.data.images import image_batch

        if not self.num_classes:
            idx = torch.randint(0, self.tokens.shape[0], (batch,), generator=generator)
            return self.tokens[idx], None, None
        x0, labels = image_batch(self.tokens, self.labels, batch, generator, class_dropout=self.class_dropout, null_class=self.num_classes)
        return x0, None, labels


class Image(Modality):
    name = "image"
    unit = "BPD"
    token_word = "pixels"
    renders_images = True
    labelled = True

    def validate(self, config: RunConfig) -> None:
        super().validate(config)
        from maskdiff.data.images import native_size

        d, m = config.data, config.model
        native = native_size(d.corpus)
        side = d.image_size or native
        if native % side:
            raise MaskdiffError(f"image size {side} does not divide the native size {native} of {d.corpus}; choose a divisor of {native}")
        if d.length != side * side:
            raise MaskdiffError(f"an image run's length is its number of pixels: {side}x{side} = {side * side}, not {d.length}")
        if m.num_classes not in (0, 10):
            raise MaskdiffError(f"{d.corpus} has 10 classes; num_classes must be 10 (class-conditional) or 0, got {m.num_classes}")

    def tokenizer(self, config: RunConfig):
        from maskdiff.data.images import PixelTokenizer, corpus_levels, native_size

        d = config.data
        side = d.image_size or native_size(d.corpus)
        return PixelTokenizer(d.levels or corpus_levels(d.corpus), side, side)

    def training_source(self, config: RunConfig, tokenizer):
        from maskdiff.data.images import load_images

        d = config.data
        split = load_images(d.corpus, "train", size=d.image_size, levels=tokenizer.levels)
        return ImageSource(split.tokens, split.labels, config.model.num_classes, config.train.class_dropout)

    def eval_chunks(self, config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None) -> Tuple[Tensor, Tensor]:
        """One image per row."""
        from maskdiff.data.images import load_images

        images = load_images(corpus or config.data.corpus, split, size=config.data.image_size, levels=tokenizer.levels)
        return images.tokens, torch.ones_like(images.tokens, dtype=torch.bool)
