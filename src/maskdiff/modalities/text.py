"""Text: character or subword tokenizers, ``wrap`` (a stream cut into windows) or ``pad`` (one document
per row) packing, and the corpus's own train / validation / test split. A corpus prepared by ``maskdiff
data prepare`` (a folder with a manifest.json) is read from its shard files by position, with its own tokenizer."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.data.chunking import contiguous_chunks
from maskdiff.data.corpora import load_split_texts
from maskdiff.data.prepared import is_prepared, open_prepared, stream_layout
from maskdiff.data.tokenizers import CharTokenizer, tokenizer_for
from maskdiff.errors import MaskdiffError
from maskdiff.modalities.base import Modality

DOC_SEPARATOR = {"text8": " ", "chars": "\n\n"}


def is_character_level(tokenizer) -> bool:
    return tokenizer.config().get("kind") == "char"


def split_stream(config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None) -> Tensor:
    """One split of the corpus as a single 1-D token stream (``wrap`` packing).

    Character tokenizers join the documents' text with a separator and encode it at once; the others
    wrap each tokenized document (through the token cache) in BOS/EOS (see :mod:`maskdiff.data.packing`).
    A prepared corpus gives the same stream, read from its shards.
    """
    if is_prepared(corpus or config.data.corpus):
        return prepared_stream(corpus or config.data.corpus, tokenizer, split).read()
    texts = load_split_texts(corpus or config.data.corpus, split)
    if isinstance(tokenizer, CharTokenizer):
        text8 = tokenizer.normalize == "text8"
        text = DOC_SEPARATOR["text8" if text8 else "chars"].join(tokenizer.prepare(t) for t in texts)
        if text8:
            text = " ".join(text.split())  # one space between words, none at the ends
        stream = tokenizer.encode(text)
    else:
        from maskdiff.data.sources import packed_stream, token_documents

        stream = packed_stream(tokenizer, token_documents(tokenizer, texts, corpus=corpus or config.data.corpus, split=split))
    if stream.numel() == 0:
        raise MaskdiffError(f"the {split} split of {corpus or config.data.corpus} has no characters after normalization")
    return stream


def split_rows(config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None):
    """One split as padded rows, one document per row (``pad`` packing): (tokens, valid)."""
    from maskdiff.data.sources import padded_rows, token_documents

    if is_prepared(corpus or config.data.corpus):
        rows = prepared_rows(corpus or config.data.corpus, tokenizer, split, config.data.length)
        return rows.rows(np.arange(len(rows)))
    texts = load_split_texts(corpus or config.data.corpus, split)
    docs = token_documents(tokenizer, texts, corpus=corpus or config.data.corpus, split=split)
    return padded_rows(tokenizer, docs, config.data.length)


def prepared_stream(folder: str, tokenizer, split: str):
    """The ``wrap`` stream of one split of a prepared corpus (:class:`maskdiff.data.sources.PackedStream`)."""
    from maskdiff.data.sources import PackedStream

    corpus = open_prepared(folder)
    corpus.check_tokenizer(tokenizer)
    return PackedStream(corpus.split(split), *stream_layout(tokenizer))


def prepared_rows(folder: str, tokenizer, split: str, length: int):
    """The ``pad`` rows of one split of a prepared corpus (:class:`maskdiff.data.sources.PaddedRows`)."""
    from maskdiff.data.packing import document_bounds, pad_id_for
    from maskdiff.data.sources import PaddedRows

    corpus = open_prepared(folder)
    corpus.check_tokenizer(tokenizer)
    return PaddedRows(corpus.split(split), *document_bounds(tokenizer, "pad"), length, pad_id_for(tokenizer))


def tokenizer_name(config: RunConfig) -> str:
    """The tokenizer a config names: data.tokenizer (a folder as its absolute path), else data.form."""
    name = config.data.tokenizer or config.data.form
    return str(Path(name).resolve()) if name not in ("text8", "chars", "bytes", "gpt2", "bert") else name


def pair_split(config: RunConfig, tokenizer, split: str):
    """One split of the prompt/response pairs of data.pairs (conditional training): PairRows."""
    from maskdiff.data.pairs import pair_rows

    d = config.data
    return pair_rows(tokenizer, d.length, d.pairs, split, validation=d.pairs_validation, holdout=d.pairs_holdout)


class Text(Modality):
    name = "text"
    unit = "BPC"
    token_word = "characters"

    def charges_length(self, config: RunConfig) -> bool:
        return config.data.packing == "pad"

    def validate(self, config: RunConfig) -> None:
        if config.model.num_classes:  # the class checks; text has no other data-dependent check
            super().validate(config)

    def tokenizer(self, config: RunConfig):
        """data.tokenizer, or, when that is empty, the character form data.form."""
        from maskdiff.data import subword

        if is_prepared(config.data.corpus):  # the corpus's own tokenizer, if it is the one the config names
            return open_prepared(config.data.corpus).tokenizer_for(tokenizer_name(config))
        name = config.data.tokenizer or config.data.form
        if name not in ("text8", "chars"):
            return subword.named_tokenizer(name)
        if name == "text8":
            return tokenizer_for("text8")
        # 'chars': the alphabet of the whole corpus (all splits), so held-out text has no unknown symbol.
        texts = [t for split in ("train", "validation", "test") for t in load_split_texts(config.data.corpus, split)]
        return tokenizer_for("chars", "".join(texts))

    def training_source(self, config: RunConfig, tokenizer):
        from maskdiff.data.sources import PreparedRowSource, PreparedWindowSource, RowSource, WindowSource

        if config.data.pairs:  # conditional training: prompt/response rows (data/pairs.py)
            from maskdiff.data.pairs import PairSource

            return PairSource(pair_split(config, tokenizer, "train"))
        if is_prepared(config.data.corpus):  # windows and rows read from the shard files
            if config.data.packing == "pad":
                return PreparedRowSource(prepared_rows(config.data.corpus, tokenizer, "train", config.data.length))
            return PreparedWindowSource(prepared_stream(config.data.corpus, tokenizer, "train"), config.data.length)
        if config.data.packing == "pad":
            return RowSource(*split_rows(config, tokenizer, "train"))
        return WindowSource(split_stream(config, tokenizer, "train"), config.data.length)

    def eval_chunks(self, config: RunConfig, tokenizer, split: str, corpus: Optional[str] = None) -> Tuple[Tensor, Tensor]:
        """``wrap``: the stream cut into consecutive rows; ``pad``: the padded rows."""
        if config.data.packing == "pad":
            return split_rows(config, tokenizer, split, corpus)
        return contiguous_chunks(split_stream(config, tokenizer, split, corpus), config.data.length)

    def report_unit(self, tokenizer) -> Tuple[str, str]:
        """Character tokens report BPC; subword and byte tokens PPL over tokens."""
        return ("BPC", "characters") if is_character_level(tokenizer) else ("PPL", "tokens")

    def check_unit(self, unit: str, tokenizer) -> None:
        if unit == "BPC" and not is_character_level(tokenizer):
            raise MaskdiffError("BPC is per character and this model's tokens are not characters; use --unit PPL or BPT")
