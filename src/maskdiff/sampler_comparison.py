"""Samplers compared at equal network calls per sample: ``maskdiff experiment samplers``.

One masked-diffusion model and one autoregressive evaluator (the project's own, same network and data)
are trained here, then every sampler draws samples of the training length L with several sampling
seeds: MDLM's ancestral chain and its cache, first-hitting, ReMDM's four strategies (Wang et al. 2025)
and Fast-dLLM's threshold decoding (Wu et al. 2025); block diffusion (BD3-LM, Arriola et al. 2025) gets its
own models, one per block size L', trained on the same data for the same steps. The grid samplers run T in
budgets x L steps, so ancestral and ReMDM make (up to) the same T calls and block diffusion T L'/L steps in
each of its L/L' blocks (T calls at most); the cache, first-hitting and threshold decoding make the calls
they need, and the table says how many. Quality is generative perplexity under the project's
AR model and under SmolLM2-135M (evaluation/judge.py), beside unigram entropy and repeated 4-grams
(low entropy and many repeats flag text that a judge LM likes for the wrong reason).

Each (sampler, seed) is a record: its gen-PPL is exp of the token-weighted mean NLL of that seed's
samples. Figures are means over seeds with a 95% Student-t interval over seeds (log gen-PPL, transformed
back), and a trend "a beats b" is judged on the paired per-seed difference of log gen-PPL (same seed,
same model): reproduced if its interval lies below 0, contradicted if above, otherwise not resolved.
Records are kept under OUT/records, the runs under OUT/runs: an interrupted experiment resumes.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from maskdiff.errors import MaskdiffError

REMDM = ("remdm-cap", "remdm-rescale", "remdm-conf", "remdm-loop")


@dataclass
class SamplerScale:
    """The size of the sampler comparison: the two models, the samples and the step budgets."""

    width: int
    depth: int
    heads: int
    length: int
    batch_size: int
    steps: int
    """Training steps of the masked-diffusion model."""
    ar_steps: int
    """Training steps of the autoregressive evaluator."""
    lr: float
    samples: int
    """Samples per sampler and seed."""
    seeds: int
    budgets: Tuple[float, ...]
    """Grid steps T as multiples of L (ReMDM's claim concerns T past L)."""
    thresholds: Tuple[float, ...]
    smollm2: bool
    """Also judge with SmolLM2-135M (about 30 s to load)."""
    eval_sequences: int
    """Validation sequences for the models' bounds (context for the table)."""
    block_sizes: Tuple[int, ...] = ()
    """Block diffusion models to train and sample (L' each; each must divide L)."""


SAMPLER_SCALES: Dict[str, SamplerScale] = {
    # seconds, for the test suite only: numbers mean nothing
    "test": SamplerScale(width=32, depth=1, heads=2, length=16, batch_size=4, steps=3, ar_steps=3, lr=1e-3, samples=2, seeds=2,
                         budgets=(1.0, 2.0), thresholds=(0.5,), smollm2=False, eval_sequences=4,
                         block_sizes=(4,)),
    # about 12 minutes on 2 idle CPU cores (block diffusion included)
    "cpu": SamplerScale(width=64, depth=2, heads=4, length=32, batch_size=32, steps=500, ar_steps=300, lr=3e-3, samples=16,
                        seeds=3, budgets=(0.5, 1.0, 2.0, 4.0), thresholds=(0.9, 0.7, 0.5), smollm2=True, eval_sequences=256,
                        block_sizes=(4, 16)),
}


@dataclass
class Row:
    """One sampler setting of the table. ``steps`` is the grid's T (per block for block diffusion)."""

    label: str
    sampler: str
    steps: Optional[int]
    kwargs: dict


def sampler_rows(scale: SamplerScale) -> List[Row]:
    L = scale.length
    rows = []
    for mult in scale.budgets:
        T = max(1, int(round(mult * L)))
        rows.append(Row(f"ancestral T={T}", "ancestral", T, {}))
        rows.append(Row(f"cached T={T}", "cached", T, {}))
        rows += [Row(f"{name} T={T}", name, T, {}) for name in REMDM]
        rows += [Row(f"block L'={b} T={T}", "block", max(1, T * b // L), {"block_size": b}) for b in scale.block_sizes]
    rows.append(Row("first-hitting", "first-hitting", None, {}))
    block = max(1, L // 4)
    for tau in scale.thresholds:
        rows.append(Row(f"threshold {tau} dual", "threshold", None, {"threshold": tau, "block_size": block, "cache": "dual"}))
    rows.append(Row(f"threshold {scale.thresholds[0]} no cache", "threshold", None,
                    {"threshold": scale.thresholds[0], "block_size": block, "cache": "none"}))
    return rows


def _config(scale: SamplerScale, objective: str, steps: int, block_size: int = 0):
    from maskdiff.presets import tiny

    cfg = tiny()
    cfg.preset = "experiment"
    cfg.model.width, cfg.model.depth, cfg.model.heads = scale.width, scale.depth, scale.heads
    cfg.model.cond_dim = min(128, scale.width)
    cfg.data.length = scale.length
    cfg.model.local_mixing = 0  # MDLM's network, as measured; threshold decoding's caches need it
    cfg.diffusion.objective = objective
    cfg.diffusion.block_size = block_size
    t = cfg.train
    t.steps, t.batch_size, t.lr, t.seed = steps, scale.batch_size, scale.lr, 0
    t.warmup_steps = max(1, steps // 10)
    t.checkpoint_every = max(1, steps // 4)
    t.keep_checkpoints = 1
    t.log_every = max(1, steps // 20)
    return cfg


def _train(cfg, run_dir: Path, device: str) -> float:
    from maskdiff.train import train
    from maskdiff.validation import validate_config

    cfg.train.device = device
    validate_config(cfg)
    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=False, log=lambda *a: None)
    if result.interrupted:
        raise KeyboardInterrupt
    return time.perf_counter() - t0


def _measure(texts: List[str], evaluators: dict) -> dict:
    from maskdiff.evaluation.metrics import repeated_ngram_rate, unigram_entropy

    out = {"unigram_entropy": unigram_entropy(texts), "repeated_4gram_rate": repeated_ngram_rate(texts, 4)}
    for key, ev in evaluators.items():
        sums, counts = ev.nll(texts)
        out[f"nll_{key}"] = sum(sums) / sum(counts)  # nats per evaluator token
    return out


def run_sampler_experiment(scale_name: str = "cpu", out=None, *, seeds: Optional[int] = None, log=print,
                           device: str = "auto") -> dict:
    """Train the two models (or reuse them), sample with every row for every seed, write results.json/.md."""
    import torch

    import maskdiff
    from maskdiff.checkpoint import atomic_write_text
    from maskdiff.evaluation.judge import EvaluatorLM, RunEvaluatorLM
    from maskdiff.experiments import _commit, _machine
    from maskdiff.pipeline import eval_chunks
    from maskdiff.sampling import get_sampler

    scale = get_sampler_scale(scale_name)
    n_seeds = seeds or scale.seeds
    if n_seeds < 1:
        raise MaskdiffError(f"seeds must be at least 1, got {n_seeds}")
    out = Path(out or Path("experiments") / f"samplers-{scale_name}")
    (out / "records").mkdir(parents=True, exist_ok=True)
    rows = sampler_rows(scale)
    log(f"experiment samplers at scale {scale_name}: {len(rows)} sampler settings x {n_seeds} seeds -> {out}")
    train_s = {"masked": _train(_config(scale, "masked", scale.steps), out / "runs" / "masked", device),
               "ar": _train(_config(scale, "ar", scale.ar_steps), out / "runs" / "ar", device)}
    for b in scale.block_sizes:  # block diffusion: its own model per L', same data and steps (twice the FLOPs)
        train_s[f"block-{b}"] = _train(_config(scale, "block", scale.steps, b), out / "runs" / f"block-{b}", device)
    pipe = maskdiff.load(out / "runs" / "masked", device=device)
    blocks = {b: maskdiff.load(out / "runs" / f"block-{b}", device=device) for b in scale.block_sizes}
    evaluators = {"ar": RunEvaluatorLM.from_run(out / "runs" / "ar", device=device)}
    if scale.smollm2:
        evaluators["smollm2"] = EvaluatorLM.smollm2()
    L = scale.length
    bpc = {}
    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, "validation")
    n = scale.eval_sequences
    bpc["masked"] = pipe.evaluate(tokens[:n], valid[:n], passes=4, seed=0).bits_per_token()
    bpc["ar"] = evaluators["ar"].pipeline.evaluate(tokens[:n], valid[:n], passes=1, seed=0).bits_per_token()
    for b, block_pipe in blocks.items():
        bpc[f"block-{b}"] = block_pipe.evaluate(tokens[:n], valid[:n], passes=4, seed=0).bits_per_token()
    records: List[dict] = []
    held = torch.randperm(tokens.shape[0] - 1, generator=torch.Generator().manual_seed(0))
    for seed in range(n_seeds):  # the held-out reference: real validation text of the same length
        pick = held[seed * scale.samples : (seed + 1) * scale.samples]
        texts = pipe.tokenizer.decode_batch(tokens[pick])
        records.append(dict(label="held-out text", sampler="-", steps=None, seed=seed, nfe=0.0, positions=0.0,
                            seconds=0.0, **_measure(texts, evaluators)))
    for row in rows:
        for seed in range(n_seeds):
            path = out / "records" / f"{row.label.replace(' ', '_').replace('=', '')}-s{seed}.json"
            if path.exists():
                records.append(json.loads(path.read_text(encoding="utf-8")))
                continue
            g = torch.Generator(device=pipe.device).manual_seed(1000 + seed)
            if row.sampler == "block":
                sample, positions = _block_draw(blocks[row.kwargs["block_size"]], scale.samples, L, row.steps, g)
            else:
                sample = get_sampler(row.sampler)(pipe.denoiser, pipe.schedule, (scale.samples, L), steps=row.steps or L,
                                                  generator=g, device=pipe.device, **row.kwargs)
                positions = sample.extra.get("positions", sample.nfe.to(torch.float64))
            texts = pipe.tokenizer.decode_batch(sample.tokens.cpu())
            rec = dict(label=row.label, sampler=row.sampler, steps=row.steps, seed=seed, nfe=float(sample.nfe.float().mean()),
                       positions=float(positions.float().mean()), seconds=sample.seconds / scale.samples,
                       remasked=float(sample.extra["remasked"].float().mean()) if "remasked" in sample.extra else None,
                       examples=texts[:2], **_measure(texts, evaluators))
            atomic_write_text(path, json.dumps(rec, indent=1))
            records.append(rec)
        log(f"  {row.label}: " + ", ".join(f"{k} {v:.3f}" for k, v in records[-1].items() if k.startswith("nll_")))
    summary = summarise(records, scale, evaluators)
    summary.update(experiment="samplers", scale=scale_name, scale_config=asdict(scale), seeds=n_seeds, machine=_machine(),
                   commit=_commit(), train_seconds=train_s, validation_bits_per_char={k: list(v) for k, v in bpc.items()})
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "results.md", markdown(summary))
    log(markdown(summary))
    return summary


def _block_draw(block_pipe, num: int, length: int, steps: int, generator):
    """Block diffusion's samples through the model's own sampler (key-value cache), and the positions the
    network computed per sample in units of L (each denoising call reads one block of L' tokens, each
    cache call one finished block), the figure the table's positions column holds for the other samplers."""
    import torch

    sample = block_pipe.objective.own_sample((num, length), steps=steps, generator=generator, device=block_pipe.device)
    calls = sample.nfe.to(torch.float64) + sample.extra["cache_calls"].to(torch.float64)
    return sample, calls * block_pipe.denoiser.block_size / length


def _interval(values: List[float]) -> Tuple[float, float, float]:
    from maskdiff.experiments import t_interval

    return t_interval(values)


def summarise(records: List[dict], scale: SamplerScale, evaluators) -> dict:
    keys = [f"nll_{k}" for k in evaluators]
    labels = list(dict.fromkeys(r["label"] for r in records))
    table = {}
    for label in labels:
        rs = sorted((r for r in records if r["label"] == label), key=lambda r: r["seed"])
        entry = {"sampler": rs[0]["sampler"], "steps": rs[0]["steps"], "seeds": len(rs),
                 "nfe": sum(r["nfe"] for r in rs) / len(rs), "positions": sum(r["positions"] for r in rs) / len(rs),
                 "seconds_per_sample": sum(r["seconds"] for r in rs) / len(rs),
                 "unigram_entropy": _interval([r["unigram_entropy"] for r in rs]),
                 "repeated_4gram_rate": _interval([r["repeated_4gram_rate"] for r in rs]),
                 "examples": rs[0].get("examples", [])}
        for key in keys:
            m, lo, hi = _interval([r[key] for r in rs])
            entry["gen_ppl_" + key[4:]] = [math.exp(m), math.exp(lo) if lo == lo else lo, math.exp(hi) if hi == hi else hi]
        table[label] = entry
    L = scale.length
    big, at_l = int(round(max(scale.budgets) * L)), L
    trends = []
    if 1.0 in scale.budgets and max(scale.budgets) > 1.0:
        for name in REMDM:
            trends.append(_trend(records, keys, f"{name} T={big}", f"{name} T={at_l}",
                                 f"ReMDM: quality improves as steps grow past L ({name}, T = {big} vs T = L = {at_l})"))
            trends.append(_trend(records, keys, f"{name} T={big}", f"ancestral T={big}",
                                 f"ReMDM: remasking beats MDLM at equal calls past L ({name} vs ancestral, T = {big})"))
        trends.append(_trend(records, keys, f"ancestral T={big}", f"ancestral T={at_l}",
                             f"context: MDLM's ancestral chain at T = {big} vs T = L"))
    for b in scale.block_sizes:
        for T in dict.fromkeys((at_l, big)):
            trends.append(_trend(records, keys, f"block L'={b} T={T}", f"ancestral T={T}",
                                 f"BD3-LM: block diffusion (L' = {b}) samples better than MDLM at equal calls (T = {T})"))
    return {"rows": table, "trends": trends, "evaluators": {k[4:]: evaluators[k[4:]].name for k in keys}}


def _trend(records, keys, better: str, worse: str, claim: str) -> dict:
    out = {"better": better, "worse": worse, "claim": claim}
    for key in keys:
        a = {r["seed"]: r[key] for r in records if r["label"] == better}
        b = {r["seed"]: r[key] for r in records if r["label"] == worse}
        diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
        if len(diffs) < 2:
            out[key[4:]] = {"verdict": "not run"}
            continue
        m, lo, hi = _interval(diffs)
        word = "reproduced" if hi < 0 else "contradicted" if lo > 0 else "not resolved at this scale"
        out[key[4:]] = {"log_gen_ppl_difference": m, "ci95": [lo, hi], "verdict": word}
    return out


def markdown(summary: dict) -> str:
    evs = summary["evaluators"]
    head = "| sampler | T | NFE / sample | positions / L | " + " | ".join(f"gen-PPL {v} (95% CI)" for v in evs.values()) + \
           " | unigram entropy (bits) | repeated char 4-grams |"
    lines = [f"### samplers (scale {summary['scale']}, {summary['seeds']} sampling seeds, commit {summary['commit'][:10]})", "",
             head, "|" + "---|" * (6 + len(evs))]
    for label, e in summary["rows"].items():
        ppl = " | ".join(f"{e['gen_ppl_' + k][0]:.1f} ({_ci(e['gen_ppl_' + k][1:])})" for k in evs)
        t = label.split(" T=")[1] if " T=" in label else "-"
        lines.append(f"| {label.split(' T=')[0]} | {t} | {e['nfe']:.1f} | {e['positions']:.1f} | {ppl} | "
                     f"{e['unigram_entropy'][0]:.3f} | {e['repeated_4gram_rate'][0]:.3f} |")
    if summary["trends"]:
        lines += ["", "| trend | " + " | ".join(f"paired log gen-PPL difference, {v} (95% CI): verdict" for v in evs.values()) + " |",
                  "|---|" + "---|" * len(evs)]
        for t in summary["trends"]:
            cells = []
            for k in evs:
                v = t[k]
                cells.append(v["verdict"] if "ci95" not in v else
                             f"{v['log_gen_ppl_difference']:+.3f} ({_ci(v['ci95'], '+.3f')}): {v['verdict']}")
            lines.append(f"| {t['better']} < {t['worse']}: {t['claim']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ci(ci, fmt: str = ".1f") -> str:
    lo, hi = ci
    return "n/a" if any(x != x for x in (lo, hi)) else f"{lo:{fmt}} to {hi:{fmt}}"


def get_sampler_scale(name: str) -> SamplerScale:
    if name not in SAMPLER_SCALES:
        raise MaskdiffError(f"unknown scale {name!r} for the sampler comparison; choose one of: {', '.join(SAMPLER_SCALES)}")
    return SAMPLER_SCALES[name]
