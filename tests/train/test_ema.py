"""The EMA's decay after step n: min(ema_decay, (1 + n) / (10 + n)) with the warm-up (MDLM's convention, the
default), ema_decay from the first step without it (MD4's). Two one-step runs from the same seed reach the same
raw weights p (the EMA does not feed back), so each EMA = d init + (1 - d) p must give back the same init."""
import torch
from helpers import micro_config

from maskdiff.checkpoint import latest_valid_checkpoint, prefixed_weights, read_weights
from maskdiff.train import train


def _weights(run):
    path, state = latest_valid_checkpoint(run)
    tensors = read_weights(path, state)
    return prefixed_weights(tensors, "model", path), prefixed_weights(tensors, "ema", path)


def test_ema_warmup_and_md4s_constant_decay(tmp_path, plays):
    for name, warmup in (("warm", True), ("constant", False)):
        train(micro_config(steps=1, corpus=plays, ema_decay=0.9, ema_warmup=warmup), tmp_path / name, progress=False)
    p_warm, ema_warm = _weights(tmp_path / "warm")
    p_const, ema_const = _weights(tmp_path / "constant")
    for k in p_warm:
        assert torch.equal(p_warm[k], p_const[k]), k
        init_from_warm = (ema_warm[k] - 0.9 * p_warm[k]) / 0.1  # decay after step 0 with the warm-up: 1 / 10
        init_from_const = (ema_const[k] - 0.1 * p_const[k]) / 0.9  # without: 0.9
        torch.testing.assert_close(init_from_warm, init_from_const, atol=2e-5, rtol=1e-4)
    moved = [k for k in p_warm if not torch.allclose(ema_warm[k], ema_const[k])]
    assert moved  # the two conventions do differ
