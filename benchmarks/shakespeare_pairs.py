"""Prompt/response pairs from the Shakespeare corpus the demo trains on: the prompt a line of verse (with its
line break), the response the next line of the same speech. Speaker names and stage directions are left
out. The train and validation pairs come from the corpus's own split by whole works, so no work is in both.

    python benchmarks/shakespeare_pairs.py --out /tmp/pairs      # writes train.jsonl and validation.jsonl

Used by the fine-tuning example of docs/conditional.md and by benchmarks/sft_throughput.py.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Tuple


def line_pairs(texts: List[str], max_chars: int = 100) -> List[Tuple[str, str]]:
    """(line + newline, next line) within each speech (a block between blank lines, its speaker line dropped),
    both of two words or more and together at most ``max_chars`` characters."""
    pairs = []
    for text in texts:
        for block in text.replace("\r\n", "\n").split("\n\n"):
            lines = [l.strip() for l in block.split("\n") if l.strip()]
            if lines and len(lines[0].split()) <= 3 and lines[0].endswith("."):
                lines = lines[1:]  # the speaker's name ("King.", "First Lord.")
            lines = [l for l in lines if _verse(l)]
            for a, b in zip(lines, lines[1:]):
                if len(a) + len(b) + 1 <= max_chars:
                    pairs.append((a + "\n", b))
    return pairs


def _verse(line: str) -> bool:
    """A line of a speech: two words or more, not a stage direction, not a list of names in capitals."""
    words = line.split()
    return len(words) >= 2 and not line.startswith("[") and '"' not in line and not (words[0].isupper() and len(words[0]) > 1)


def write_pairs(out: Path, max_train: int = 20000, max_validation: int = 400, max_chars: int = 100) -> dict:
    """train.jsonl and validation.jsonl under ``out`` (evenly spaced pairs when there are more); their counts."""
    from maskdiff.data.corpora import load_split_texts

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, most in (("train", max_train), ("validation", max_validation)):
        pairs = line_pairs(load_split_texts("shakespeare", split), max_chars)
        step = max(1, len(pairs) // most)
        chosen = pairs[::step][:most]
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for prompt, response in chosen:
                f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
        counts[split] = len(chosen)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for train.jsonl and validation.jsonl")
    p.add_argument("--max-train", type=int, default=20000)
    p.add_argument("--max-validation", type=int, default=400)
    p.add_argument("--max-chars", type=int, default=100, help="the longest prompt + response, in characters")
    a = p.parse_args()
    print(write_pairs(a.out, a.max_train, a.max_validation, a.max_chars))


if __name__ == "__main__":
    main()
