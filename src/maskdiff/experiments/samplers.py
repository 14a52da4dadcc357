"""Samplers compared at equal network calls per sample: ``maskdiff experiment samplers``.

One masked-diffusion model and one autoregressive evaluator (the project's own, same network and data)
are trained here, then every sampler draws samples of the training length L with several sampling
seeds: MDLM's ancestral chain and its cache, first-hitting, ReMDM's four strategies (Wang et al. 2025),
Fast-dLLM's threshold decoding (Wu et al. 2025) and the dilated sampler (after DUS, up to T = L); block
diffusion (BD3-LM, Arriola et al. 2025) gets its own models, one per block size L', trained on the same
data for the same steps. The grid samplers run T in
budgets x L steps, so ancestral and ReMDM make (up to) the same T calls and block diffusion T L'/L steps in
each of its L/L' blocks (T calls at most); the cache, first-hitting and threshold decoding make the calls
they need, and the table says how many. Quality is generative perplexity under the project's
AR model and under SmolLM2-135M (``maskdiff.evaluation.judge``), beside unigram entropy and repeated 4-grams
(low entropy and many repeats flag text that a judge LM likes for the wrong reason).

Each (sampler, seed) is a record: its gen-PPL is exp of the token-weighted mean NLL of that seed's
samples. Figures are means over seeds with a 95% Student-t interval over seeds (log gen-PPL, transformed
back), and a trend "a beats b" is judged on the paired per-seed difference of log gen-PPL (same seed,
same model), as every experiment's claims are (``maskdiff.experiments.base``). Records are kept under
OUT/records, the runs under OUT/runs: an interrupted experiment resumes.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from maskdiff.errors import MaskdiffError
from maskdiff.experiments.base import ModelScale, ci_text, judges, measure_texts, model_config, paired_verdict, results_folder, table, \
    train_run, t_interval, write_json, write_results
from maskdiff.experiments.provenance import provenance, short_commit

REMDM = ("remdm-cap", "remdm-rescale", "remdm-conf", "remdm-loop")
NOT_RESOLVED = "not resolved at this scale"


@dataclass
class SamplerScale(ModelScale):
    """The size of the sampler comparison: the two models, the samples and the step budgets (``steps`` is
    the masked-diffusion model's, and each block diffusion model's, training steps)."""

    ar_steps: int
    """Training steps of the autoregressive evaluator."""
    lr: float
    """Peak learning rate of every model."""
    samples: int
    """Samples per sampler and seed."""
    seeds: int
    """Sampling seeds (the models are trained once, from seed 0)."""
    budgets: Tuple[float, ...]
    """Grid steps T as multiples of L (ReMDM's claim concerns T past L)."""
    thresholds: Tuple[float, ...]
    """Confidence thresholds of threshold decoding."""
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


def get_sampler_scale(name: str) -> SamplerScale:
    """The scale ``name`` of the sampler comparison, or a MaskdiffError naming the valid ones."""
    if name not in SAMPLER_SCALES:
        raise MaskdiffError(f"unknown scale {name!r} for the sampler comparison; choose one of: {', '.join(SAMPLER_SCALES)}")
    return SAMPLER_SCALES[name]


@dataclass
class Row:
    """One sampler setting of the table. ``steps`` is the grid's T (per block for block diffusion)."""

    label: str
    """Its name in the table and in ``records/``."""
    sampler: str
    """A name of ``maskdiff.sampling.get_sampler``, or ``block`` (block diffusion's own sampler)."""
    steps: Optional[int]
    """The grid's T; None for the samplers that choose their own calls."""
    kwargs: dict
    """The sampler's options."""


def sampler_rows(scale: SamplerScale) -> List[Row]:
    """Every sampler setting of the comparison at ``scale``, the grid samplers at T = budget x L."""
    L = scale.length
    rows = []
    for mult in scale.budgets:
        T = max(1, int(round(mult * L)))
        rows.append(Row(f"ancestral T={T}", "ancestral", T, {}))
        rows.append(Row(f"cached T={T}", "cached", T, {}))
        rows += [Row(f"{name} T={T}", name, T, {}) for name in REMDM]
        rows += [Row(f"block L'={b} T={T}", "block", max(1, T * b // L), {"block_size": b}) for b in scale.block_sizes]
        if T <= L:  # past L it fills one position per step and makes L calls, as at T = L
            rows.append(Row(f"dilated T={T}", "dilated", T, {}))
    rows.append(Row("first-hitting", "first-hitting", None, {}))
    block = max(1, L // 4)
    for tau in scale.thresholds:
        rows.append(Row(f"threshold {tau} dual", "threshold", None, {"threshold": tau, "block_size": block, "cache": "dual"}))
    rows.append(Row(f"threshold {scale.thresholds[0]} no cache", "threshold", None,
                    {"threshold": scale.thresholds[0], "block_size": block, "cache": "none"}))
    return rows


def _config(scale: SamplerScale, objective: str, steps: int, block_size: int = 0):
    """One model of the comparison: ``objective`` trained ``steps`` steps from seed 0."""
    cfg = model_config(scale, scale.lr, steps, 0)
    cfg.diffusion.objective = objective
    cfg.diffusion.block_size = block_size
    return cfg


def run_sampler_experiment(scale_name: str = "cpu", out=None, *, seeds: Optional[int] = None, log=print,
                           device: str = "auto") -> dict:
    """Train the two models (or reuse them), sample with every row for every seed, write results.json/.md."""
    import torch

    import maskdiff
    from maskdiff.modalities import eval_chunks
    from maskdiff.sampling.request import SampleRequest

    scale = get_sampler_scale(scale_name)
    out, n_seeds = results_folder(out, f"samplers-{scale_name}", seeds, scale.seeds)
    (out / "records").mkdir(parents=True, exist_ok=True)
    rows = sampler_rows(scale)
    log(f"experiment samplers at scale {scale_name}: {len(rows)} sampler settings x {n_seeds} seeds -> {out}")
    train_s = {"masked": train_run(_config(scale, "masked", scale.steps), out / "runs" / "masked", device),
               "ar": train_run(_config(scale, "ar", scale.ar_steps), out / "runs" / "ar", device)}
    for b in scale.block_sizes:  # block diffusion: its own model per L', same data and steps (twice the FLOPs)
        train_s[f"block-{b}"] = train_run(_config(scale, "block", scale.steps, b), out / "runs" / f"block-{b}", device)
    pipe = maskdiff.load(out / "runs" / "masked", device=device)
    blocks = {b: maskdiff.load(out / "runs" / f"block-{b}", device=device) for b in scale.block_sizes}
    evaluators = judges(out / "runs" / "ar", scale.smollm2, device)
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
                            seconds=0.0, **measure_texts(texts, evaluators)))
    for row in rows:
        for seed in range(n_seeds):
            path = out / "records" / f"{row.label.replace(' ', '_').replace('=', '')}-s{seed}.json"
            if path.exists():
                records.append(json.loads(path.read_text(encoding="utf-8")))
                continue
            if row.sampler == "block":
                sample, positions = _block_draw(blocks[row.kwargs["block_size"]], scale.samples, L, row.steps, 1000 + seed)
            else:  # the model's one sampling path: a request checked against it, run by its objective
                sample = pipe.draw(SampleRequest(num=scale.samples, sampler=row.sampler, steps=row.steps or L, seed=1000 + seed,
                                                 length=L, options=dict(row.kwargs)))
                positions = sample.extra.get("positions", sample.nfe.to(torch.float64))
            texts = pipe.tokenizer.decode_batch(sample.tokens.cpu())
            rec = dict(label=row.label, sampler=row.sampler, steps=row.steps, seed=seed, nfe=float(sample.nfe.float().mean()),
                       positions=float(positions.float().mean()), seconds=sample.seconds / scale.samples,
                       remasked=float(sample.extra["remasked"].float().mean()) if "remasked" in sample.extra else None,
                       examples=texts[:2], **measure_texts(texts, evaluators))
            write_json(path, rec)
            records.append(rec)
        log(f"  {row.label}: " + ", ".join(f"{k} {v:.3f}" for k, v in records[-1].items() if k.startswith("nll_")))
    summary = summarise(records, scale, evaluators)
    summary.update(experiment="samplers", scale=scale_name, scale_config=asdict(scale), seeds=n_seeds, **provenance(device),
                   train_seconds=train_s, validation_bits_per_char={k: list(v) for k, v in bpc.items()})
    write_results(out, summary, markdown, log)
    return summary


def _block_draw(block_pipe, num: int, length: int, steps: int, seed: int):
    """Block diffusion's samples through the model's own sampler (key-value cache), and the positions the
    network computed per sample in units of L (each denoising call reads one block of L' tokens, each
    cache call one finished block), the figure the table's positions column holds for the other samplers."""
    import torch

    from maskdiff.sampling.request import SampleRequest

    sample = block_pipe.draw(SampleRequest(num=num, steps=steps, seed=seed, length=length))
    calls = sample.nfe.to(torch.float64) + sample.extra["cache_calls"].to(torch.float64)
    return sample, calls * block_pipe.denoiser.block_size / length


def summarise(records: List[dict], scale: SamplerScale, evaluators) -> dict:
    """Per row: means over seeds with intervals (gen-PPL as exp of the mean NLL and of its bounds); the
    ReMDM and BD3-LM trends judged per evaluator."""
    keys = [f"nll_{k}" for k in evaluators]
    labels = list(dict.fromkeys(r["label"] for r in records))
    by_label = {}
    for label in labels:
        rs = sorted((r for r in records if r["label"] == label), key=lambda r: r["seed"])
        entry = {"sampler": rs[0]["sampler"], "steps": rs[0]["steps"], "seeds": len(rs),
                 "nfe": sum(r["nfe"] for r in rs) / len(rs), "positions": sum(r["positions"] for r in rs) / len(rs),
                 "seconds_per_sample": sum(r["seconds"] for r in rs) / len(rs),
                 "unigram_entropy": t_interval([r["unigram_entropy"] for r in rs]),
                 "repeated_4gram_rate": t_interval([r["repeated_4gram_rate"] for r in rs]),
                 "examples": rs[0].get("examples", [])}
        for key in keys:
            m, lo, hi = t_interval([r[key] for r in rs])
            entry["gen_ppl_" + key[4:]] = [math.exp(m), math.exp(lo) if lo == lo else lo, math.exp(hi) if hi == hi else hi]
        by_label[label] = entry
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
    for T in sorted({int(round(m * L)) for m in scale.budgets if m < 1.0}):
        trends.append(_trend(records, keys, f"dilated T={T}", f"ancestral T={T}",
                             f"DUS: spreading a step's positions beats filling them at random at equal calls under L (T = {T})"))
    for b in scale.block_sizes:
        for T in dict.fromkeys((at_l, big)):
            trends.append(_trend(records, keys, f"block L'={b} T={T}", f"ancestral T={T}",
                                 f"BD3-LM: block diffusion (L' = {b}) samples better than MDLM at equal calls (T = {T})"))
    return {"rows": by_label, "trends": trends, "evaluators": {k[4:]: evaluators[k[4:]].name for k in keys}}


def _trend(records, keys, better: str, worse: str, claim: str) -> dict:
    """The claim "``better`` has the lower gen-PPL" judged per evaluator on the paired per-seed
    differences of log gen-PPL (mean NLL per evaluator token)."""
    out = {"better": better, "worse": worse, "claim": claim}
    for key in keys:
        p = paired_verdict({r["seed"]: r[key] for r in records if r["label"] == better},
                           {r["seed"]: r[key] for r in records if r["label"] == worse}, NOT_RESOLVED)
        out[key[4:]] = {"verdict": p.verdict} if p.seeds < 2 else \
            {"log_gen_ppl_difference": p.mean, "ci95": [p.low, p.high], "verdict": p.verdict}
    return out


def markdown(summary: dict) -> str:
    """The summary's tables: every row with its calls, gen-PPL per evaluator, entropy and repeats; then
    every trend with its paired difference and verdict per evaluator."""
    evs = summary["evaluators"]
    lines = [f"### samplers (scale {summary['scale']}, {summary['seeds']} sampling seeds, commit {short_commit(summary)})", ""]
    rows = []
    for label, e in summary["rows"].items():
        ppl = [f"{e['gen_ppl_' + k][0]:.1f} ({ci_text(e['gen_ppl_' + k][1:], '.1f')})" for k in evs]
        t = label.split(" T=")[1] if " T=" in label else "-"
        rows.append([label.split(" T=")[0], t, f"{e['nfe']:.1f}", f"{e['positions']:.1f}", *ppl,
                     f"{e['unigram_entropy'][0]:.3f}", f"{e['repeated_4gram_rate'][0]:.3f}"])
    lines += table(["sampler", "T", "NFE / sample", "positions / L", *(f"gen-PPL {v} (95% CI)" for v in evs.values()),
                    "unigram entropy (bits)", "repeated char 4-grams"], rows)
    if summary["trends"]:
        rows = []
        for t in summary["trends"]:
            cells = [t[k]["verdict"] if "ci95" not in t[k] else
                     f"{t[k]['log_gen_ppl_difference']:+.3f} ({ci_text(t[k]['ci95'], '+.3f')}): {t[k]['verdict']}" for k in evs]
            rows.append([f"{t['better']} < {t['worse']}: {t['claim']}", *cells])
        lines += [""] + table(["trend", *(f"paired log gen-PPL difference, {v} (95% CI): verdict" for v in evs.values())], rows)
    return "\n".join(lines) + "\n"
