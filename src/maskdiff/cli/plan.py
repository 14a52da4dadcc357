"""``maskdiff plan PRESET --gpus N``: what a run costs (tokens, FLOPs, memory per GPU, wall-clock) before it starts."""
from __future__ import annotations

import json

from maskdiff.cli.args import nonneg_int, number, positive_float, positive_int

# (flag, config section, field, argparse type): the settings that change a run's cost
PLAN_OVERRIDES = [
    ("--batch-size", "train", "batch_size", positive_int),
    ("--micro-batch-size", "train", "micro_batch_size", nonneg_int),
    ("--steps", "train", "steps", positive_int),
    ("--length", "data", "length", positive_int),
    ("--parallel", "train", "parallel", str),
    ("--precision", "train", "precision", str),
    ("--width", "model", "width", positive_int),
    ("--depth", "model", "depth", positive_int),
    ("--heads", "model", "heads", positive_int),
    ("--tokenizer", "data", "tokenizer", str),
]


def register(sub) -> None:
    from maskdiff.config import describe_field
    from maskdiff.plan import GPU_SOURCE, GPUS
    from maskdiff.presets import PRESETS

    p = sub.add_parser("plan", help="what a run costs: tokens, FLOPs, memory per GPU, wall-clock",
                       description="Plan a run before launching it: tokens, training FLOPs (the network's flops_per_token(L), built on "
                                   "the meta device), memory per GPU (weights, gradients, AdamW state, EMA, activations at the "
                                   "micro-batch; DDP or FSDP2) and the wall-clock at a stated MFU. Nothing is trained or downloaded.")
    p.add_argument("preset", help=f"the recipe: {', '.join(PRESETS)}")
    p.add_argument("--gpus", type=positive_int, default=1, help="GPUs (processes) in all, over every node (default: 1)")
    p.add_argument("--gpu", default="h100", help=f"GPU kind, for its bf16 peak and memory: {', '.join(GPUS)} (default: h100). "
                                                 f"Peaks: {GPU_SOURCE}")
    p.add_argument("--peak-tflops", type=positive_float, help="a dense bf16 peak in TFLOP/s instead of the GPU's datasheet figure")
    p.add_argument("--mfu", type=number(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"), default=0.4,
                   help="model FLOPs utilisation assumed for the wall-clock (default: 0.4)")
    p.add_argument("--vocab-size", type=positive_int, help="the vocabulary, for a tokenizer other than text8, bytes, gpt2 or bert")
    for flag, section, name, typ in PLAN_OVERRIDES:
        p.add_argument(flag, type=typ, default=None, help=describe_field(section, name))
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")


def run(args) -> int:
    from maskdiff.plan import format_plan, make_plan
    from maskdiff.presets import get_preset

    config = get_preset(args.preset)
    for flag, section, name, _ in PLAN_OVERRIDES:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            setattr(getattr(config, section), name, value)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    plan = make_plan(config, args.gpus, gpu=args.gpu, mfu=args.mfu, vocab_size=args.vocab_size, peak_flops=peak)
    print(json.dumps(plan.to_dict(), indent=1) if args.json else format_plan(plan))
    return 0
