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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import Tensor

from maskdiff.data.packing import pad_id_for
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


def mdlm_rows(pipe, path, corpus: str) -> Tuple[Tensor, Optional[Tensor]]:
    """A local file of one of MDLM's zero-shot corpora as MDLM's evaluation reads it: its documents
    detokenized (``maskdiff.data.detokenize``), tokenized by the run's tokenizer and packed the reference's
    way for the run's packing (``maskdiff.data.zeroshot_files``). Returns (tokens (N, L), valid or None)."""
    from maskdiff.data.detokenize import get_detokenizer
    from maskdiff.data.sources import encode_documents
    from maskdiff.data.zeroshot_files import mdlm_pad, mdlm_wrap, read_documents, zero_shot_corpus

    detokenize = get_detokenizer(corpus)
    tokenizer = pipe.tokenizer
    bos, eos = getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)
    if bos is None or eos is None:
        raise MaskdiffError(f"MDLM's protocol frames rows with BOS and EOS; this run's tokenizer ({tokenizer_label(pipe)}) has none: use a subword run")
    texts = [detokenize(t) for t in read_documents(path, zero_shot_corpus(corpus))]
    docs = [d.tolist() for d in encode_documents(tokenizer, texts)]
    L = pipe.config.data.length
    if pipe.config.data.packing == "pad":
        return mdlm_pad(docs, L, bos, eos, pad_id_for(tokenizer))
    return mdlm_wrap(docs, L, bos, eos), None


def evaluate_file(pipe, path, corpus: str, *, limit: Optional[int], passes: int, batch_size: int, seed: int, progress: bool = False):
    """MDLM's zero-shot figure of one run on a local file of ``corpus``: EvalResult. A 'pad' run's
    -log p(length) is left out, as MDLM's figure leaves it out (it bounds -log p(x | length) then)."""
    tokens, valid = mdlm_rows(pipe, path, corpus)
    if limit:
        tokens, valid = tokens[:limit], (valid[:limit] if valid is not None else None)
    result = pipe.evaluate(tokens, valid, passes=passes, batch_size=batch_size, seed=seed, progress=progress)
    if result.length is not None:
        result.nelbo, result.length = result.nelbo - result.length, None
    return result


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
    files: Optional[Dict[str, str]] = None,
) -> List[Column]:
    """Evaluate every run on every corpus. A corpus that is absent, or that a run's tokenizer cannot
    encode, gets an empty cell and a logged note saying why (and how to install the corpus). ``files``:
    row name -> local file of one of MDLM's zero-shot corpora (the row name, before any ``:``, names
    it, e.g. ``ptb`` or ``wikitext:103``), evaluated with MDLM's protocol (:func:`evaluate_file`)."""
    import time

    import maskdiff

    load = load or maskdiff.load
    columns = []
    for run_dir in run_dirs:
        pipe = load(run_dir)
        col = Column(str(run_dir), f"{Path(run_dir).name} ({tokenizer_label(pipe)})")
        for corpus in list(corpora) + list(files or {}):
            t0 = time.perf_counter()
            try:
                if corpus in (files or {}):
                    res = evaluate_file(pipe, files[corpus], corpus.split(":")[0], limit=limit, passes=passes,
                                        batch_size=batch_size, seed=seed, progress=progress)
                else:
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
