"""MDLM's zero-shot detokenizers, rule by rule, on hand-written (input, expected) pairs."""
import pytest

from maskdiff.data.detokenize import DETOKENIZERS, get_detokenizer
from maskdiff.errors import MaskdiffError

PTB = [
    ("the man 's hat", "the man's hat"),
    ("the boys ' toys", "the boys' toys"),
    ("it is n't so", "it isn't so"),
    ("a \n b", "a\nb"),
    ("and\\/or", "and/or"),
    ("in N N N years", "in 1 1 1 years"),  # repeated, so neighbours both change
    ("cost $ N million", "cost $1 million"),
    ("rank # N team", "rank #1 team"),
    ("the <unk> fox", "the ? fox"),
]

WIKITEXT = [
    ("the dogs ' bones", "the dogs' bones"),
    ("a /' 7/ b", "a /'[0-9]/ b"),  # the reference's literal pattern and result, kept
    ("state @-@ of @-@ the @-@ art", "state-of-the-art"),
    ("1 @,@ 000", "1,000"),
    ("3 @.@ 14", "3.14"),
    ("a : b ; c . d ! e ? f , g", "a: b; c. d! e? f, g"),
    ("a ( b c ) d", "a (b c) d"),
    ("x [ y ] { z } w", "x [y] {z} w"),
    ('he said " hi there " ok', 'he said "hi there" ok'),
    ("= = Heading = =", "== Heading =="),
    ("= = = Sub = = =", "=== Sub ==="),
    ("= = = = Deep = = = =", "==== Deep ===="),
    ("30 \N{DEGREE SIGN} C", "30\N{DEGREE SIGN}C"),
    (" = Title = \n", " = Title =\n"),
    ("one \n two", "one\ntwo"),
    ("there were N people", "there were 1 people"),
    ("N N N", "N 1 N"),  # once, without overlap
    ("the man 's hat", "the man's hat"),
]

LM1B = [
    ("see http : / / example.com", "see http://example.com"),
    ("see https : / / a.org", "see https://a.org"),
    ("I 'm here", "I'm here"),
    ("the dog . It ran", "the dog. It ran"),
    ("the U.S . is big", "the U.S . is big"),  # \w+ stops at the period inside U.S
    ("It ends .", "It ends."),
    ("Really ? Yes", "Really? Yes"),
    ("Really ?", "Really?"),
    ("Really ?\n", "Really?\n"),
    ("Stop ! Go", "Stop! Go"),
    ("Stop !", "Stop!"),
    ("one , two : three ; four", "one, two: three; four"),
    ("a / b", "a/b"),
    ('a " quoted text " b', 'a "quoted text" b'),
    ("call ( 555 ) now", "call (555) now"),
    ("a [ b ] c", "a [b] c"),
    ("costs $ 5", "costs $5"),
    ("costs \N{POUND SIGN} 5", "costs \N{POUND SIGN}5"),
]

LAMBADA = [
    ("\N{LEFT DOUBLE QUOTATION MARK}Hello\N{RIGHT DOUBLE QUOTATION MARK} she said  ", '\n"Hello" she said'),
    ("  spaced \n", "\nspaced"),
]

SCIENTIFIC = [
    # WikiText's rewrites first (" . " -> ". ", "( a )" -> "(a)"), then LM1B's (" 's", " ;" ...)
    ("we find @xmath0 , where ( a ) holds . \n the result [ 1 ] ; ok", "we find @xmath0, where (a) holds.\nthe result [1]; ok"),
    ("the model 's fit", "the model's fit"),
]


@pytest.mark.parametrize("name,pairs", [("ptb", PTB), ("wikitext", WIKITEXT), ("lm1b", LM1B), ("lambada", LAMBADA),
                                        ("arxiv", SCIENTIFIC), ("pubmed", SCIENTIFIC)])
def test_each_rule(name, pairs):
    detokenize = get_detokenizer(name)
    for text, expected in pairs:
        assert detokenize(text) == expected, text


def test_ag_news_and_none_leave_text_alone():
    text = "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers , here"
    assert get_detokenizer("ag-news")(text) == text and get_detokenizer("none")(text) == text


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(MaskdiffError, match="unknown detokenizer 'wiki'") as err:
        get_detokenizer("wiki")
    for name in DETOKENIZERS:
        assert name in str(err.value)
