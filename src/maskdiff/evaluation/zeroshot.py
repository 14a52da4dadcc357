"""Zero-shot evaluation: the perplexity bounds of trained runs on corpora they were not trained on.

A table has one row per corpus and one column per run directory, each cell the PPL bound (per token of
the run's own tokenizer) with its 95% interval. Runs with different tokenizers are not comparable per
token; the table says which tokenizer each column uses. Any run directory that :func:`maskdiff.load`
opens can be a column; an autoregressive baseline joins the same way (its exact NLL is a bound too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from maskdiff.errors import MaskdiffError

DEFAULT_CORPORA = ("shakespeare", "linux-doc", "python-doc", "brown", "wiki")


@dataclass
class Column:
    run_dir: str
    label: str
    cells: Dict[str, dict] = field(default_factory=dict)  # corpus -> EvalResult.to_dict() (+ seconds)


def tokenizer_label(pipe) -> str:
    cfg = pipe.tokenizer.config()
    if cfg.get("kind") == "hf":
        return str(cfg.get("name"))
    if cfg.get("kind") == "char":
        return "text8" if cfg.get("normalize") == "text8" else f"chars({len(cfg.get('alphabet', ''))})"
    return str(cfg.get("kind"))


def evaluate_on(pipe, corpus: str, split: str, *, limit: Optional[int], passes: int, batch_size: int, seed: int, progress: bool = False):
    """The NELBO (an exact NLL for an autoregressive run) of the first ``limit`` rows of a corpus split
    under one loaded run: EvalResult."""
    from maskdiff.modalities import eval_chunks

    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, split, corpus)
    if limit:
        tokens, valid = tokens[:limit], valid[:limit]
    return pipe.evaluate(tokens, valid, passes=passes, batch_size=batch_size, seed=seed, progress=progress)


def zero_shot_table(
    run_dirs: Sequence,
    corpora: Sequence[str] = DEFAULT_CORPORA,
    *,
    split: str = "test",
    limit: Optional[int] = 64,
    passes: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    load: Optional[Callable] = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> List[Column]:
    """Evaluate every run on every corpus. A corpus that is absent, or that a run's tokenizer cannot
    encode, gets an empty cell and a logged note saying why (and how to install the corpus)."""
    import time

    import maskdiff

    load = load or maskdiff.load
    columns = []
    for run_dir in run_dirs:
        pipe = load(run_dir)
        col = Column(str(run_dir), f"{Path(run_dir).name} ({tokenizer_label(pipe)})")
        for corpus in corpora:
            t0 = time.perf_counter()
            try:
                res = evaluate_on(pipe, corpus, split, limit=limit, passes=passes, batch_size=batch_size, seed=seed, progress=progress)
            except MaskdiffError as err:
                log(f"note: {col.label} on {corpus}: {err}")
                continue
            col.cells[corpus] = dict(res.to_dict(), seconds=time.perf_counter() - t0)
        columns.append(col)
    return columns


def format_markdown(columns: List[Column], corpora: Sequence[str]) -> str:
    """Rows: corpora; columns: runs; cells: PPL <= estimate (95% CI low-high), tokens evaluated ("=" for
    an autoregressive run, whose likelihood is exact)."""
    lines = ["| corpus | " + " | ".join(c.label for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for corpus in corpora:
        cells = []
        for c in columns:
            cell = c.cells.get(corpus)
            if cell is None:
                cells.append("n/a")
            else:
                lo, hi = cell["perplexity_ci95"]
                rel = "<=" if cell.get("bound", True) else "="
                cells.append(f"{rel} {_fmt(cell['perplexity_bound'])} ({_fmt(lo)}-{_fmt(hi)}), {cell['tokens']:,} tok")
        lines.append(f"| {corpus} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "inf"
    return f"{x:.1f}" if x < 1e4 else f"{x:.3g}"
