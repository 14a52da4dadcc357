"""Recipes: named functions that return a RunConfig. Change a field after calling one, not the recipe."""
from __future__ import annotations

from typing import Callable, Dict

from maskdiff.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig
from maskdiff.errors import MaskdiffError


def tiny() -> RunConfig:
    """Trains in a few minutes on 2 CPU cores: text8-style Shakespeare, 4 x 128 transformer, L = 128."""
    return RunConfig(
        preset="tiny",
        model=ModelConfig(width=128, depth=4, heads=4),
        data=DataConfig(corpus="shakespeare", form="text8", length=128),
        diffusion=DiffusionConfig(schedule="linear"),
        train=TrainConfig(steps=1000, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.99, checkpoint_every=200, threads=2),
    )


def small() -> RunConfig:
    """MDLM's small model (12 layers, 768 wide, 12 heads; MDLM Sec. 4) at character level; for a GPU."""
    return RunConfig(
        preset="small",
        model=ModelConfig(width=768, depth=12, heads=12, cond_dim=128, dropout=0.1),
        data=DataConfig(corpus="shakespeare", form="text8", length=256),
        diffusion=DiffusionConfig(schedule="linear"),
        train=TrainConfig(steps=20000, batch_size=256, lr=3e-4, warmup_steps=2500, lr_schedule="constant", ema_decay=0.9999, checkpoint_every=1000),
    )


def shakespeare_bpe() -> RunConfig:
    """GPT-2 BPE on Shakespeare (MDLM's OpenWebText setup in miniature): documents wrapped in
    <|endoftext|>, L = 128, logits at masked positions only; minutes on 2 CPU cores."""
    return RunConfig(
        preset="shakespeare-bpe",
        model=ModelConfig(width=128, depth=4, heads=4, masked_logits=True),
        data=DataConfig(corpus="shakespeare", tokenizer="gpt2", packing="wrap", length=128),
        diffusion=DiffusionConfig(schedule="linear"),
        train=TrainConfig(steps=600, batch_size=16, lr=2e-3, warmup_steps=50, ema_decay=0.99, checkpoint_every=200, threads=2),
    )


PRESETS: Dict[str, Callable[[], RunConfig]] = {"tiny": tiny, "small": small, "shakespeare-bpe": shakespeare_bpe}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise MaskdiffError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
