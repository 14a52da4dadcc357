"""The papers' comparisons as one command each: ``maskdiff experiment NAME``.

An experiment is a list of variants (configs that differ in one choice) and the paper trends it tests.
Every variant is trained with the same budget (steps x batch x length tokens; FLOPs recorded) for
several seeds, evaluated on the same held-out sequences, and summarised as bits per character with a
95% interval over seeds (Student t). A trend "a beats b" is judged on the paired per-seed difference
(same seed: same initialisation, data order, t and masks), whose interval decides the verdict:

* reproduced: the interval lies entirely on the paper's side;
* contradicted: it lies entirely on the other side;
* not resolved at this budget: otherwise.

For a claim of *no* difference (time conditioning, MDLM), the interval is compared with an
equivalence margin: reproduced if it lies inside (-margin, +margin), contradicted if it lies outside
it, otherwise not resolved.

Runs are kept under ``OUT/runs/<variant>-s<seed>``: an interrupted experiment resumes where it stopped
(finished runs and finished evaluations are reused).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.presets import tiny

BPC_MARGIN = 0.02  # equivalence margin for "no difference" claims, bits per character


@dataclass
class Scale:
    """A budget: the model and training size every variant of an experiment gets."""

    width: int
    depth: int
    heads: int
    length: int
    batch_size: int
    steps: int
    lr: float
    eval_sequences: int
    eval_passes: int
    seeds: int = 3


SCALES: Dict[str, Scale] = {
    # seconds per variant: for the test suite only, numbers mean nothing
    "test": Scale(width=32, depth=1, heads=2, length=32, batch_size=4, steps=3, lr=1e-3, eval_sequences=4, eval_passes=1),
    # minutes per variant on 2 CPU cores (the default)
    "cpu": Scale(width=64, depth=2, heads=4, length=64, batch_size=32, steps=300, lr=3e-3, eval_sequences=256, eval_passes=8),
    # the same comparisons bigger, for a GPU
    "gpu": Scale(width=384, depth=6, heads=6, length=256, batch_size=128, steps=10000, lr=5e-4, eval_sequences=2048, eval_passes=4),
}


@dataclass
class Variant:
    name: str
    edit: Callable[[RunConfig], None]
    """Changes to the base config that define this variant."""
    eval_steps: Tuple[Optional[int], ...] = (None,)
    """Evaluations to run: None is the variant's own estimate (continuous, or its T), an int a discrete T."""
    budget: int = 1
    """Training steps as a multiple of the scale's: 2 gives a variant the FLOPs of one that runs the
    network twice per step (GenMD4 with k = 2), at twice the tokens."""


@dataclass
class Trend:
    better: str  # "variant" or "variant@T" (an evaluation of it)
    worse: str
    claim: str  # the paper's statement, cited
    equal: bool = False  # a claim of no difference (equivalence margin)


@dataclass
class Experiment:
    name: str
    question: str
    variants: List[Variant]
    trends: List[Trend] = field(default_factory=list)
    scale_edits: Dict[str, dict] = field(default_factory=dict)
    """Changes to a named scale for this experiment only (e.g. fewer steps where its variants are dearer),
    the same for every variant, so the budgets stay equal; results.json records the scale as run."""


def _set(**fields):
    def edit(cfg: RunConfig) -> None:
        for path, value in fields.items():
            section, name = path.split("__")
            setattr(getattr(cfg, section), name, value)

    return edit


def _schedule(name, **args):
    return _set(diffusion__schedule=name, diffusion__schedule_args=args)


EVAL_T = (10, 100, 1000, None)

EXPERIMENTS: Dict[str, Experiment] = {
    e.name: e
    for e in [
        Experiment(
            "schedules",
            "Which masking schedule trains best on character text? (MD4 Sec. 4 and Fig. 1: the schedules; MD4 uses "
            "linear for text, cosine for images)",
            [Variant("linear", _schedule("linear")), Variant("cosine", _schedule("cosine")),
             Variant("polynomial-w2", _schedule("polynomial", w=2.0)), Variant("geometric", _schedule("geometric")),
             Variant("loglinear", _schedule("loglinear", eps=1e-3))],
            [Trend("linear", "cosine", "MD4 trains its text models with the linear schedule and its image models with cosine")],
        ),
        Experiment(
            "time-conditioning",
            "Does conditioning the network on t matter? (MDLM, time-conditioning ablation on OWT: a negligible difference)",
            [Variant("no-time", _set(model__time_conditioned=False)), Variant("time", _set(model__time_conditioned=True))],
            [Trend("time", "no-time", "MDLM: time conditioning has a minimal effect on perplexity", equal=True)],
        ),
        Experiment(
            "subs",
            "Do SUBS's carry-over and zero masking probability help? (MDLM's parameterization ablation on LM1B; discrete "
            "time T = 1000 for every variant, the full per-position KL where a choice is off)",
            [Variant("subs", _set(diffusion__discrete_steps=1000), (1000,)),
             Variant("no-carry-over", _set(diffusion__discrete_steps=1000, diffusion__carry_over=False)),
             Variant("no-zero-mask", _set(diffusion__discrete_steps=1000, diffusion__zero_mask=False)),
             Variant("neither", _set(diffusion__discrete_steps=1000, diffusion__carry_over=False, diffusion__zero_mask=False))],
            [Trend("subs@1000", "no-carry-over", "MDLM: carry-over unmasking improves perplexity"),
             Trend("subs@1000", "no-zero-mask", "MDLM: zero masking probability improves perplexity")],
        ),
        Experiment(
            "discrete-time",
            "Discrete T in {10, 100, 1000} against continuous time, for training and for evaluation (MD4 Table 6; MDLM's "
            "continuous-time ablation)",
            [Variant("train-T10", _set(diffusion__discrete_steps=10), EVAL_T),
             Variant("train-T100", _set(diffusion__discrete_steps=100), EVAL_T),
             Variant("train-T1000", _set(diffusion__discrete_steps=1000), EVAL_T),
             Variant("continuous", _set(diffusion__discrete_steps=0), EVAL_T)],
            [Trend("continuous@None", "continuous@10", "MD4 Table 6: the bound tightens as T grows, continuous time is best"),
             Trend("continuous@1000", "continuous@10", "MD4 Table 6: T = 1000 is tighter than T = 10"),
             Trend("continuous@None", "train-T10@10", "MDLM: training and evaluating in continuous time beats discrete T")],
        ),
        Experiment(
            "genmd4",
            "GenMD4's learned per-token schedule against MD4's linear one, and k = 1 vs k = 2 draws of x_t for the "
            "REINFORCE leave-one-out gradient (MD4 Sec. 5; text8 at paper scale: 1.34 vs 1.37 BPC). Time-conditioned networks.",
            [Variant("md4", _set(model__time_conditioned=True)),
             Variant("genmd4-k2", _set(model__time_conditioned=True, diffusion__objective="genmd4", diffusion__genmd4_samples=2)),
             Variant("genmd4-k1", _set(model__time_conditioned=True, diffusion__objective="genmd4", diffusion__genmd4_samples=1)),
             Variant("md4-2x", _set(model__time_conditioned=True), budget=2)],
            [Trend("genmd4-k2", "md4", "MD4: GenMD4 improves on MD4 (text8 1.34 vs 1.37 BPC); equal tokens, GenMD4 k = 2 at twice the FLOPs"),
             Trend("genmd4-k2", "md4-2x", "the same at equal FLOPs: MD4 trained twice as many steps"),
             Trend("genmd4-k1", "md4", "the same at equal tokens and FLOPs: GenMD4 with k = 1"),
             Trend("genmd4-k2", "genmd4-k1", "the leave-one-out baseline (k = 2) lowers gradient variance")],
        ),
        Experiment(
            "sedd",
            "MDLM's masked-diffusion loss against SEDD's score entropy on the same network, schedule (log-linear, as "
            "both papers) and budget (MDLM's OWT and LM1B tables: MDLM's bound is lower than SEDD's)",
            [Variant("mdlm", _schedule("loglinear", eps=1e-3)),
             Variant("sedd", _set(diffusion__schedule="loglinear", diffusion__schedule_args={"eps": 1e-3},
                                  diffusion__objective="sedd"))],
            [Trend("mdlm", "sedd", "MDLM: its NELBO is lower than SEDD's absorbing-state score-entropy bound")],
        ),
        Experiment(
            "ar",
            "Masked diffusion against an autoregressive model on the same transformer, same tokens and FLOPs "
            "(text8 at paper scale: AR about 1.23 BPC, MD4 1.37)",
            [Variant("md4", _set()), Variant("ar", _set(diffusion__objective="ar"))],
            [Trend("ar", "md4", "MD4 / MDLM: autoregressive models still reach a lower NLL at equal size")],
        ),
        Experiment(
            "block",
            "Block diffusion (BD3-LM, Arriola et al. 2025) with blocks of L' = 4 and 16 against masked diffusion "
            "(MDLM) and an autoregressive model on the same transformer, same training tokens (BD3-LM's LM1B and "
            "OpenWebText tables: the block bound lies between AR and MDLM, and tightens as L' shrinks)",
            [Variant("mdlm", _set()), Variant("bd3-16", _set(diffusion__objective="block", diffusion__block_size=16)),
             Variant("bd3-4", _set(diffusion__objective="block", diffusion__block_size=4)),
             Variant("ar", _set(diffusion__objective="ar"))],
            [Trend("bd3-4", "mdlm", "BD3-LM: block diffusion with L' = 4 has a lower NELBO than MDLM"),
             Trend("bd3-16", "mdlm", "BD3-LM: block diffusion with L' = 16 has a lower NELBO than MDLM"),
             Trend("ar", "bd3-4", "BD3-LM: the autoregressive NLL stays below block diffusion with L' = 4"),
             Trend("ar", "bd3-16", "BD3-LM: the autoregressive NLL stays below block diffusion with L' = 16"),
             Trend("bd3-4", "bd3-16", "BD3-LM: smaller blocks give a lower NELBO (L' = 4 below L' = 16)")],
            # block diffusion reads 2L tokens per sequence: half the cpu scale's steps and evaluation passes keep
            # the four variants x 3 seeds near 10 minutes on 2 idle cores (equal tokens for every variant)
            scale_edits={"cpu": dict(steps=150, eval_passes=4)},
        ),
    ]
}


def base_config(scale: Scale, seed: int) -> RunConfig:
    cfg = tiny()
    cfg.preset = "experiment"
    cfg.model.width, cfg.model.depth, cfg.model.heads = scale.width, scale.depth, scale.heads
    cfg.model.cond_dim = min(128, scale.width)
    cfg.data.length = scale.length
    # the papers' estimator: with importance-sampled t a time-independent network sees the same masks and
    # weights under every schedule with the same endpoints, which would empty the schedule comparisons
    cfg.diffusion.time_sampler = "uniform"
    cfg.model.local_mixing = 0  # the papers' network: attention is a masked position's only route to context
    t = cfg.train
    t.steps, t.batch_size, t.lr, t.seed = scale.steps, scale.batch_size, scale.lr, seed
    t.warmup_steps = max(1, scale.steps // 10)
    t.checkpoint_every = max(1, scale.steps // 4)
    t.keep_checkpoints = 1
    t.log_every = max(1, scale.steps // 20)
    return cfg


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise MaskdiffError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise MaskdiffError(f"unknown scale {name!r}; choose one of: {', '.join(SCALES)}")
    return SCALES[name]


def _eval_key(steps: Optional[int]) -> str:
    return "own" if steps is None else f"T{steps}"


def run_variant(variant: Variant, scale: Scale, seed: int, out: Path, *, log=print, device: str = "auto") -> dict:
    """Train (or reuse) one variant for one seed and evaluate it; returns a record (cached as JSON)."""
    import maskdiff
    from maskdiff.objectives import build_objective
    from maskdiff.pipeline import build_tokenizer, eval_chunks
    from maskdiff.train import train
    from maskdiff.validation import validate_config

    run_dir = out / "runs" / f"{variant.name}-s{seed}"
    record_path = run_dir / "result.json"
    if record_path.exists():
        return json.loads(record_path.read_text(encoding="utf-8"))
    cfg = base_config(scale, seed)
    variant.edit(cfg)
    cfg.train.device = device
    cfg.train.steps *= variant.budget
    validate_config(cfg)
    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=False, log=lambda *a: None)
    if result.interrupted:
        raise KeyboardInterrupt
    train_s = time.perf_counter() - t0
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
    record_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    log(f"  {variant.name} seed {seed}: " + ", ".join(f"{k} {v['bpc']:.4f}" for k, v in evals.items()) + f" ({train_s:.0f} s)")
    return record


def t_interval(values: List[float], level: float = 0.95) -> Tuple[float, float, float]:
    """(mean, low, high): Student-t interval over the values (seeds)."""
    from scipy.stats import t as student_t

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _values(records: List[dict], key: str) -> Dict[int, float]:
    name, _, ev = key.partition("@")
    ev_key = "own" if ev in ("", "None") else f"T{ev}"
    return {r["seed"]: r["evals"][ev_key]["bpc"] for r in records if r["variant"] == name and ev_key in r["evals"]}


def verdict(trend: Trend, records: List[dict]) -> dict:
    a, b = _values(records, trend.better), _values(records, trend.worse)
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]  # negative: "better" has the lower BPC
    if len(diffs) < 2:
        return {"better": trend.better, "worse": trend.worse, "claim": trend.claim, "verdict": "not run", "seeds": len(diffs)}
    mean, lo, hi = t_interval(diffs)
    if trend.equal:
        m = BPC_MARGIN
        word = "reproduced" if -m < lo and hi < m else "contradicted" if (lo >= m or hi <= -m) else "not resolved at this budget"
    else:
        word = "reproduced" if hi < 0 else "contradicted" if lo > 0 else "not resolved at this budget"
    return {"better": trend.better, "worse": trend.worse, "claim": trend.claim, "difference_bpc": mean,
            "ci95": [lo, hi], "verdict": word, "seeds": len(diffs), "equivalence_margin": BPC_MARGIN if trend.equal else None}


def run_experiment(name: str, scale_name: str = "cpu", out=None, *, seeds: Optional[int] = None, log=print,
                   device: str = "auto") -> dict:
    """Run every variant of an experiment for every seed; write results.json and results.md into ``out``."""
    from maskdiff.checkpoint import atomic_write_text

    exp, scale = get_experiment(name), get_scale(scale_name)
    scale = dataclasses.replace(scale, **exp.scale_edits.get(scale_name, {}))
    n_seeds = seeds or scale.seeds
    if n_seeds < 1:
        raise MaskdiffError(f"seeds must be at least 1, got {n_seeds}")
    out = Path(out or Path("experiments") / f"{name}-{scale_name}")
    out.mkdir(parents=True, exist_ok=True)
    log(f"experiment {name} at scale {scale_name}: {len(exp.variants)} variants x {n_seeds} seeds -> {out}")
    records = [run_variant(v, scale, s, out, log=log, device=device) for v in exp.variants for s in range(n_seeds)]
    summary = {"experiment": name, "question": exp.question, "scale": scale_name, "scale_config": scale.__dict__,
               "seeds": n_seeds, "machine": _machine(), "commit": _commit(), "variants": {}, "trends": []}
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
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "results.md", markdown(summary))
    log(markdown(summary))
    return summary


def markdown(summary: dict) -> str:
    lines = [f"### {summary['experiment']} (scale {summary['scale']}, {summary['seeds']} seeds, commit {summary['commit'][:10]})", "",
             summary["question"], "", "| variant | estimate | BPC (mean over seeds) | 95% CI (seeds) | tokens | train FLOPs |",
             "|---|---|---|---|---|---|"]
    for name, v in summary["variants"].items():
        for key, e in v["evals"].items():
            lines.append(f"| {name} | {e['estimate']} | {e['bpc']:.4f} | {_ci(e['ci95'])} | {v['tokens']:,} | {v['train_flops']:.3g} |")
    if summary["trends"]:
        lines += ["", "| trend (paper) | paired difference, BPC | 95% CI | verdict |", "|---|---|---|---|"]
        for t in summary["trends"]:
            diff = f"{t['difference_bpc']:+.4f}" if "difference_bpc" in t else "-"
            ci = _ci(t["ci95"]) if "ci95" in t else "-"
            rel = "~" if t.get("equivalence_margin") else "<"
            lines.append(f"| {t['better']} {rel} {t['worse']}: {t['claim']} | {diff} | {ci} | {t['verdict']} |")
    return "\n".join(lines) + "\n"


def _ci(ci) -> str:
    lo, hi = ci
    return "n/a" if any(math.isnan(x) for x in (lo, hi)) else f"{lo:.4f} to {hi:.4f}"


def _machine() -> str:
    import platform

    import torch

    return f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
