"""The papers' recipes (MDLM on OpenWebText and LM1B, MD4 on text8 and OpenWebText) run a few steps on the CPU
at a reduced size through the trainer itself: the same objective, schedule, time sampling, packing, tokenizer,
backbone, precision and optimizer settings; only the sizes, the step count and the corpus change."""
import json
import math

import pytest

from maskdiff.config import differences
from maskdiff.presets import get_preset
from maskdiff.train import train

RECIPES = ["mdlm-owt", "mdlm-lm1b", "md4-text8", "md4-owt"]
# what the reduced runs change: sizes, step count and schedule of the run, and the corpus
REDUCED = {"model.width", "model.depth", "model.heads", "model.cond_dim", "data.length", "data.corpus", "train.steps",
           "train.batch_size", "train.micro_batch_size", "train.warmup_steps", "train.checkpoint_every", "train.log_every"}


@pytest.fixture(scope="module")
def corpus(plays, tmp_path_factory):
    """60,000 characters of Shakespeare in paragraphs: documents for wrap and pad packing alike."""
    path = tmp_path_factory.mktemp("recipes") / "small.txt"
    path.write_text(plays.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


def reduced(name, corpus):
    cfg = get_preset(name)
    cfg.model.width, cfg.model.depth, cfg.model.heads, cfg.model.cond_dim = 32, 1, 2, 16
    cfg.data.length, cfg.data.corpus = 32, str(corpus)
    cfg.train.steps, cfg.train.batch_size, cfg.train.micro_batch_size, cfg.train.warmup_steps = 3, 4, 2, 1
    cfg.train.checkpoint_every, cfg.train.log_every = 1000, 1
    return cfg


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "mdlm-owt" else n for n in RECIPES])
def test_recipe_runs_a_few_steps(name, corpus, tmp_path):
    cfg = reduced(name, corpus)
    assert set(differences(get_preset(name), cfg, ignore=())) <= REDUCED
    result = train(cfg, tmp_path / name, progress=False)
    assert result.step == 3 and not result.interrupted
    saved = json.loads((tmp_path / name / "config.json").read_text())
    recipe = get_preset(name).to_dict()
    assert saved["diffusion"] == recipe["diffusion"]
    for key in ("backbone", "time_conditioned", "dropout"):
        assert saved["model"][key] == recipe["model"][key]
    for key in ("tokenizer", "form", "packing"):
        assert saved["data"][key] == recipe["data"][key]
    for key in ("lr", "lr_schedule", "min_lr_ratio", "grad_clip", "ema_decay", "precision", "beta2", "seed"):
        assert saved["train"][key] == recipe["train"][key]
    log = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    losses = [r["loss_nats_per_token"] for r in log if "loss_nats_per_token" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
