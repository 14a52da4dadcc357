"""Crash safety: kill -9 at random moments (mid-step or mid-checkpoint) never loses more than the steps
since the last checkpoint, and the resumed run ends bit-identical to an uninterrupted one; a NaN or Inf
loss is skipped, and too many in a row stop the run with the checkpoints intact."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import MICRO_FLAGS, micro_config, run_cli
from maskdiff import MaskdiffError
from maskdiff.checkpoint import latest_valid_checkpoint, list_checkpoints, read_tensors, verify_checkpoint
from maskdiff.objectives import MaskedDiffusion
from maskdiff.train import train

STEPS = 14
FLAGS = [*MICRO_FLAGS, "--steps", str(STEPS), "--checkpoint-every", "1", "--keep-checkpoints", "2", "--threads", "1",
         "--log-every", "1"]


def _final(run):
    return read_tensors(list_checkpoints(run)[-1] / "model.safetensors")


def _steps_logged(run):
    path = run / "log.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path, plays):
    flags = [*FLAGS, "--corpus", str(plays)]
    ref = tmp_path / "ref"
    assert run_cli("train", "--run-dir", ref, *flags).returncode == 0
    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "maskdiff.cli", "train", "--run-dir", str(run), *flags],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = _steps_logged(run) + rng.randint(1, 3)
        deadline = time.time() + 120
        while proc.poll() is None and _steps_logged(run) < target and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(rng.random() * 0.05)  # land anywhere: inside a step or inside a checkpoint write
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        found = latest_valid_checkpoint(run)
        if found is not None:
            verify_checkpoint(found[0])
    assert kills >= 3
    proc = run_cli("train", "--run-dir", run, *flags)
    assert proc.returncode == 0, proc.stderr
    a, b = _final(ref), _final(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((run / "checkpoints").glob(".tmp*")), "stale partial checkpoints are cleaned up"


def _poison(monkeypatch, bad_calls):
    """Make the loss non-finite on the given (0-based) calls of the real training loss."""
    real = MaskedDiffusion.train_loss
    calls = {"n": 0}

    def train_loss(self, *args, **kwargs):
        loss, nelbo = real(self, *args, **kwargs)
        k = calls["n"]
        calls["n"] += 1
        if k in bad_calls:
            loss = loss * float("nan")
        return loss, nelbo

    monkeypatch.setattr(MaskedDiffusion, "train_loss", train_loss)


def test_nan_steps_are_skipped_and_counted(tmp_path, monkeypatch, plays):
    _poison(monkeypatch, {2, 3})
    cfg = micro_config(steps=6, corpus=plays)
    r = train(cfg, tmp_path / "r", progress=False, log=lambda *a: None)
    assert r.step == 6
    log = [json.loads(l) for l in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_steps"] == 2 and all(x == x for x in (e["grad_norm"] for e in log if e["step"] not in (3, 4)))
    weights = _final(tmp_path / "r")
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())


def test_too_many_bad_steps_stop_with_checkpoint_intact(tmp_path, monkeypatch, plays):
    _poison(monkeypatch, set(range(4, 100)))
    cfg = micro_config(steps=20, corpus=plays, checkpoint_every=2, max_bad_steps=3)
    with pytest.raises(MaskdiffError, match="3 steps in a row had a non-finite loss or gradient") as err:
        train(cfg, tmp_path / "r", progress=False, log=lambda *a: None)
    # steps 5 and 6 were skipped, so the checkpoint of step 6 holds the weights of step 4, all finite
    path, state = latest_valid_checkpoint(tmp_path / "r")
    assert state["step"] == 6 and state["skipped_steps"] == 2 and path.name in str(err.value)
    at6 = read_tensors(path / "model.safetensors")
    at4 = read_tensors(path.with_name("step_00000004") / "model.safetensors")
    assert all(torch.equal(at6[k], at4[k]) for k in at6)
    assert all(bool(torch.isfinite(v).all()) for v in at6.values())
