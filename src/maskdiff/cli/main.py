"""The ``maskdiff`` command: the parser built from the command modules, and the dispatch.

Each command is a module of this package with two functions, ``register(subparsers)`` (its subcommand
or subcommands, with every flag's help) and ``run(args) -> int`` (the work; the exit status). A new
command is one module and one entry in ``COMMANDS``. Shared flags and number types: ``args.py``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import maskdiff.cli.demo as demo
import maskdiff.cli.distill as distill
import maskdiff.cli.eval as evaluate
import maskdiff.cli.experiment as experiment
import maskdiff.cli.plan as plan
import maskdiff.cli.exponents as exponents
import maskdiff.cli.plot as plot
import maskdiff.cli.pretrained as pretrained
import maskdiff.cli.sample as sample
import maskdiff.cli.serve as serve
import maskdiff.cli.text as text
import maskdiff.cli.train as train
from maskdiff.errors import MaskdiffError

DESCRIPTION = """\
maskdiff: masked diffusion models of discrete data (MD4 / MDLM).

  maskdiff train  --preset tiny --run-dir runs/tiny     train (or resume) a run
  maskdiff eval   runs/tiny                             validation BPC bound with a 95% interval
  maskdiff sample runs/tiny --num 4 --steps 256         draw samples from the EMA weights
  maskdiff demo                                          all three on the tiny preset
  maskdiff plot   runs/a runs/b --x tokens              learning curves (validation NELBO with --eval-every) as a PNG
  maskdiff data list                                     corpora and vocabularies, installed or not
  maskdiff zero-shot runs/a runs/b                       PPL bounds of runs on held-out corpora
  maskdiff experiment subs                               a paper comparison over 3 seeds, with verdicts
  maskdiff train --objective block --block-size 4        block diffusion (BD3-LM); sample it at any length
  maskdiff export runs/tiny out/tiny                     a model folder (safetensors, tokenizer, model card)
  maskdiff convert mdlm mdlm-owt/ out/mdlm-owt           MDLM's released checkpoint as a maskdiff model folder
  maskdiff train --preset minilm                         fine-tune a pretrained masked LM (all-MiniLM-L6-v2)
  maskdiff serve  runs/tiny                              a web page to watch and steer generation (JSON API too)
  maskdiff distill runs/tiny runs/tiny-16 --rounds 6     a student that samples with 1024 / 2^6 = 16 steps (SDTT)
  torchrun --nproc_per_node 8 -m maskdiff.cli train ...  the same trainer on several processes (DDP / FSDP2)
  maskdiff plan mdlm-owt --gpus 8 --gpu h100             tokens, FLOPs, memory per GPU and wall-clock of a recipe

  DNA:    maskdiff train --preset dna; maskdiff eval runs/dna --probe       (bits per base, genome probe)
  images: maskdiff train --preset digits; maskdiff eval runs/digits --fid 500; maskdiff sample runs/digits --num 40

A run directory holds config.json, tokenizer.json, checkpoints/, log.jsonl and samples/.
"""

# the command modules, in the order ``maskdiff --help`` lists their commands
COMMANDS = (train, evaluate, sample, experiment, exponents, text, pretrained, serve, demo, plan, plot, distill)


def build_parser() -> argparse.ArgumentParser:
    """The ``maskdiff`` parser: every command module registers its subcommands, each bound to its ``run``."""
    parser = argparse.ArgumentParser(prog="maskdiff", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        before = set(sub.choices)
        module.register(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (default: the process's), run the command and return its exit status: 2 with one
    line on stderr for a MaskdiffError, 130 after Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except MaskdiffError as err:
        print(f"maskdiff {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
