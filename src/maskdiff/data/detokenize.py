"""Detokenizers of MDLM's zero-shot evaluation (MDLM Sec. 4.1, Table 3): each corpus ships tokenized
text (spaces around punctuation, ``@-@`` for hyphens, ``N`` for numbers, ...); before a GPT-2 model reads
it, MDLM turns it back towards running text. One function per corpus, each a fixed sequence of rewrites,
applied in order, to every document; :data:`DETOKENIZERS` names them.

The rewrites reproduce what MDLM's evaluation does, including two of its quirks, kept so that figures
stay comparable: WikiText's rule for ``' 5`` only matches the literal text ``/' 5/`` (and writes
``/'[0-9]/``), and every ``" N "`` of WikiText becomes ``" 1 "`` once (overlapping ones are left).
AG News is read as is; arXiv and PubMed go through WikiText's rewrites, then LM1B's.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Tuple

from maskdiff.errors import MaskdiffError

Rewrite = Tuple[str, str]
"""(old, new): every occurrence of ``old`` replaced by ``new``, left to right, without overlap."""

_WIKITEXT_HYPHENS: List[Rewrite] = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")]
_WIKITEXT_PUNCTUATION: List[Rewrite] = [(f" {p} ", f"{p} ") for p in ":;.!?,"]
_WIKITEXT_HEADINGS: List[Rewrite] = [("= = = =", "===="), ("= = =", "==="), ("= =", "==")]
_WIKITEXT_LAST: List[Rewrite] = [(" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")]
# Spaces just inside a pair of delimiters are dropped: "( a b )" -> "(a b)" (shortest content, no nesting).
_PAIRS = [("(", ")"), ("[", "]"), ("{", "}"), ('"', '"'), ("'", "'")]
_WIKITEXT_SLASH_DIGIT = re.compile(r"/' [0-9]/")
_WIKITEXT_PAIRS = [re.compile(re.escape(a) + r"\s*([^" + re.escape(b) + r"]*?)\s*" + re.escape(b)) for a, b in _PAIRS]

_LM1B_URLS: List[Rewrite] = [("http : / / ", "http://"), ("https : / / ", "https://")]
_LM1B_CLITIC = re.compile(r" '(\w+)")  # " 's" -> "'s", " 're" -> "'re"
_LM1B_PERIOD = (re.compile(r" (\w+) \. "), re.compile(r" (\w+) \.$"))
_LM1B_MARKS: List[Rewrite] = [(" , ", ", "), (" : ", ": "), (" ; ", "; "), (" / ", "/")]
# One space inside each side of a quoted or bracketed span: '" a b "' -> '"a b"'.
_LM1B_PAIRS = [('"', '"'), ("'", "'"), ("(", ")"), ("[", "]")]
_LM1B_SPANS = [re.compile(re.escape(a) + " ([^" + re.escape(a + b if a != b else a) + "]+) " + re.escape(b)) for a, b in _LM1B_PAIRS]
_LM1B_END = {mark: re.compile(" " + re.escape(mark) + "$") for mark in "?!"}  # "$": the end, or before a final newline
_LM1B_CURRENCY: List[Rewrite] = [("$ ", "$"), ("\N{POUND SIGN} ", "\N{POUND SIGN}")]


def _apply(text: str, rewrites: List[Rewrite]) -> str:
    for old, new in rewrites:
        text = text.replace(old, new)
    return text


def _pair_sub(pattern: "re.Pattern", text: str, open_: str, close: str) -> str:
    return pattern.sub(lambda m: open_ + m.group(1) + close, text)


def wikitext(text: str) -> str:
    """WikiText-2 / -103: ``s '`` joined, ``@-@`` / ``@,@`` / ``@.@`` joined, no space before ``: ; . ! ? ,``,
    no space inside brackets and quotes, ``= = =`` headings closed up, spaces around newlines and the
    degree sign dropped, ``N`` read as ``1``, ``'s`` attached."""
    text = text.replace("s '", "s'")
    text = _WIKITEXT_SLASH_DIGIT.sub("/'[0-9]/", text)  # the quirk: a literal pattern, a literal result
    text = _apply(text, _WIKITEXT_HYPHENS + _WIKITEXT_PUNCTUATION)
    for pattern, (a, b) in zip(_WIKITEXT_PAIRS, _PAIRS):
        text = _pair_sub(pattern, text, a, b)
    return _apply(text, _WIKITEXT_HEADINGS + _WIKITEXT_LAST)


def ptb(text: str) -> str:
    """Penn Treebank: ``'s`` and ``n't`` attached, ``s '`` joined, ``\\/`` read as ``/``, ``N`` read as ``1``
    (repeatedly, so ``N N`` becomes ``1 1``), ``$ 1`` / ``# 1`` joined, ``<unk>`` shown as ``?``."""
    text = _apply(text, [(" 's", "'s"), ("s ' ", "s' "), (" n't", "n't"), (" \n ", "\n"), ("\\/", "/")])
    for _ in range(10):
        text = text.replace(" N ", " 1 ")
    return _apply(text, [("$ 1", "$1"), ("# 1", "#1"), ("<unk>", "?")])


def lm1b(text: str) -> str:
    """One Billion Words: URLs closed up, clitics (``'s``, ``'re``) attached, no space before a period
    after a word, ``? ! , : ;`` attached to the word before, ``/`` closed up, no space inside quotes and
    brackets, currency signs attached to the amount."""
    text = _apply(text, _LM1B_URLS)
    text = _LM1B_CLITIC.sub(lambda m: "'" + m.group(1), text)
    text = _LM1B_PERIOD[0].sub(lambda m: " " + m.group(1) + ". ", text)
    text = _LM1B_PERIOD[1].sub(lambda m: " " + m.group(1) + ".", text)
    for mark in "?!":
        text = text.replace(f" {mark} ", f"{mark} ")
        text = _LM1B_END[mark].sub(mark, text)
    text = _apply(text, _LM1B_MARKS)
    for pattern, (a, b) in zip(_LM1B_SPANS, _LM1B_PAIRS):
        text = _pair_sub(pattern, text, a, b)
    return _apply(text, _LM1B_CURRENCY)


def lambada(text: str) -> str:
    """LAMBADA: curly double quotes made straight, surrounding whitespace dropped, one newline in front."""
    text = text.replace("\N{LEFT DOUBLE QUOTATION MARK}", '"').replace("\N{RIGHT DOUBLE QUOTATION MARK}", '"')
    return "\n" + text.strip()


def scientific_papers(text: str) -> str:
    """arXiv and PubMed articles: WikiText's rewrites, then LM1B's."""
    return lm1b(wikitext(text))


def identity(text: str) -> str:
    """AG News (and any corpus read as it is): the text unchanged."""
    return text


DETOKENIZERS: Dict[str, Callable[[str], str]] = {
    "ptb": ptb,
    "wikitext": wikitext,
    "lm1b": lm1b,
    "lambada": lambada,
    "ag-news": identity,
    "pubmed": scientific_papers,
    "arxiv": scientific_papers,
    "none": identity,
}
"""Corpus name -> its detokenizer (MDLM's zero-shot corpora; ``none`` leaves text unchanged)."""


def get_detokenizer(name: str) -> Callable[[str], str]:
    """The detokenizer of a corpus by name; an unknown name is refused, listing the valid ones."""
    if name not in DETOKENIZERS:
        raise MaskdiffError(f"unknown detokenizer {name!r}; choose one of: {', '.join(DETOKENIZERS)}")
    return DETOKENIZERS[name]
