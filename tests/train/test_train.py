"""Trainer: exact resume, learning, checkpoints, the learning-rate schedule."""
import json

import pytest
import torch

import maskdiff
from helpers import micro_config
from maskdiff.checkpoint import list_checkpoints, read_tensors
from maskdiff.errors import MaskdiffError
from maskdiff.modalities import build_tokenizer, eval_chunks
from maskdiff.modalities.text import split_stream
from maskdiff.step import learning_rate
from maskdiff.train import train


def _final(run):
    return read_tensors(list_checkpoints(run)[-1] / "model.safetensors")


def test_resume_is_bit_identical(tmp_path, plays):
    """N steps == N/2 steps + resume + N/2 steps: weights, EMA bit-identical on CPU."""
    cfg = micro_config(steps=8, corpus=plays, micro_batch_size=2)
    train(cfg, tmp_path / "a", progress=False)
    r = train(cfg, tmp_path / "b", progress=False, stop_after=4)
    assert r.interrupted and r.step == 4
    r = train(cfg, tmp_path / "b", progress=False)
    assert r.resumed_from == 4 and r.step == 8
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the run really trained: the zero-initialised output layer moved
    assert not torch.equal(a["model.head.weight"], torch.zeros_like(a["model.head.weight"]))


def test_micro_batching_matches_full_batch(tmp_path, plays):
    """Gradient accumulation over micro-batches computes the same step as the whole batch at once."""
    train(micro_config(steps=3, corpus=plays), tmp_path / "full", progress=False)
    train(micro_config(steps=3, corpus=plays, micro_batch_size=1), tmp_path / "micro", progress=False)
    a, b = _final(tmp_path / "full"), _final(tmp_path / "micro")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)


@pytest.mark.slow
def test_loss_decreases_and_log_written(tmp_path, plays):
    """On three Shakespeare works, 300 steps bring the held-out NELBO below the cross-entropy of the validation
    characters under the training split's unigram law (2.84 nats: the best a model that ignores the context
    can do), by more than 0.1 nats at the top of its 95% interval (measured 2.52, [2.48, 2.57]); after 120
    steps it is still at the unigram level (2.88). The training loss of the last steps is no evidence of this:
    on the batches of steps 100-119 the unigram law itself scores 2.65."""
    cfg = micro_config(steps=300, corpus=plays, lr=3e-3, batch_size=16)
    train(cfg, tmp_path / "r", progress=False)
    log = [json.loads(l) for l in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 301))
    first = sum(r["loss_nats_per_token"] for r in log[:10]) / 10
    last = sum(r["loss_nats_per_token"] for r in log[-10:]) / 10
    assert last < first, (first, last)
    assert {"lr", "grad_norm", "tokens_per_s"} <= set(log[0])
    tokenizer = build_tokenizer(cfg)
    train_freq = torch.bincount(split_stream(cfg, tokenizer, "train"), minlength=tokenizer.vocab_size).double()
    val_freq = torch.bincount(split_stream(cfg, tokenizer, "validation"), minlength=tokenizer.vocab_size).double()
    unigram = float(-(val_freq / val_freq.sum() * (train_freq / train_freq.sum()).clamp(min=1e-300).log()).sum())
    pipe = maskdiff.load(tmp_path / "r")
    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, "validation", None)
    low, high = pipe.evaluate(tokens, valid, passes=4).interval()
    assert high < unigram - 0.1, (low, high, unigram)


def test_checkpoints_kept_and_checksummed(tmp_path, plays):
    cfg = micro_config(steps=6, corpus=plays, checkpoint_every=1, keep_checkpoints=2)
    train(cfg, tmp_path / "r", progress=False)
    ckpts = list_checkpoints(tmp_path / "r")
    assert [p.name for p in ckpts] == ["step_00000005", "step_00000006"]
    state = json.loads((ckpts[-1] / "state.json").read_text())
    assert state["step"] == 6 and set(state["sha256"]) == {"model.safetensors", "optimizer.safetensors"}
    assert not list((tmp_path / "r" / "checkpoints").glob(".tmp*"))


def test_train_checks_the_config_it_is_given(tmp_path):
    """The Python API is a boundary too: a bad config given to train() is refused, with the command
    line's message, before the run directory is made."""
    cfg = micro_config()
    cfg.diffusion.schedule = "cosin"
    with pytest.raises(MaskdiffError, match="unknown schedule 'cosin'; choose one of: .*mdlm-cosine"):
        train(cfg, tmp_path / "r", progress=False)
    cfg = micro_config()
    cfg.diffusion.objective, cfg.diffusion.block_size = "block", 5  # passes RunConfig.validate; the objective refuses it
    with pytest.raises(MaskdiffError, match="the block size 5 must divide the sequence length 32"):
        train(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_learning_rate_schedule():
    cfg = micro_config(steps=100).train
    cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio = 1.0, 10, 0.1
    assert learning_rate(0, cfg) == 0.1 and learning_rate(9, cfg) == 1.0
    assert abs(learning_rate(100, cfg) - 0.1) < 1e-12
    assert abs(learning_rate(55, cfg) - 0.55) < 1e-12
    cfg.lr_schedule = "constant"
    assert learning_rate(80, cfg) == 1.0
