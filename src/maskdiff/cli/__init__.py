"""The ``maskdiff`` command (``main``): main.py builds the parser from one module per command (train, eval,
sample, experiment, exponents, text: data and zero-shot, pretrained: export and convert, serve, demo),
each with ``register(subparsers)`` and ``run(args)``; args.py holds the shared flags and number types,
media.py the DNA and image extras of eval and sample."""
from maskdiff.cli.main import main

__all__ = ["main"]
