"""The ``maskdiff`` command (``main``): main.py parses and dispatches; text.py (data, zero-shot),
media.py (DNA and image extras) and demo.py hold the other commands."""
from maskdiff.cli.main import main

__all__ = ["main"]
