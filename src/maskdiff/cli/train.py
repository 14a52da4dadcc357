"""``maskdiff train``: a config from a preset or a file, the flags laid over it, then the trainer."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from maskdiff.cli.args import key_value, nonneg_int, number, positive_float, positive_int, unit_float
from maskdiff.errors import MaskdiffError

# (flag, config section, field, argparse type) for the train overrides; help comes from the config docstrings.
TRAIN_OVERRIDES = [
    ("--steps", "train", "steps", positive_int),
    ("--batch-size", "train", "batch_size", positive_int),
    ("--micro-batch-size", "train", "micro_batch_size", nonneg_int),
    ("--lr", "train", "lr", positive_float),
    ("--warmup-steps", "train", "warmup_steps", nonneg_int),
    ("--lr-schedule", "train", "lr_schedule", str),
    ("--ema-decay", "train", "ema_decay", unit_float),
    ("--seed", "train", "seed", int),
    ("--threads", "train", "threads", nonneg_int),
    ("--device", "train", "device", str),
    ("--parallel", "train", "parallel", str),
    ("--precision", "train", "precision", str),
    ("--compile", "train", "compile", str),
    ("--max-bad-steps", "train", "max_bad_steps", positive_int),
    ("--checkpoint-every", "train", "checkpoint_every", positive_int),
    ("--log-every", "train", "log_every", positive_int),
    ("--keep-checkpoints", "train", "keep_checkpoints", positive_int),
    ("--objective", "diffusion", "objective", str),
    ("--schedule", "diffusion", "schedule", str),
    ("--time-sampler", "diffusion", "time_sampler", str),
    ("--genmd4-samples", "diffusion", "genmd4_samples", positive_int),
    ("--block-size", "diffusion", "block_size", positive_int),
    ("--mask-rate-min", "diffusion", "mask_rate_min", unit_float),
    ("--mask-rate-max", "diffusion", "mask_rate_max", number(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")),
    ("--t-min", "diffusion", "t_min", unit_float),
    ("--discrete-steps", "diffusion", "discrete_steps", nonneg_int),
    ("--corpus", "data", "corpus", str),
    ("--form", "data", "form", str),
    ("--tokenizer", "data", "tokenizer", str),
    ("--packing", "data", "packing", str),
    ("--length", "data", "length", positive_int),
    ("--width", "model", "width", positive_int),
    ("--depth", "model", "depth", positive_int),
    ("--heads", "model", "heads", positive_int),
    ("--init", "model", "init", str),
    ("--local-mixing", "model", "local_mixing", nonneg_int),
    ("--backbone", "model", "backbone", str),
    ("--pretrained", "model", "pretrained", str),
    ("--modality", "data", "modality", str),
    ("--levels", "data", "levels", nonneg_int),
    ("--image-size", "data", "image_size", nonneg_int),
    ("--num-classes", "model", "num_classes", nonneg_int),
    ("--class-dropout", "train", "class_dropout", unit_float),
    ("--eval-every", "train", "eval_every", nonneg_int),
    ("--eval-rows", "train", "eval_rows", positive_int),
    ("--sample-every", "train", "sample_every", nonneg_int),
    ("--sample-num", "train", "sample_num", positive_int),
    ("--peak-tflops", "train", "peak_tflops", positive_float),
    ("--wandb", "train", "wandb", str),
    ("--pairs", "data", "pairs", str),
    ("--lora-rank", "model", "lora_rank", nonneg_int),
    ("--pairs-validation", "data", "pairs_validation", str),
    ("--pairs-holdout", "data", "pairs_holdout", unit_float),
]

# On/off flags: (flag, section, field, the value the flag sets, help; None: the field's own docstring).
SWITCHES = [
    ("--time-conditioned", "model", "time_conditioned", True, None),
    ("--no-carry-over", "diffusion", "carry_over", False, None),
    ("--no-zero-mask", "diffusion", "zero_mask", False, None),
    ("--no-tensorboard", "train", "tensorboard", False,
     "write no TensorBoard event files (by default RUN/tb gets them when the tensorboard package is installed)"),
    ("--trust-remote-code", "model", "trust_remote_code", True, None),
    ("--activation-checkpointing", "train", "activation_checkpointing", True, None),
    ("--no-ema-warmup", "train", "ema_warmup", False, "the EMA decays at --ema-decay from the first step (MD4's convention), "
     "not warmed up as min(decay, (1 + n) / (10 + n)) after step n (MDLM's, the default)"),
]


def register(sub) -> None:
    from maskdiff.config import describe_field
    from maskdiff.presets import PRESETS
    from maskdiff.schedules import SCHEDULES

    p = sub.add_parser("train", help="train or resume a run", description="Train a masked diffusion model, or resume the run in --run-dir from its newest valid checkpoint. Ctrl-C stops after the current step and saves a checkpoint.")
    p.add_argument("--preset", help=f"starting recipe: {', '.join(PRESETS)} (default: tiny, or the --init-from run's config)")
    p.add_argument("--config", type=Path, help="a config.json to start from instead of a preset")
    p.add_argument("--run-dir", type=Path, help="where config, checkpoints and logs go (default: runs/<preset>)")
    p.add_argument("--init-from", type=Path, metavar="RUN", help="fine-tune a trained run: start from its config.json (unless --config "
                   "or --preset) and the EMA weights of its newest checkpoint, in a new --run-dir (docs/conditional.md)")
    for flag, section, name, typ in TRAIN_OVERRIDES:
        extra = f" Choices: {', '.join(SCHEDULES)}." if name == "schedule" else ""
        p.add_argument(flag, type=typ, default=None, help=(describe_field(section, name) or "").replace("%", "%%") + extra)
    p.add_argument("--schedule-arg", type=key_value, action="append", default=[], metavar="KEY=VALUE", help="schedule argument, e.g. w=3 for polynomial, eps=1e-3 for loglinear (repeatable)")
    for flag, section, name, _, text in SWITCHES:
        p.add_argument(flag, action="store_true", help=text or describe_field(section, name))
    p.add_argument("--masked-logits", action=argparse.BooleanOptionalAction, default=None,
                   help=describe_field("model", "masked_logits") + " (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args):
    """The run's configuration: ``--config`` or ``--preset``, with every flag given laid over it (the trainer
    completes and checks it, once)."""
    from maskdiff.config import RunConfig
    from maskdiff.presets import get_preset

    if args.init_from and not args.config and not args.preset:
        from maskdiff.runs import CONFIG_FILE, read_run_config

        # the run's own config once it has one (the same command resumes it, even after its parent has moved)
        started = args.run_dir is not None and (args.run_dir / CONFIG_FILE).is_file()
        config = read_run_config(args.run_dir if started else args.init_from)
    elif args.config:
        try:
            config = RunConfig.from_dict(json.loads(args.config.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise MaskdiffError(f"config file {args.config} does not exist") from None
        except json.JSONDecodeError as err:
            raise MaskdiffError(f"config file {args.config} is not valid JSON ({err})") from None
    else:
        config = get_preset(args.preset or "tiny")
    for flag, section, name, _ in TRAIN_OVERRIDES:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            setattr(getattr(config, section), name, value)
    if args.schedule_arg:
        config.diffusion.schedule_args = dict(args.schedule_arg)
    for flag, section, name, value, _ in SWITCHES:
        if getattr(args, flag[2:].replace("-", "_")):
            setattr(getattr(config, section), name, value)
    if args.masked_logits is not None:
        config.model.masked_logits = args.masked_logits
    if args.init_from:
        config.model.init_from = str(args.init_from)
    return config


def run(args) -> int:
    from maskdiff.train import train

    config = config_from_args(args)
    run_dir = args.run_dir or Path("runs") / config.preset
    if args.init_from and (not args.run_dir or run_dir.resolve() == args.init_from.resolve()):
        raise MaskdiffError("--init-from RUN starts a new run from RUN's weights; give --run-dir another folder")
    result = train(config, run_dir, progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 130 if result.interrupted else 0
    if result.resumed_from is not None and result.resumed_from >= config.train.steps:
        print(f"{run_dir} is already trained to step {result.step}; nothing to do (raise --steps to continue)")
    else:
        how = (f"resumed from step {result.resumed_from}" if result.resumed_from is not None
               else f"from the weights of {config.model.init_from}" if config.model.init_from else "from scratch")
        print(f"trained {run_dir} to step {result.step} ({how}, {result.seconds:.0f} s)")
    return 130 if result.interrupted else 0
