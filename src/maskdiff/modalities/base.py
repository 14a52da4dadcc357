"""What differs between text, DNA and images, behind one protocol: the tokenizer, how a training batch
is drawn, how a split is cut for evaluation, the unit of the NELBO figure and the checks of a config.

Every draw of a training batch comes from the step's generator, so the trainer's determinism (a step
is a function of (seed, step)) holds for every modality.
"""
from __future__ import annotations

from typing import Optional, Protocol, Tuple

import torch
from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError


class BatchSource(Protocol):
    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """(x0 (B, L), valid (B, L) or None, labels (B,) or None), every draw from ``generator``."""


class Modality:
    """One kind of data. Subclasses set the class attributes and implement the four builders."""

    name = "?"
    unit = "BPC"
    """The default unit of the NELBO figure."""
    token_word = "tokens"
    """What one token is, in words, for reports."""
    renders_images = False
    """Samples are images (a PNG grid) rather than text; ``eval --fid`` applies."""
    has_species_probe = False
    """Held-out sequences come from labelled genomes; ``eval --probe`` applies."""
    labelled = False
    """Training examples carry class labels (class-conditional training, guidance)."""

    def validate(self, config: RunConfig) -> None:
        """Checks that need this modality's data or only make sense for it; raise MaskdiffError."""
        d, m = config.data, config.model
        if m.num_classes < 0:
            raise MaskdiffError(f"num_classes must be 0 (unconditional) or positive, got {m.num_classes}")
        if not 0.0 <= config.train.class_dropout < 1.0:
            raise MaskdiffError(f"class_dropout must be in [0, 1), got {config.train.class_dropout}")
        if m.num_classes and not self.labelled:
            raise MaskdiffError(f"class-conditional training needs labelled data (modality 'image'), not {d.modality!r}")

    def charges_length(self, config: RunConfig) -> bool:
        """Whether each row's length is visible to the network (padded rows), so that evaluation adds
        -log p(length) to keep the figure a bound on -log p(x) (docs/math.md#packing)."""
        return False

    def tokenizer(self, config: RunConfig):
        """The tokenizer of a new run of this modality (callers use :func:`maskdiff.modalities.build_tokenizer`)."""
        raise NotImplementedError

    def training_source(self, config: RunConfig, tokenizer) -> BatchSource:
        """Where training batches come from: ``draw(batch, generator) -> (x0, valid, labels)``."""
        raise NotImplementedError

    def eval_chunks(self, config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None) -> Tuple[Tensor, Tensor]:
        """The split as sequences of the training length, every token counted once: (tokens (N, L), valid (N, L))
        (callers use :func:`maskdiff.modalities.eval_chunks`)."""
        raise NotImplementedError

    def report_unit(self, tokenizer) -> Tuple[str, str]:
        """(default unit, word for one token) of a run with this tokenizer."""
        return self.unit, self.token_word

    def check_unit(self, unit: str, tokenizer) -> None:
        """Refuse a unit that does not fit this run's tokens."""
