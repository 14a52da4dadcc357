"""``maskdiff experiment``: one of the papers' comparisons (or the samplers' one) over seeds, with verdicts."""
from __future__ import annotations

import argparse
from pathlib import Path

from maskdiff.cli.args import device_arg, positive_int

SAMPLERS_LINE = ("\n  samplers           Samplers at equal network calls per sample: MDLM ancestral / cached, first-hitting, ReMDM "
                 "(cap, rescale, conf, loop), threshold decoding (Fast-dLLM) and block diffusion (BD3-LM, L' = 4 and 16, its own "
                 "models); gen-PPL under the project's AR model and "
                 "SmolLM2, entropy, repeats (scales: test, cpu)")
SUDOKU_LINE = ("\n  sudoku             Sudoku solve rates: masked diffusion decoded at random, top probability or largest margin "
               "first vs the autoregressive baseline at equal training (scales: test, cpu (9x9), cpu-6x6)")

DISTILL_LINE = ("\n  distill            Few-step sampling: the teacher at T = 16 ... 1024 and its SDTT students (maskdiff distill), "
                "each also by the dilated sampler at T = 8 ... 32, "
                "gen-PPL under the project's AR model and SmolLM2, entropy, repeats, against calls per sample; the target: <= 32 "
                "calls within 10% of the teacher's 1024 steps (scales: test, cpu)")


def register(sub) -> None:
    from maskdiff.experiments import EXPERIMENTS, SCALES

    lines = "\n".join(f"  {name:18s} {e.question}" for name, e in EXPERIMENTS.items()) + SAMPLERS_LINE + SUDOKU_LINE + DISTILL_LINE
    p = sub.add_parser("experiment", help="re-run one of the papers' comparisons over seeds, with 95%% intervals",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train every variant of a comparison with the same budget for several seeds, evaluate them on the "
                                   "same validation sequences, and write a Markdown + JSON table with 95% intervals over seeds and "
                                   "a verdict per paper trend. An interrupted experiment resumes.\n\nexperiments:\n" + lines)
    p.add_argument("name", help=f"one of: {', '.join(EXPERIMENTS)}, samplers, sudoku, distill")
    p.add_argument("--scale", default="cpu", help=f"budget: {', '.join(SCALES)} (default: cpu, minutes per variant on 2 cores; gpu is bigger)")
    p.add_argument("--seeds", type=positive_int, help="seeds per variant (default: 3)")
    p.add_argument("--out", type=Path, help="output folder (default: experiments/NAME-SCALE)")
    device_arg(p)


def run(args) -> int:
    from maskdiff import experiments

    experiments.run(args.name, args.scale, args.out, seeds=args.seeds, device=args.device)  # checks name and scale first
    return 0
