"""How fast masked diffusion learns, against the autoregressive baseline, on sources of known entropy.

Sources: ``markov2`` (maskdiff.data.markov: a random sparse order-2 chain over a-z and space, 4
successors per context, 2M characters; exact unigram, first-order, entropy-rate and chunk entropies)
and ``shakespeare`` (the demo's text8-style Shakespeare). Every run has the tiny preset's size (4 x 128,
L = 128, batch 32, lr 1e-3); the variants differ only in what the text names:

    ar             the autoregressive baseline (causal attention, exact NLL)
    md-before      masked diffusion as it was: std-0.02 init ('gpt2'), t uniform on [t_min, 1]
    md-init        + PyTorch's default init (MDLM's)
    md-importance  std-0.02 init + importance-sampled t
    md-after       both: importance-sampled t and the default init
    md-local3      + a depthwise convolution of kernel 3 over positions in every block (--local-mixing 3)
    md-local5      the same with kernel 5
    md-local3-tc   md-local3 + adaLN time conditioning
    ar-local3      the autoregressive baseline with a causal kernel-3 mixing (a fair AR reference)
    md-local5-tc   md-local5 + time conditioning
    md-local3-lr2, md-local3-tc-lr2   md-local3 (-tc) at lr 2e-3 instead of 1e-3

Each run keeps a checkpoint every --eval-every steps; each checkpoint's EMA weights are evaluated on
the same validation chunks (a bound for the diffusion runs, an exact NLL for AR). Runs and evaluations
are cached in --workdir, so an interrupted benchmark resumes. ``--jobs N`` runs N runs at once (a GPU
machine); the results (curves, final figures with 95% intervals over seeds, the sources' entropies,
machine, commit) go to benchmarks/results/learning_speed_<device>_<time>.json with a Markdown table and
one PNG of curves per source.

    python benchmarks/learning_speed.py --seeds 3 --steps 1000 --jobs 16 --device cuda
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, git_commit, machine_info, write_result  # noqa: E402

VARIANTS = {
    "ar": dict(objective="ar", init="default", time_sampler="uniform"),
    "md-before": dict(objective="masked", init="gpt2", time_sampler="uniform"),
    "md-init": dict(objective="masked", init="default", time_sampler="uniform"),
    "md-importance": dict(objective="masked", init="gpt2", time_sampler="importance"),
    "md-after": dict(objective="masked", init="default", time_sampler="importance"),
    "md-local3": dict(objective="masked", init="default", time_sampler="importance", local_mixing=3),
    "md-local5": dict(objective="masked", init="default", time_sampler="importance", local_mixing=5),
    "md-local3-tc": dict(objective="masked", init="default", time_sampler="importance", local_mixing=3, time_conditioned=True),
    "ar-local3": dict(objective="ar", init="default", time_sampler="uniform", local_mixing=3),
    "md-local5-tc": dict(objective="masked", init="default", time_sampler="importance", local_mixing=5, time_conditioned=True),
    "md-local3-lr2": dict(objective="masked", init="default", time_sampler="importance", local_mixing=3, lr=2e-3),
    "md-local3-tc-lr2": dict(objective="masked", init="default", time_sampler="importance", local_mixing=3, time_conditioned=True, lr=2e-3),
}
DEFAULT_VARIANTS = ["ar", "md-before", "md-init", "md-importance", "md-after"]
SOURCES = ("markov2", "shakespeare")
EVAL_ROWS = 256


def source_file(workdir: Path, name: str) -> Path:
    from maskdiff.data.markov import MarkovSource

    path = workdir / f"{name}.txt"
    if name == "markov2" and not path.exists():
        MarkovSource(order=2, successors=4, seed=0).write(path, 2_000_000, seed=1)
    return path


def source_entropies(name: str, length: int) -> dict:
    if name == "markov2":
        from maskdiff.data.markov import MarkovSource

        return MarkovSource(order=2, successors=4, seed=0).summary(length)
    return {}


def run_config(source: str, variant: str, seed: int, steps: int, eval_every: int, workdir: Path, device: str):
    from maskdiff.presets import tiny

    cfg = tiny()
    cfg.preset = "learning-speed"
    v = VARIANTS[variant]
    cfg.diffusion.objective, cfg.model.init, cfg.diffusion.time_sampler = v["objective"], v["init"], v["time_sampler"]
    cfg.model.local_mixing = v.get("local_mixing", 0)
    cfg.model.time_conditioned = v.get("time_conditioned", False)
    if source != "shakespeare":
        cfg.data.corpus = str(source_file(workdir, source))
    t = cfg.train
    t.steps, t.seed, t.device = steps, seed, device
    t.lr = v.get("lr", t.lr)
    t.checkpoint_every, t.keep_checkpoints, t.log_every = eval_every, 10_000, 10
    return cfg


def run_one(source: str, variant: str, seed: int, args) -> dict:
    """Train one run (or resume it) and evaluate each of its checkpoints; cached in its folder."""
    import torch

    import maskdiff
    from maskdiff.modalities import eval_chunks
    from maskdiff.train import train

    workdir = Path(args.workdir)
    run_dir = workdir / source / f"{variant}-s{seed}"
    done = run_dir / "curve.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = run_config(source, variant, seed, args.steps, args.eval_every, workdir, args.device)
    t0 = time.perf_counter()
    train(cfg, run_dir, progress=False, log=lambda *a: None)
    train_s = time.perf_counter() - t0
    curve = []
    for ckpt in sorted((run_dir / "checkpoints").glob("step_*")):
        kwargs = {"checkpoint": ckpt}
        if args.device != "cpu":
            kwargs["device"] = args.device
        pipe = maskdiff.load(run_dir, **kwargs)
        tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, "validation")
        stride = max(1, tokens.shape[0] // EVAL_ROWS)
        tokens = tokens[::stride][:EVAL_ROWS]
        valid = None if valid is None else valid[::stride][:EVAL_ROWS]
        res = pipe.evaluate(tokens, valid, passes=1 if pipe.kind == "ar" else args.passes, seed=1000 + seed)
        bits, lo, hi = res.bits_per_token()
        curve.append({"step": pipe.step, "bits": bits, "ci95": [lo, hi]})
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    out = {"source": source, "variant": variant, "seed": seed, "train_s": train_s, "curve": curve,
           "train_log": [(r["step"], r["loss_bits_per_token"]) for r in log], "threads": torch.get_num_threads()}
    done.write_text(json.dumps(out))
    return out


def summarise(results, args) -> dict:
    from maskdiff.experiments import t_interval

    table = {}
    for source in args.sources:
        rows = {}
        for variant in args.variants:
            runs = [r for r in results if r["source"] == source and r["variant"] == variant]
            if not runs:
                continue
            steps = sorted({p["step"] for r in runs for p in r["curve"]})
            curve = []
            for s in steps:
                vals = [p["bits"] for r in runs for p in r["curve"] if p["step"] == s]
                if len(vals) == len(runs):
                    m, lo, hi = t_interval(vals)  # the experiments' Student-t interval over seeds
                    h = hi - m if len(vals) > 1 else 0.0
                    curve.append({"step": s, "mean_bits": m, "ci95_halfwidth": h, "per_seed": vals})
            rows[variant] = {"seeds": len(runs), "curve": curve}
        table[source] = {"variants": rows, "entropies_bits": source_entropies(source, 128)}
    return table


def markdown(table, args) -> str:
    lines = []
    for source, data in table.items():
        lines.append(f"\n### {source}\n")
        if data["entropies_bits"]:
            lines.append("Exact: " + ", ".join(f"{k} {v:.3f}" for k, v in data["entropies_bits"].items()) + "\n")
        steps = sorted({p["step"] for v in data["variants"].values() for p in v["curve"]})
        lines.append("| variant | " + " | ".join(f"step {s}" for s in steps) + " |")
        lines.append("|---|" + "---|" * len(steps))
        for name, v in data["variants"].items():
            cells = {p["step"]: f"{p['mean_bits']:.3f} +- {p['ci95_halfwidth']:.3f}" for p in v["curve"]}
            lines.append(f"| {name} ({v['seeds']} seeds) | " + " | ".join(cells.get(s, "-") for s in steps) + " |")
    return "\n".join(lines) + "\n"


def plot(table, out_dir: Path, stamp: str):
    from maskdiff.visualize import save_line_chart

    paths = []
    for source, data in table.items():
        series = {f"{name} ({v['seeds']} seeds)": [(p["step"], p["mean_bits"]) for p in v["curve"]]
                  for name, v in data["variants"].items()}
        hlines = {}
        e = data["entropies_bits"]
        if e:
            hlines = {f"unigram {e['unigram_bits']:.2f}": e["unigram_bits"],
                      f"first order {e['first_order_bits']:.2f}": e["first_order_bits"],
                      f"chunk-128 entropy {e['chunk128_bits_per_symbol']:.2f}": e["chunk128_bits_per_symbol"]}
        paths.append(save_line_chart(series, out_dir / f"learning_speed_{source}_{stamp}.png",
                                     title=f"validation bits/char (mean over seeds): {source}", xlabel="step",
                                     ylabel="bits per character", hlines=hlines, size=(860, 480)))
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--shakespeare-variants", nargs="+", default=["ar", "md-before", "md-after"], choices=list(VARIANTS),
                   help="the variants run on shakespeare (default: ar, md-before, md-after; the ablations run on markov2)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--passes", type=int, default=2, help="Monte-Carlo passes per validation chunk (diffusion runs)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each its own process")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: the preset's 2, or 1 with --jobs > 1)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--workdir", default=str(REPO_ROOT / "runs" / "learning_speed"))
    p.add_argument("--out", default=None, help="result JSON path (default: benchmarks/results/...)")
    p.add_argument("--summarise-only", action="store_true", help="aggregate the finished runs in --workdir, start none")
    p.add_argument("--only", nargs=3, metavar=("SOURCE", "VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    if args.only:
        torch.set_num_threads(args.threads or 2)
        run_one(args.only[0], args.only[1], int(args.only[2]), args)
        return 0
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    for source in args.sources:  # write the data once, before the runs start in parallel
        if source != "shakespeare":
            source_file(Path(args.workdir), source)
    jobs = [(s, v, k) for k in range(args.seeds) for s in args.sources for v in args.variants
            if s != "shakespeare" or v in args.shakespeare_variants]
    threads = args.threads or (1 if args.jobs > 1 else 2)
    base = [sys.executable, __file__, "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--passes",
            str(args.passes), "--device", args.device, "--workdir", args.workdir, "--threads", str(threads)]
    running, t0 = [], time.perf_counter()
    for job in [] if args.summarise_only else jobs:
        while len(running) >= args.jobs:
            running = [r for r in running if r[1].poll() is None]
            time.sleep(0.5)
        print(f"[{time.perf_counter() - t0:6.0f} s] start {job[0]} {job[1]} seed {job[2]}", flush=True)
        running.append((job, subprocess.Popen(base + ["--only", job[0], job[1], str(job[2])])))
    failed = [job for job, proc in running if proc.wait() != 0]
    results = []
    for s, v, k in jobs:
        f = Path(args.workdir) / s / f"{v}-s{k}" / "curve.json"
        if f.exists():
            results.append(json.loads(f.read_text()))
        else:
            failed.append((s, v, k))
    table = summarise(results, args)
    md = markdown(table, args)
    print(md)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload = {"benchmark": "learning_speed", "machine": machine_info(args.device), "commit": git_commit(),
               "config": {k: v for k, v in vars(args).items() if k not in ("only", "out")}, "variants": VARIANTS,
               "summary": table, "markdown": md, "runs": results, "failed": [list(f) for f in failed]}
    path = write_result("learning_speed", args.device, payload, args.out)
    for png in plot(table, path.parent, stamp):
        print(f"wrote {png}")
    print(f"saved {path}" + (f"; {len(failed)} runs failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
