"""Training you can watch (maskdiff.monitor): the validation NELBO with its interval and samples during
training leave the trained weights bit-identical; the logged figure is the estimator's on the EMA weights;
TensorBoard's own reader gives back the numbers of log.jsonl; MFU follows its formula; bad flags fail in
one line."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from helpers import MICRO_FLAGS, assert_clean_error, micro_config, run_main
from maskdiff.checkpoint import list_checkpoints, read_tensors
from maskdiff.distributed import Context
from maskdiff.monitor import flops_per_token, peak_flops, validation_nelbo
from maskdiff.train import train

STEPS, EVAL_EVERY, SAMPLE_EVERY, ROWS = 6, 3, 4, 12


def _config(plays, **train_fields):
    cfg = micro_config(steps=STEPS, corpus=plays, log_every=2, **train_fields)
    cfg.train.threads = 1
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory, plays):
    """The same micro run twice: watched (evaluated every 3 steps, sampled every 4, MFU against 1 TFLOP/s)
    and plain."""
    root = tmp_path_factory.mktemp("monitor")
    train(_config(plays, eval_every=EVAL_EVERY, eval_rows=ROWS, sample_every=SAMPLE_EVERY, peak_tflops=1.0), root / "watched", progress=False)
    train(_config(plays, tensorboard=False), root / "plain", progress=False)
    return root / "watched", root / "plain"


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_watching_leaves_the_trained_weights_bit_identical(runs):
    watched, plain = runs
    for name in ("model.safetensors", "optimizer.safetensors"):  # EMA, optimizer state and the global RNG state included
        a, b = read_tensors(list_checkpoints(watched)[-1] / name), read_tensors(list_checkpoints(plain)[-1] / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    plain_loss = {r["step"]: r["loss_nats_per_token"] for r in _log(plain)}
    assert {r["step"]: r["loss_nats_per_token"] for r in _log(watched) if r["step"] in plain_loss} == plain_loss
    assert not (plain / "tb").exists() and not (plain / "samples").exists()


def test_validation_records_hold_the_ema_estimate_with_its_interval(runs, plays):
    watched, _ = runs
    records = {r["step"]: r for r in _log(watched)}
    assert sorted(records) == [2, 3, 4, 6]  # every log_every, plus the evaluation at step 3
    val = [records[s] for s in (3, 6)]
    assert all("val_nelbo_bits_per_token" not in records[s] for s in (2, 4))
    for r in val:
        assert r["val_low"] < r["val_nelbo_bits_per_token"] < r["val_high"] and r["val_rows"] == ROWS and r["val_weights"] == "ema"
    # the last figure is the estimator's on the final EMA weights, loaded from the checkpoint (4 rows at a time:
    # the batch size, below maskdiff.monitor.EVAL_BATCH)
    import maskdiff
    from maskdiff.modalities import eval_chunks

    pipe = maskdiff.load(watched)  # EMA weights
    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, "validation")
    res = validation_nelbo(pipe.objective, tokens[:ROWS], valid[:ROWS], t_min=pipe.config.diffusion.t_min, batch=4, ctx=Context())
    assert res.bits_per_token() == pytest.approx((val[-1]["val_nelbo_bits_per_token"], val[-1]["val_low"], val[-1]["val_high"]), rel=1e-12)
    raw = maskdiff.load(watched, ema=False)
    other = validation_nelbo(raw.objective, tokens[:ROWS], valid[:ROWS], t_min=pipe.config.diffusion.t_min, batch=4, ctx=Context())  # batch_size 4 < EVAL_BATCH
    assert other.bits_per_token()[0] != pytest.approx(val[-1]["val_nelbo_bits_per_token"], rel=1e-9)
    samples = sorted((watched / "samples").glob("*-step00000004.txt"))
    assert len(samples) == 1 and len(samples[0].read_text().strip().split("\n\n")) == 2


def test_mfu_is_model_flops_over_the_peak(runs):
    watched, _ = runs
    import maskdiff

    fpt = flops_per_token(maskdiff.load(watched).objective, 32)
    for r in _log(watched):
        assert r["mfu"] == pytest.approx(fpt * r["tokens_per_s"] / 1e12, rel=1e-12) and r["mfu_peak"] == "--peak-tflops"
    assert peak_flops(torch.device("cpu"))[0] is None and peak_flops(torch.device("cpu"), 2.5)[0] == 2.5e12


def test_tensorboard_scalars_read_back_with_tensorboards_reader(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    watched, _ = runs
    acc = EventAccumulator(str(watched / "tb"))
    acc.Reload()
    records = _log(watched)
    numeric = {k for r in records for k, v in r.items() if k != "step" and isinstance(v, (int, float))}
    assert numeric >= {"loss_bits_per_token", "lr", "grad_norm", "tokens_per_s", "mfu", "val_nelbo_bits_per_token", "val_low", "val_high"}
    assert set(acc.Tags()["scalars"]) == numeric
    for tag in numeric:
        logged = [(r["step"], np.float32(r[tag])) for r in records if tag in r]
        read = [(e.step, np.float32(e.value)) for e in acc.Scalars(tag)]
        assert read == logged, tag  # TensorBoard stores float32
    assert acc.Tags()["tensors"] == ["samples/text_summary"]


def test_bad_flags_are_one_line_errors(tmp_path, plays):
    blank = tmp_path / "blank_validation.txt"  # the 90-95% slice (the validation split of a text file) is blank
    text = plays.read_text()[:20000]
    blank.write_text(text[:18000] + " " * 1000 + text[:1000])
    proc = run_main("train", "--run-dir", tmp_path / "run", "--corpus", blank, "--steps", "2", "--eval-every", "1", *MICRO_FLAGS)
    assert_clean_error(proc, "--eval-every needs a validation split", "validation")
    assert_clean_error(run_main("train", "--eval-every", "-1", *MICRO_FLAGS), "--eval-every")
    if importlib.util.find_spec("wandb") is None:  # asked for but not installed
        proc = run_main("train", "--wandb", "proj", "--run-dir", tmp_path / "w", "--corpus", plays, "--steps", "1", *MICRO_FLAGS)
        assert_clean_error(proc, "needs the wandb package")


@pytest.mark.slow  # torchrun and two training processes
def test_fsdp_two_processes_evaluate_and_sample_as_one(runs, tmp_path):
    """The watched run again on 2 Gloo processes under FSDP2: the validation rows are dealt out to the ranks
    (every rank in every forward), and the figures and samples are those of one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    watched, _ = runs
    exe = Path(sys.executable).with_name("torchrun")
    run = tmp_path / "fsdp"
    proc = subprocess.run([str(exe), "--standalone", "--nproc_per_node=2", "-m", "maskdiff.cli", "train", "--config",
                           str(watched / "config.json"), "--run-dir", str(run), "--parallel", "fsdp", "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = {r["step"]: r for r in _log(watched) if "val_low" in r}
    two = {r["step"]: r for r in _log(run) if "val_low" in r}
    assert one.keys() == two.keys() == {3, 6}
    for step in one:
        for key in ("val_nelbo_bits_per_token", "val_low", "val_high"):
            assert two[step][key] == pytest.approx(one[step][key], rel=1e-6)
    texts = lambda r: [p.read_text() for p in sorted((r / "samples").glob("*.txt"))]  # noqa: E731
    assert texts(run) == texts(watched)
