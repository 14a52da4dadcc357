"""Learning curves from training logs, drawn with PIL (:func:`maskdiff.visualize.save_line_chart`):
``maskdiff plot`` (several runs in one PNG: the training NELBO estimate and the validation NELBO with its
95% band) and the demo's curve. The records are those of ``log.jsonl`` (see maskdiff.monitor); reading
them from run folders is the caller's (maskdiff.runs.read_log).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from maskdiff.errors import MaskdiffError

X_AXES = ("step", "tokens", "elapsed")
"""What a curve is drawn against: the step, the tokens seen, or the training wall-clock (summed over resumes)."""
METRICS = ("both", "loss", "val")
"""The training NELBO estimate ('loss'), the validation NELBO with its interval ('val'), or both."""
SMOOTH_STEPS = 50
"""The training loss is averaged over windows of about this many steps (one record is one noisy batch)."""


def resumed_records(records: List[dict]) -> List[dict]:
    """The records of a run as its final history: where a resumed process logged a step again, the records
    the interrupted process wrote from that step on are dropped; each record gains ``train_s``, the training
    seconds up to it summed over the processes (``elapsed_s`` restarts at every resume)."""
    kept: List[dict] = []
    offset = last = 0.0
    for record in records:
        elapsed = record.get("elapsed_s", 0.0)
        if kept and (record["step"] <= kept[-1]["step"] or elapsed < last):  # another process, from a checkpoint
            while kept and kept[-1]["step"] >= record["step"]:
                kept.pop()
            offset = kept[-1]["train_s"] if kept else 0.0
        last = elapsed
        kept.append(dict(record, train_s=offset + elapsed))
    return kept


def _smoothed(points: List[Tuple[float, float]], steps: List[int], window_steps: int) -> List[Tuple[float, float]]:
    """Each point's y averaged with those of the records in the ``window_steps`` steps before it."""
    interval = max(1, steps[1] - steps[0]) if len(steps) > 1 else 1
    window = max(1, window_steps // interval)
    return [(x, sum(y for _, y in points[max(0, i - window + 1): i + 1]) / len(points[max(0, i - window + 1): i + 1]))
            for i, (x, _) in enumerate(points)]


def _x_axis(x: str, runs: Dict[str, Tuple[List[dict], int]]) -> Tuple[Dict[str, List[float]], str]:
    """Each run's x values, scaled, and the axis label."""
    if x not in X_AXES:
        raise MaskdiffError(f"unknown x axis {x!r}; choose one of: {', '.join(X_AXES)}")
    raw = {}
    for name, (records, tokens_per_step) in runs.items():
        raw[name] = [float(r["step"]) if x == "step" else float(r["step"] * tokens_per_step) if x == "tokens" else r["train_s"]
                     for r in records]
    top = max((v for values in raw.values() for v in values), default=0.0)
    if x == "step":
        return raw, "step"
    unit, scale = ((("millions", 1e6) if top >= 1e7 else ("thousands", 1e3) if top >= 1e4 else ("", 1.0)) if x == "tokens"
                   else (("hours", 3600.0) if top >= 7200 else ("minutes", 60.0) if top >= 600 else ("seconds", 1.0)))
    label = "tokens seen" + (f" ({unit})" if unit else "") if x == "tokens" else f"training time ({unit})"
    return {name: [v / scale for v in values] for name, values in raw.items()}, label


def learning_curves(runs: Dict[str, Tuple[List[dict], int]], path, *, x: str = "step", metric: str = "both",
                    smooth_steps: int = SMOOTH_STEPS, title: str = "") -> Path:
    """One PNG of the learning curves of several runs. ``runs`` maps a legend name to (the records of its
    log.jsonl, tokens per step); ``x``: one of X_AXES; ``metric``: one of METRICS. Each run has a line of
    its training NELBO estimate (bits per token, averaged over ``smooth_steps`` steps) and / or a line of
    its validation NELBO with the 95% interval as a band."""
    from maskdiff.visualize import save_line_chart

    if metric not in METRICS:
        raise MaskdiffError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    runs = {name: (resumed_records(records), tps) for name, (records, tps) in runs.items()}
    for name, (records, _) in runs.items():
        if not records:
            raise MaskdiffError(f"{name} has logged nothing yet; train it first")
        if metric == "val" and not any("val_nelbo_bits_per_token" in r for r in records):
            raise MaskdiffError(f"{name} has no validation records; train it with --eval-every N, or plot --metric loss")
    xs, xlabel = _x_axis(x, runs)
    series: Dict[str, List[Tuple[float, float]]] = {}
    bands: Dict[str, List[Tuple[float, float, float]]] = {}
    for name, (records, _) in runs.items():
        if metric in ("both", "loss"):
            points = [(xv, r["loss_bits_per_token"]) for xv, r in zip(xs[name], records)]
            series[f"{name} training"] = _smoothed(points, [r["step"] for r in records], smooth_steps)
        val = [(xv, r) for xv, r in zip(xs[name], records) if "val_nelbo_bits_per_token" in r]
        if metric in ("both", "val") and val:
            label = f"{name} validation ({val[-1][1].get('val_weights', 'model')} weights)"
            series[label] = [(xv, r["val_nelbo_bits_per_token"]) for xv, r in val]
            bands[label] = [(xv, r["val_low"], r["val_high"]) for xv, r in val]
    ylabel = "bits per token (NELBO; validation with its 95% interval)" if bands else "bits per token (training NELBO estimate)"
    return save_line_chart(series, path, title=title, xlabel=xlabel, ylabel=ylabel, bands=bands)


def draw_learning_curve(records: List[dict], path: Path, final_bpc: float, final_step: int, unigram_bpc: float) -> Path:
    """The demo's PNG: the training NELBO estimate of the log ``records`` (bits per character, averaged over
    windows of 50 steps) against the step, the validation bound of the final EMA weights and the unigram line."""
    from maskdiff.visualize import save_line_chart

    smooth = _smoothed([(r["step"], r["loss_bits_per_token"]) for r in records], [r["step"] for r in records], SMOOTH_STEPS)
    return save_line_chart(
        {"training NELBO (bits/char, 50-step mean)": smooth, "validation bound, EMA weights": [(final_step, final_bpc)]},
        path,
        title="maskdiff demo: tiny preset on text8-style Shakespeare",
        xlabel="step", ylabel="bits per character",
        hlines={f"unigram entropy {unigram_bpc:.2f}": unigram_bpc},
    )
