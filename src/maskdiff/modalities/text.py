"""Text: character or subword tokenizers, ``wrap`` (a stream cut into windows) or ``pad`` (one document
per row) packing, and the corpus's own train / validation / test split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from torch import Tensor

from maskdiff.config import RunConfig
from maskdiff.data.chunking import contiguous_chunks
from maskdiff.data.corpora import load_split_texts
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
    """
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

    texts = load_split_texts(corpus or config.data.corpus, split)
    docs = token_documents(tokenizer, texts, corpus=corpus or config.data.corpus, split=split)
    return padded_rows(tokenizer, docs, config.data.length)


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

        name = config.data.tokenizer or config.data.form
        if name == "bytes":
            return subword.ByteTokenizer()
        if name == "gpt2":
            return subword.gpt2_tokenizer()
        if name == "bert":
            return subword.bert_tokenizer()
        if name not in ("text8", "chars"):
            return subword.local_tokenizer(Path(name))
        if name == "text8":
            return tokenizer_for("text8")
        # 'chars': the alphabet of the whole corpus (all splits), so held-out text has no unknown symbol.
        texts = [t for split in ("train", "validation", "test") for t in load_split_texts(config.data.corpus, split)]
        return tokenizer_for("chars", "".join(texts))

    def training_source(self, config: RunConfig, tokenizer):
        from maskdiff.data.sources import RowSource, WindowSource

        if config.data.pairs:  # conditional training: prompt/response rows (data/pairs.py)
            from maskdiff.data.pairs import PairSource

            return PairSource(pair_split(config, tokenizer, "train"))
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
