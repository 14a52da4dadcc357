"""Text, DNA and images behind one protocol (:class:`~maskdiff.modalities.base.Modality`): the
tokenizer, training batches, evaluation chunks, the unit of the NELBO figure and the config checks
that need the data. ``get_modality(name_or_config)`` returns the one a run uses."""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Type, Union

from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.modalities.base import Modality
from maskdiff.modalities.dna import DNA
from maskdiff.modalities.image import Image
from maskdiff.modalities.text import Text

MODALITIES: Dict[str, Type[Modality]] = {m.name: m for m in (Text, DNA, Image)}


def get_modality(which: Union[str, RunConfig]) -> Modality:
    """The modality called ``which``, or the one of a RunConfig."""
    name = which.data.modality if isinstance(which, RunConfig) else which
    if name not in MODALITIES:
        raise MaskdiffError(f"unknown modality {name!r}; choose one of: {', '.join(MODALITIES)}")
    return MODALITIES[name]()


def build_tokenizer(config: RunConfig):
    """The tokenizer of a new run, built by its modality from the config (text: data.tokenizer, or
    data.form when that is empty). A trained run's tokenizer is read back from its folder instead
    (:func:`maskdiff.runs.read_tokenizer`)."""
    return get_modality(config).tokenizer(config)


def training_source(config: RunConfig, tokenizer):
    """Where training batches come from: ``draw(batch, generator) -> (x0 (B, L), valid (B, L) or None,
    labels (B,) or None)``, every draw from the step's generator."""
    return get_modality(config).training_source(config, tokenizer)


def eval_chunks(config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """The evaluation data of a split, every token exactly once: (tokens (N, L), valid (N, L)) (see
    :meth:`Modality.eval_chunks`). corpus: another corpus of the same modality (default data.corpus)."""
    return get_modality(config).eval_chunks(config, tokenizer, split, corpus)


__all__ = ["MODALITIES", "Modality", "Text", "DNA", "Image", "get_modality", "build_tokenizer", "training_source", "eval_chunks"]
