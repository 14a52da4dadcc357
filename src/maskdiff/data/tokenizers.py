"""Character-level tokenizers. The mask token is id V (one past the last real token); it is added by
the model, never taken from the data."""
from __future__ import annotations

import re
import string
from typing import Iterable, List, Sequence

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

TEXT8_ALPHABET = " " + string.ascii_lowercase  # text8: lower-case a-z and space, 27 symbols


def text8_normalize(text: str) -> str:
    """Lower-case; every run of characters outside a-z becomes one space (the text8 convention)."""
    return re.sub(r"[^a-z]+", " ", text.lower())


class CharTokenizer:
    """Maps each character of ``alphabet`` to its index. ``normalize`` ('text8' or None) is applied
    before encoding."""

    def __init__(self, alphabet: str, normalize: str | None = None, mask_char: str = "_"):
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise MaskdiffError("a character alphabet must be non-empty with no repeated characters")
        if normalize not in (None, "text8"):
            raise MaskdiffError(f"unknown normalization {normalize!r}; choose one of: text8, none")
        self.alphabet = alphabet
        self.normalize = normalize
        self.mask_char = mask_char
        self._index = {c: i for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    @property
    def mask_id(self) -> int:
        return len(self.alphabet)

    def prepare(self, text: str) -> str:
        return text8_normalize(text) if self.normalize == "text8" else text

    def encode(self, text: str) -> Tensor:
        text = self.prepare(text)
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.long)
        except KeyError as err:
            raise MaskdiffError(
                f"character {err.args[0]!r} is not in this tokenizer's alphabet of {self.vocab_size} characters"
            ) from None

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == self.mask_id:
                out.append(self.mask_char)
            elif 0 <= i < self.vocab_size:
                out.append(self.alphabet[i])
            else:
                raise MaskdiffError(f"token id {i} is out of range 0..{self.mask_id} (mask = {self.mask_id})")
        return "".join(out)

    def decode_batch(self, rows: Iterable) -> List[str]:
        return [self.decode(r) for r in rows]

    def config(self) -> dict:
        return {"kind": "char", "alphabet": self.alphabet, "normalize": self.normalize}

    @classmethod
    def from_config(cls, cfg: dict) -> "CharTokenizer":
        if cfg.get("kind") != "char":
            raise MaskdiffError(f"unknown tokenizer kind {cfg.get('kind')!r}; this version knows: char")
        return cls(cfg["alphabet"], cfg.get("normalize"))


def tokenizer_for(form: str, text_for_alphabet: str | None = None) -> CharTokenizer:
    """``text8``: the fixed 27-symbol alphabet. ``chars``: every character that occurs in the text."""
    if form == "text8":
        return CharTokenizer(TEXT8_ALPHABET, normalize="text8")
    if form == "chars":
        if not text_for_alphabet:
            raise MaskdiffError("the 'chars' form needs text to build its alphabet from")
        return CharTokenizer("".join(sorted(set(text_for_alphabet))))
    raise MaskdiffError(f"unknown text form {form!r}; choose one of: text8, chars")
