"""Prompt/response pairs (data/pairs.py): the row layout, chat templates, the held-out split, and bad
input refused with one line before anything is written."""
import json

import pytest
import torch

from helpers import MICRO_FLAGS, assert_clean_error, run_main
from maskdiff import MaskdiffError
from maskdiff.data.pairs import PairSource, encode_pairs, holdout_indices, pair_rows, read_records, to_pairs
from maskdiff.data.tokenizers import tokenizer_for


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_row_layout_text8():
    """[prompt][response][end-of-text ...]: the prompt alone is the condition; text8 ends with the space (id 0)."""
    tok = tokenizer_for("text8")
    rows = encode_pairs([("to be ", "or not"), ("a", "b")], tok, 16, "f")
    assert tok.decode(rows.tokens[0]) == "to be or not" + " " * 4
    assert rows.cond[0].tolist() == [True] * 6 + [False] * 10
    assert tok.decode(rows.tokens[1]) == "ab" + " " * 14 and int(rows.cond[1].sum()) == 1
    x0, valid, labels, cond = PairSource(rows).draw(5, torch.Generator().manual_seed(0))
    assert valid is None and labels is None and x0.shape == cond.shape == (5, 16)


def test_row_layout_bert_and_chat_template(tmp_path):
    """A subword tokenizer: no BOS is added (the prompt is what `sample --prompt` fixes), EOS ([SEP]) ends and
    pads the response. A
    'messages' row goes through the folder's chat template: every turn before the last assistant turn
    with the generation prompt, then that turn's content."""
    transformers = pytest.importorskip("transformers")
    from maskdiff.data.subword import bert_tokenizer, local_tokenizer

    bert = bert_tokenizer()
    rows = encode_pairs([("to be", "or not")], bert, 8, "f")
    cls, sep = bert.bos_id, bert.eos_id
    assert rows.tokens[0, 0] != cls and rows.tokens[0, -1] == sep and int(rows.cond[0].sum()) == 2
    assert bert.decode(rows.tokens[0, 2:4]) == "or not" and rows.tokens[0, 4:].eq(sep).all()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bert.backend, cls_token="[CLS]", sep_token="[SEP]",
                                                mask_token="[MASK]", pad_token="[PAD]", unk_token="[UNK]")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
                          "{% if add_generation_prompt %}assistant:{% endif %}")
    fast.save_pretrained(tmp_path / "tok")
    tok = local_tokenizer(tmp_path / "tok")
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "to be"}, {"role": "assistant", "content": "or not"}]
    [(prompt, response)] = to_pairs([{"messages": msgs}], tok, "f")
    assert (prompt, response) == ("user: hello assistant: hi user: to be assistant:", "or not")
    rows = encode_pairs([(prompt, response)], tok, 32, "f")
    n = int(rows.cond[0].sum())
    assert tok.decode(rows.tokens[0, :n]).replace(" :", ":") == prompt and tok.decode(rows.tokens[0, n : n + 2]) == "or not"


def test_holdout_split_and_files(tmp_path):
    """The held-out rows are a fixed shuffle (the same whatever the seed), disjoint from training; a separate
    validation file replaces them; Parquet reads as JSONL does."""
    tr, va = holdout_indices(40, 0.1)
    assert len(va) == 4 and set(tr.tolist()) | set(va.tolist()) == set(range(40)) and not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(holdout_indices(40, 0.1)[1], va)
    tok = tokenizer_for("text8")
    path = _write(tmp_path / "p.jsonl", [{"prompt": f"p{chr(97 + i % 26)}", "response": "r"} for i in range(40)])
    assert len(pair_rows(tok, 8, str(path), "train", holdout=0.1)) == 36
    assert len(pair_rows(tok, 8, str(path), "validation", holdout=0.1)) == 4
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    pq.write_table(pyarrow.Table.from_pylist([{"prompt": "a", "response": "b"}]), tmp_path / "v.parquet")
    assert read_records(tmp_path / "v.parquet") == [{"prompt": "a", "response": "b"}]
    assert len(pair_rows(tok, 8, str(path), "train", validation=str(tmp_path / "v.parquet"))) == 40
    with pytest.raises(MaskdiffError, match="splits train, validation"):
        pair_rows(tok, 8, str(path), "test")


@pytest.mark.parametrize("rows, needles", [
    ([{"prompt": "to be or not", "response": "to be that is the question"}], ["row 1", "more than the row length 32", "--length"]),
    ([{"prompt": "", "response": "x"}], ["row 1", "prompt is empty"]),
    ([{"prompt": "a", "response": "b"}, {"text": "c"}], ["row 2", "['text']", "'prompt' and 'response'", "'messages'"]),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}], ["chat template", "tokenizer"]),
    ([{"messages": [{"role": "user", "content": "a"}]}], ["last turn", "assistant"]),
])
def test_bad_pairs_refused_before_writing(tmp_path, rows, needles):
    """A response longer than its row, an empty prompt, a row without the expected fields, 'messages' without a
    chat template: one error line naming what is wrong and what is valid, and no run folder."""
    path = _write(tmp_path / "p.jsonl", rows * 3)
    proc = run_main("train", "--pairs", path, "--pairs-holdout", "0", "--run-dir", tmp_path / "r", *MICRO_FLAGS)
    assert proc.returncode == 2
    assert_clean_error(proc, *needles)
    assert not (tmp_path / "r").exists()


def test_bad_pairs_files_and_objectives(tmp_path):
    """A missing file, a file of another kind, a line that is not JSON, and an objective that cannot keep a
    prompt out of its forward process (naming those that can)."""
    good = _write(tmp_path / "p.jsonl", [{"prompt": "a", "response": "b"}] * 3)
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"prompt": "a", "response": "b"}\n{not json\n')
    cases = [(["--pairs", tmp_path / "none.jsonl"], ["does not exist"]),
             (["--pairs", tmp_path / "p.csv"], [".jsonl or .parquet"]),
             (["--pairs", bad_line], ["line 2", "not valid JSON"]),
             (["--pairs", good, "--objective", "sedd"], ["sedd", "masked, block, ar"]),
             (["--pairs", good, "--packing", "pad"], ["packing"])]
    for args, needles in cases:
        proc = run_main("train", *args, "--run-dir", tmp_path / "r", *MICRO_FLAGS)
        assert proc.returncode == 2, proc.stderr
        assert_clean_error(proc, *needles)
        assert not (tmp_path / "r").exists()
