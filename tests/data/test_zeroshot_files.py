"""MDLM's zero-shot files: each corpus's format read, and the reference's wrap and pad packing."""
import json

import pytest

from maskdiff.data.zeroshot_files import mdlm_pad, mdlm_wrap, read_documents, zero_shot_corpus
from maskdiff.errors import MaskdiffError

BOS, EOS = 8, 9


def test_wrap_rows_are_bos_piece_eos_and_drop_the_remainder():
    # stream 1 2 3 E 4 E 5 E; pieces of L - 2 = 2: [1 2] [3 E] [4 E] [5 E]
    rows = mdlm_wrap([[1, 2, 3], [4], [5]], 4, BOS, EOS)
    assert rows.tolist() == [[8, 1, 2, 9], [8, 3, 9, 9], [8, 4, 9, 9], [8, 5, 9, 9]]
    # L - 2 = 3: [1 2 3] [E 4 E], the remainder [5 E] dropped
    assert mdlm_wrap([[1, 2, 3], [4], [5]], 5, BOS, EOS).tolist() == [[8, 1, 2, 3, 9], [8, 9, 4, 9, 9]]


def test_wrap_drops_the_remainder_of_each_group():
    # groups of 2 documents: [1 2 3 E 4 E] -> [1 2 3] [E 4 E]; [5 E] alone is shorter than a piece
    assert mdlm_wrap([[1, 2, 3], [4], [5]], 5, BOS, EOS, group=2).tolist() == [[8, 1, 2, 3, 9], [8, 9, 4, 9, 9]]
    # groups of 1: [1 2 3 E] -> [1 2 3], E dropped; [4 E] and [5 E] too short
    assert mdlm_wrap([[1, 2, 3], [4], [5]], 5, BOS, EOS, group=1).tolist() == [[8, 1, 2, 3, 9]]
    with pytest.raises(MaskdiffError, match="fewer than 3 tokens"):
        mdlm_wrap([[1], [2]], 5, BOS, EOS, group=1)


def test_pad_rows_cut_each_document_at_l_minus_2():
    tokens, valid = mdlm_pad([[1, 2, 3, 4, 5], [6]], 5, BOS, EOS, pad_id=0)
    assert tokens.tolist() == [[8, 1, 2, 3, 9], [8, 6, 9, 0, 0]]
    assert valid.tolist() == [[True] * 5, [True, True, True, False, False]]


def test_each_format_is_read_as_the_reference_reads_it(tmp_path):
    raw = tmp_path / "wiki.valid.raw"
    raw.write_text(" \n = Title = \n \n Some text . \n", encoding="utf-8")
    assert read_documents(raw, zero_shot_corpus("wikitext")) == ["", " = Title = \n", "", " Some text . \n"]
    ptb = tmp_path / "ptb.valid.txt"
    ptb.write_text(" a b c \n d e\n", encoding="utf-8")
    assert read_documents(ptb, zero_shot_corpus("ptb")) == ["a b c", "d e"]
    lam = tmp_path / "lambada_test.jsonl"
    lam.write_text(json.dumps({"text": "one two"}) + "\n\n" + json.dumps({"text": "three"}) + "\n", encoding="utf-8")
    assert read_documents(lam, zero_shot_corpus("lambada")) == ["one two", "three"]
    arxiv = tmp_path / "val.txt"
    arxiv.write_text(json.dumps({"article_id": "x", "article_text": ["first .", "second ."]}) + "\n", encoding="utf-8")
    assert read_documents(arxiv, zero_shot_corpus("arxiv")) == ["first .\nsecond ."]
    news = tmp_path / "test.csv"
    news.write_text('"3","Title here","The description."\n"1","T2","D2"\n', encoding="utf-8")
    assert read_documents(news, zero_shot_corpus("ag-news")) == ["Title here The description.", "T2 D2"]


def test_bad_files_and_names_are_refused(tmp_path):
    with pytest.raises(MaskdiffError, match="does not exist"):
        read_documents(tmp_path / "nope.txt", zero_shot_corpus("ptb"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n', encoding="utf-8")
    with pytest.raises(MaskdiffError, match="line 1 has no text field 'text'"):
        read_documents(bad, zero_shot_corpus("lambada"))
    with pytest.raises(MaskdiffError, match="unknown zero-shot corpus 'wt103'.*wikitext"):
        zero_shot_corpus("wt103")
