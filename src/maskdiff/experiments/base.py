"""What every experiment shares: the model size a scale names, the run config built from it, training a
run (or reusing it), the paired interval over seeds and its verdict, and the results folder (JSON and
Markdown, with provenance).

A claim "a beats b" is judged on the paired per-seed difference a - b (same seed: same initialisation,
data order, t and masks, or the same sampling draws), whose 95% Student-t interval over seeds decides:

* reproduced: the interval lies entirely below 0 (a lower, as the claim says);
* contradicted: it lies entirely above 0;
* not resolved: otherwise.

A claim of *no* difference is judged against an equivalence margin m: reproduced if the interval lies
inside (-m, m), contradicted if it lies entirely outside it, otherwise not resolved.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.presets import tiny

REPRODUCED, CONTRADICTED, NOT_RUN = "reproduced", "contradicted", "not run"


@dataclass
class ModelScale:
    """The size of the network and of its training that a named scale gives every model of an experiment."""

    width: int
    """Transformer width."""
    depth: int
    """Transformer blocks."""
    heads: int
    """Attention heads."""
    length: int
    """Sequence length L."""
    batch_size: int
    """Sequences per training step."""
    steps: int
    """Training steps (before any experiment-specific multiple)."""


def get_named(table: Dict[str, object], name: str, what: str):
    """``table[name]``, or a MaskdiffError naming ``what`` and the valid names."""
    if name not in table:
        raise MaskdiffError(f"unknown {what} {name!r}; choose one of: {', '.join(table)}")
    return table[name]


def model_config(scale: ModelScale, lr: float, steps: int, seed: int) -> RunConfig:
    """The tiny preset resized to ``scale``, trained ``steps`` steps at learning rate ``lr`` from ``seed``:
    MDLM's network (no local mixing), a tenth of the steps of warm-up, four checkpoints, twenty log lines."""
    cfg = tiny()
    cfg.preset = "experiment"
    cfg.model.width, cfg.model.depth, cfg.model.heads = scale.width, scale.depth, scale.heads
    cfg.model.cond_dim = min(128, scale.width)
    cfg.data.length = scale.length
    # the papers' network: attention is a masked position's only route to context (threshold decoding's
    # caches need it too)
    cfg.model.local_mixing = 0
    t = cfg.train
    t.steps, t.batch_size, t.lr, t.seed = steps, scale.batch_size, lr, seed
    t.warmup_steps = max(1, steps // 10)
    t.checkpoint_every = max(1, steps // 4)
    t.keep_checkpoints = 1
    t.log_every = max(1, steps // 20)
    return cfg


def train_run(cfg: RunConfig, run_dir: Path, device: str) -> float:
    """Train ``cfg`` into ``run_dir`` on ``device`` (a finished run is reused, an interrupted one resumed; the
    trainer checks the config once); returns the seconds it took. Ctrl-C during training raises KeyboardInterrupt."""
    from maskdiff.train import train

    cfg.train.device = device
    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=False, log=lambda *a: None)
    if result.interrupted:
        raise KeyboardInterrupt
    return time.perf_counter() - t0


def t_interval(values: List[float], level: float = 0.95) -> Tuple[float, float, float]:
    """(mean, low, high): Student-t interval over the values (seeds); NaN bounds for one value."""
    from scipy.stats import t as student_t

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass
class Paired:
    """A claim "a beats b" judged on the per-seed differences a - b."""

    mean: float
    """Mean difference over the seeds both sides ran (negative: a is lower)."""
    low: float
    """Lower end of the 95% Student-t interval."""
    high: float
    """Upper end of the 95% Student-t interval."""
    verdict: str
    """reproduced, contradicted, the experiment's not-resolved label, or ``not run`` (fewer than 2 seeds)."""
    seeds: int
    """Seeds both sides ran."""


def paired_verdict(a: Dict[int, float], b: Dict[int, float], unresolved: str,
                   margin: Optional[float] = None) -> Paired:
    """Judge "a beats b" (or, with ``margin``, "a equals b within +-margin") from per-seed values of both;
    ``unresolved`` is the label of an interval that decides neither way."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if len(diffs) < 2:
        return Paired(float("nan"), float("nan"), float("nan"), NOT_RUN, len(diffs))
    mean, lo, hi = t_interval(diffs)
    if margin is not None:
        inside, outside = -margin < lo and hi < margin, lo >= margin or hi <= -margin
    else:
        inside, outside = hi < 0, lo > 0
    word = REPRODUCED if inside else CONTRADICTED if outside else unresolved
    return Paired(mean, lo, hi, word, len(diffs))


def results_folder(out, default: str, seeds: Optional[int], scale_seeds: int) -> Tuple[Path, int]:
    """The output folder (``out`` or ``experiments/<default>``, created) and the number of seeds to run."""
    n_seeds = seeds or scale_seeds
    if n_seeds < 1:
        raise MaskdiffError(f"seeds must be at least 1, got {n_seeds}")
    folder = Path(out or Path("experiments") / default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder, n_seeds


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON, written atomically (a record or a summary)."""
    from maskdiff.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1))


def write_results(out: Path, summary: dict, markdown: Callable[[dict], str], log=print) -> None:
    """``summary`` as ``results.json`` and its table as ``results.md``; the table is also logged."""
    from maskdiff.checkpoint import atomic_write_text

    write_json(out / "results.json", summary)
    text = markdown(summary)
    atomic_write_text(out / "results.md", text)
    log(text)


def ci_text(ci: Sequence[float], fmt: str) -> str:
    """An interval as ``low to high`` in format ``fmt``, ``n/a`` where it is undefined (one seed)."""
    lo, hi = ci
    return "n/a" if any(math.isnan(x) for x in (lo, hi)) else f"{lo:{fmt}} to {hi:{fmt}}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def judges(ar_run: Optional[Path], smollm2: bool, device: str) -> dict:
    """The evaluators of generated text: the AR run at ``ar_run`` (key ``ar``; None: none) and, if asked,
    SmolLM2-135M (``smollm2``)."""
    from maskdiff.evaluation.judge import EvaluatorLM, RunEvaluatorLM

    if ar_run is None and not smollm2:
        raise MaskdiffError("no judge of generated text: give an autoregressive run or use SmolLM2")
    evaluators = {"ar": RunEvaluatorLM.from_run(ar_run, device=device)} if ar_run is not None else {}
    if smollm2:
        evaluators["smollm2"] = EvaluatorLM.smollm2()
    return evaluators


def measure_texts(texts: List[str], evaluators: dict) -> dict:
    """Unigram entropy, repeated 4-grams and, per evaluator, the mean NLL (nats per evaluator token)."""
    from maskdiff.evaluation.metrics import repeated_ngram_rate, unigram_entropy

    out = {"unigram_entropy": unigram_entropy(texts), "repeated_4gram_rate": repeated_ngram_rate(texts, 4)}
    for key, ev in evaluators.items():
        sums, counts = ev.nll(texts)
        out[f"nll_{key}"] = sum(sums) / sum(counts)
    return out
