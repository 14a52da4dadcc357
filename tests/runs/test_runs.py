"""Run directories (maskdiff.runs): what the trainer writes reads back as it was; a directory made with
another configuration, a missing or broken file and a run without checkpoints are refused by name.
No training: the files are written by the module's own writers."""
import json

import pytest
import torch

from helpers import micro_config
from maskdiff.checkpoint import save_checkpoint
from maskdiff.data.images import PixelTokenizer
from maskdiff.data.subword import ByteTokenizer
from maskdiff.data.tokenizers import TEXT8_ALPHABET, CharTokenizer
from maskdiff.errors import MaskdiffError
from maskdiff.runs import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    RunLog,
    checkpoint_to_load,
    read_log,
    read_run_config,
    read_tokenizer,
    start_run,
)


@pytest.mark.parametrize("tokenizer", [CharTokenizer(TEXT8_ALPHABET, normalize="text8"), ByteTokenizer(), PixelTokenizer(4, 3, 5)],
                         ids=["char", "bytes", "pixels"])
def test_a_started_run_reads_back_its_config_and_tokenizer(tmp_path, tokenizer):
    config = micro_config()
    start_run(tmp_path / "r", config, tokenizer)
    assert read_run_config(tmp_path / "r").to_dict() == config.to_dict()
    again = read_tokenizer(tmp_path / "r")
    assert type(again) is type(tokenizer) and again.config() == tokenizer.config()
    assert again.vocab_size == tokenizer.vocab_size and again.mask_id == tokenizer.mask_id


def test_a_run_may_be_extended_but_not_changed(tmp_path):
    tok = CharTokenizer(TEXT8_ALPHABET, normalize="text8")
    start_run(tmp_path, micro_config(steps=6), tok)
    start_run(tmp_path, micro_config(steps=12), tok)  # more steps: the same run, extended
    assert read_run_config(tmp_path).train.steps == 12
    other = micro_config(steps=12)
    other.model.width, other.train.lr = 64, 0.125
    with pytest.raises(MaskdiffError, match=r"different configuration \(model.width: 32 -> 64, train.lr: [0-9.e-]+ -> 0.125\); use another --run-dir"):
        start_run(tmp_path, other, tok)
    assert read_run_config(tmp_path).model.width == 32  # left as it was


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(MaskdiffError, match="does not exist"):
        read_run_config(tmp_path / "nowhere")
    with pytest.raises(MaskdiffError, match=f"not a maskdiff run directory: {CONFIG_FILE} is missing"):
        read_run_config(tmp_path)
    with pytest.raises(MaskdiffError, match=f"has no {TOKENIZER_FILE}"):
        read_tokenizer(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(MaskdiffError, match="is not valid JSON"):
        read_run_config(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text(json.dumps({"kind": "sentencepiece"}))
    with pytest.raises(MaskdiffError, match="unknown tokenizer kind 'sentencepiece'; this version knows: char, bytes, hf, pixels"):
        read_tokenizer(tmp_path)


def test_the_log_appends_across_sessions(tmp_path):
    assert read_log(tmp_path) == []
    with RunLog(tmp_path) as log:
        log.write({"step": 1, "loss": 0.5})
        assert read_log(tmp_path) == [{"step": 1, "loss": 0.5}]  # flushed as it is written
    with RunLog(tmp_path) as log:  # a resumed run continues the file
        log.write({"step": 2, "loss": 0.25})
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2]


def test_the_checkpoint_to_load_is_the_newest_valid_one_or_the_one_named(tmp_path):
    with pytest.raises(MaskdiffError, match="has no valid checkpoint; train it first"):
        checkpoint_to_load(tmp_path)
    for step in (2, 4):
        save_checkpoint(tmp_path, step, {"model.w": torch.full((2,), float(step))}, {}, {}, keep=3)
    path, state = checkpoint_to_load(tmp_path)
    assert state["step"] == 4 and path.name == "step_00000004"
    (path / "model.safetensors").write_bytes(b"truncated")  # the newest is broken: the one before is chosen
    path, state = checkpoint_to_load(tmp_path)
    assert state["step"] == 2
    named, state = checkpoint_to_load(tmp_path, tmp_path / "checkpoints" / "step_00000002")
    assert named == path and state["step"] == 2
