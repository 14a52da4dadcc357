"""Character data: Shakespeare splits by whole works, text8 normalization, chunking."""
import torch

from maskdiff.data.chunking import contiguous_chunks, random_windows
from maskdiff.data.corpora import load_split_texts, shakespeare_works
from maskdiff.data.tokenizers import TEXT8_ALPHABET, CharTokenizer, text8_normalize, tokenizer_for


def test_shakespeare_splits_are_disjoint_whole_works():
    works = shakespeare_works()
    assert len(works["train"]) + len(works["validation"]) + len(works["test"]) == 42
    assert not set(works["train"]) & set(works["validation"])
    assert not set(works["train"]) & set(works["test"])
    assert not set(works["validation"]) & set(works["test"])
    assert not any(w.endswith("_f") for ws in works.values() for w in ws)  # folio duplicates excluded
    sizes = {k: sum(len(t) for t in load_split_texts("shakespeare", k)) for k in works}
    assert sizes["train"] > 4_000_000 and 200_000 < sizes["validation"] < 600_000


def test_text8_normalization_and_roundtrip():
    assert text8_normalize("Who's there?\nNay, answer ME!") == "who s there nay answer me "
    tok = tokenizer_for("text8")
    assert tok.vocab_size == 27 and tok.mask_id == 27 and tok.alphabet == TEXT8_ALPHABET
    ids = tok.encode("to be, or not")
    assert tok.decode(ids) == "to be or not"
    assert tok.decode([0, 27, 1]) == " _a"


def test_chars_form_roundtrip():
    text = "Hamlet.\nTo be, or not to be!"
    tok = tokenizer_for("chars", text)
    assert tok.decode(tok.encode(text)) == text
    assert CharTokenizer.from_config(tok.config()).alphabet == tok.alphabet


def test_chunking_covers_stream_once():
    stream = torch.arange(10)
    tokens, valid = contiguous_chunks(stream, 4)
    assert tokens.shape == (3, 4)
    assert torch.equal(tokens[valid], stream)
    windows = random_windows(stream, 4, 100, torch.Generator().manual_seed(0))
    assert torch.all(windows[:, 1:] - windows[:, :-1] == 1) and windows.min() >= 0 and windows.max() <= 9
