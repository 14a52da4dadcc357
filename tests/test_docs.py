"""The math ships with the code: docs/math.md states what the code cites, and nothing in the repository
reads or names a file outside it."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MATH = REPO / "docs" / "math.md"
# Written in pieces so that this file does not match itself.
OUTSIDE = ("/wo" + "rk/", "../" + "shared", "MATH" + ".md", "STYLE" + ".md", "papers" + "/")


def _files():
    for folder, pattern in (("src", "*.py"), ("tests", "*.py"), ("benchmarks", "*.py"), ("docs", "*.md"), ("experiments", "*.py")):
        yield from sorted((REPO / folder).rglob(pattern))
    yield from (REPO / name for name in ("README.md", "Makefile", "pyproject.toml") if (REPO / name).exists())


def test_nothing_reads_or_names_a_path_outside_the_repository():
    bad = []
    for path in _files():
        text = path.read_text(encoding="utf-8")
        bad += [f"{path.relative_to(REPO)}: {needle!r}" for needle in OUTSIDE if needle in text]
    assert not bad, bad


def test_every_cited_section_and_equation_of_docs_math_exists():
    text = MATH.read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', text))
    # an equation is defined where it is displayed: an indented line that ends with its number
    equations = set(re.findall(r"^ {4}.*\(eq\. (\d+)\)\s*$", text, flags=re.M))
    assert {"forward", "schedules", "continuous-nelbo", "discrete-nelbo", "ablation", "genmd4", "sedd", "ar",
            "packing", "samplers", "metrics"} <= anchors
    assert equations == {str(i) for i in range(1, len(equations) + 1)}, sorted(equations, key=int)
    cited_anchors, cited_equations = set(), set()
    for path in _files():
        body = path.read_text(encoding="utf-8")
        cited_anchors |= {(path.name, a) for a in re.findall(r"docs/math\.md#([a-z0-9-]+)", body)}
        cited_anchors |= {(path.name, a) for a in re.findall(r"\(#([a-z0-9-]+)\)", body) if path == MATH}
        cited_equations |= {(path.name, e) for e in re.findall(r"docs/math\.md \(eq\. (\d+)\)", body)}
        if path == MATH:
            cited_equations |= {(path.name, e) for e in re.findall(r"eq\. (\d+)", body)}
    assert len(cited_anchors) >= 5 and cited_equations
    missing = [c for c in cited_anchors if c[1] not in anchors] + [c for c in cited_equations if c[1] not in equations]
    assert not missing, missing
