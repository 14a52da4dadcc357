"""Running one of the papers' comparisons (``maskdiff.experiments.papers``): every variant trained for every
seed, evaluated as bits per character, summarised with a 95% interval over seeds, every trend judged on
the paired per-seed difference (``maskdiff.experiments.base``).

Runs are kept under ``OUT/runs/<variant>-s<seed>``: an interrupted experiment resumes where it stopped
(finished runs and finished evaluations are reused).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional

from maskdiff.experiments.base import (ci_text, paired_verdict, results_folder, table, train_run, t_interval, write_json,
                                      write_results)
from maskdiff.experiments.papers import BPC_MARGIN, NOT_RESOLVED, Scale, Trend, Variant, base_config, get_experiment, get_scale
from maskdiff.experiments.provenance import provenance, short_commit


def _eval_key(steps: Optional[int]) -> str:
    return "own" if steps is None else f"T{steps}"


def run_variant(variant: Variant, scale: Scale, seed: int, out: Path, *, log=print, device: str = "auto") -> dict:
    """Train (or reuse) one variant for one seed and evaluate it; returns a record (cached as JSON)."""
    import maskdiff
    from maskdiff.objectives import build_objective
    from maskdiff.modalities import build_tokenizer, eval_chunks

    run_dir = out / "runs" / f"{variant.name}-s{seed}"
    record_path = run_dir / "result.json"
    if record_path.exists():
        return json.loads(record_path.read_text(encoding="utf-8"))
    cfg = base_config(scale, seed)
    variant.edit(cfg)
    cfg.train.steps *= variant.budget
    train_s = train_run(cfg, run_dir, device)
    pipe = maskdiff.load(run_dir, device=device)
    tokens, valid = eval_chunks(cfg, pipe.tokenizer, "validation")
    tokens, valid = tokens[: scale.eval_sequences], valid[: scale.eval_sequences]
    evals = {}
    for steps in variant.eval_steps:
        if steps is not None and not pipe.objective.discrete_time_eval:
            continue
        passes = 1 if pipe.objective.exact_likelihood else scale.eval_passes
        # each seed's model gets its own evaluation draws, so the interval over seeds also covers the
        # Monte-Carlo noise of the NELBO (shared draws would let one unlucky draw shift every model alike)
        res = pipe.evaluate(tokens, valid, discrete_steps=steps, passes=passes, seed=1234 + seed)
        bpc, lo, hi = res.bits_per_token()
        evals[_eval_key(steps)] = {"bpc": bpc, "ci95": [lo, hi], "estimate": pipe.describe_estimate(steps)}
    tokenizer = build_tokenizer(cfg)
    objective = build_objective(cfg, tokenizer.vocab_size)
    tokens_seen = cfg.train.steps * cfg.train.batch_size * cfg.data.length
    # GenMD4 runs the network on k draws of x_t per sequence; block diffusion reads [x_t, x_0], twice the tokens
    forward_passes = objective.noise_draws * objective.streams
    flops = objective.network.flops_per_token(cfg.data.length) * tokens_seen * forward_passes
    record = {
        "variant": variant.name,
        "seed": seed,
        "config": cfg.to_dict(),
        "tokens": tokens_seen,
        "train_flops": flops,
        "train_seconds": train_s,
        "eval_tokens": int(valid.sum()),
        "eval_seed": 1234 + seed,
        "eval_passes": scale.eval_passes,
        "evals": evals,
    }
    if pipe.objective.learns_schedule:
        w = pipe.objective.exponents.exponents.detach()
        record["genmd4_exponents"] = {pipe.tokenizer.decode([i]) or repr(i): float(w[i]) for i in range(w.numel())}
    write_json(record_path, record)
    log(f"  {variant.name} seed {seed}: " + ", ".join(f"{k} {v['bpc']:.4f}" for k, v in evals.items()) + f" ({train_s:.0f} s)")
    return record


def _values(records: List[dict], key: str) -> Dict[int, float]:
    """Per-seed BPC of the evaluation ``key`` ("variant" or "variant@T")."""
    name, _, ev = key.partition("@")
    ev_key = "own" if ev in ("", "None") else f"T{ev}"
    return {r["seed"]: r["evals"][ev_key]["bpc"] for r in records if r["variant"] == name and ev_key in r["evals"]}


def verdict(trend: Trend, records: List[dict]) -> dict:
    """The trend judged on the records' paired per-seed BPC differences (better - worse)."""
    margin = BPC_MARGIN if trend.equal else None
    p = paired_verdict(_values(records, trend.better), _values(records, trend.worse), NOT_RESOLVED, margin)
    if p.seeds < 2:
        return {"better": trend.better, "worse": trend.worse, "claim": trend.claim, "verdict": p.verdict, "seeds": p.seeds}
    return {"better": trend.better, "worse": trend.worse, "claim": trend.claim, "difference_bpc": p.mean,
            "ci95": [p.low, p.high], "verdict": p.verdict, "seeds": p.seeds, "equivalence_margin": margin}


def run_experiment(name: str, scale_name: str = "cpu", out=None, *, seeds: Optional[int] = None, log=print,
                   device: str = "auto") -> dict:
    """Run every variant of an experiment for every seed; write results.json and results.md into ``out``."""
    exp, scale = get_experiment(name), get_scale(scale_name)
    scale = dataclasses.replace(scale, **exp.scale_edits.get(scale_name, {}))
    out, n_seeds = results_folder(out, f"{name}-{scale_name}", seeds, scale.seeds)
    log(f"experiment {name} at scale {scale_name}: {len(exp.variants)} variants x {n_seeds} seeds -> {out}")
    records = [run_variant(v, scale, s, out, log=log, device=device) for v in exp.variants for s in range(n_seeds)]
    summary = {"experiment": name, "question": exp.question, "scale": scale_name, "scale_config": scale.__dict__,
               "seeds": n_seeds, **provenance(device), "variants": {}, "trends": []}
    for v in exp.variants:
        rows = [r for r in records if r["variant"] == v.name]
        evals = {}
        for key in rows[0]["evals"]:
            mean, lo, hi = t_interval([r["evals"][key]["bpc"] for r in rows])
            evals[key] = {"bpc": mean, "ci95": [lo, hi], "per_seed": [r["evals"][key]["bpc"] for r in rows],
                          "estimate": rows[0]["evals"][key]["estimate"]}
        summary["variants"][v.name] = {"evals": evals, "tokens": rows[0]["tokens"], "train_flops": rows[0]["train_flops"],
                                       "train_seconds_mean": sum(r["train_seconds"] for r in rows) / len(rows)}
        if "genmd4_exponents" in rows[0]:
            summary["variants"][v.name]["genmd4_exponents_seed0"] = rows[0]["genmd4_exponents"]
    summary["trends"] = [verdict(t, records) for t in exp.trends]
    write_results(out, summary, markdown, log)
    return summary


def markdown(summary: dict) -> str:
    """The summary's two tables: every evaluation of every variant, then every trend with its verdict."""
    lines = [f"### {summary['experiment']} (scale {summary['scale']}, {summary['seeds']} seeds, commit {short_commit(summary)})",
             "", summary["question"], ""]
    lines += table(["variant", "estimate", "BPC (mean over seeds)", "95% CI (seeds)", "tokens", "train FLOPs"],
                   [[name, e["estimate"], f"{e['bpc']:.4f}", ci_text(e["ci95"], ".4f"), f"{v['tokens']:,}",
                     f"{v['train_flops']:.3g}"] for name, v in summary["variants"].items() for e in v["evals"].values()])
    if summary["trends"]:
        rows = []
        for t in summary["trends"]:
            diff = f"{t['difference_bpc']:+.4f}" if "difference_bpc" in t else "-"
            ci = ci_text(t["ci95"], ".4f") if "ci95" in t else "-"
            rel = "~" if t.get("equivalence_margin") else "<"
            rows.append([f"{t['better']} {rel} {t['worse']}: {t['claim']}", diff, ci, t["verdict"]])
        lines += [""] + table(["trend (paper)", "paired difference, BPC", "95% CI", "verdict"], rows)
    return "\n".join(lines) + "\n"
