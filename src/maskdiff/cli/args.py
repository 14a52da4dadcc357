"""Argument helpers the commands share: number types that say what they expected, KEY=VALUE pairs, and
the flags that choose where a model runs and which of its weights are used."""
from __future__ import annotations

import argparse
from pathlib import Path


def number(cast, ok, expected: str):
    """An argparse type: ``cast`` the text and check ``ok``, else say what was expected."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
nonneg_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: 0 < v < float("inf"), "a positive finite number")
unit_float = number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def key_value(text: str):
    """An argparse type: ``KEY=NUMBER`` as the pair (KEY, float)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. w=2.0, got {text!r}")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value of {key} must be a number, got {value!r}") from None


def device_arg(p: argparse.ArgumentParser) -> None:
    """``--device``: auto, cpu or cuda."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs: auto (a GPU when PyTorch sees one, else the CPU), cpu or cuda (default: auto)")


def weights_args(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--checkpoint``, ``--raw-weights`` and ``--seed``: which weights of a run, where, and the seed."""
    device_arg(p)
    p.add_argument("--checkpoint", type=Path, help="a checkpoint directory (default: the run's newest valid one)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of their EMA")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def load_run(args):
    """The pipeline of ``args.run_dir`` with the weights chosen by :func:`weights_args`."""
    import maskdiff

    return maskdiff.load(args.run_dir, checkpoint=args.checkpoint, ema=not args.raw_weights, device=args.device)
