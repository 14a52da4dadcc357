"""Quality per CPU second: maskdiff at its own defaults against MDLM's reference at its own, on the same data and
the same budget of CPU seconds, side by side, seed by seed.

    PYTHONPATH=src .venv/bin/python benchmarks/parity_compute.py --peers /path/to/peers --budget 180 --seeds 1,2,3

``--peers`` as for benchmarks/parity.py (MDLM's reference runs unchanged in the harness's virtualenv, through
``parity_reference.py budget``). For each seed the two trainings start together, one process and one torch
thread each, on the same Shakespeare byte windows in the same order (maskdiff's data source for (seed, step)),
and each stops once its own process has used ``--budget`` CPU seconds (user + system, ``getrusage``, counted
from its first step: imports, model building and data preparation are not counted). Each saves a checkpoint
at 25, 50, 75 and 100% of the budget.

- maskdiff: the ``tiny`` preset's network and objective at the given width, depth and length (its transformer
  with local mixing, logits at the masked positions only, the linear schedule with importance-sampled time,
  no dropout, EMA 0.99);
- the reference: MDLM's DiT with its own defaults (dropout 0.1, cond_dim 128, log-linear schedule,
  antithetic t, EMA 0.9999).

Both: batch 32, AdamW at lr 1e-3, constant after 40 warm-up steps (MDLM's 2500 warm-up steps do not fit in
such a budget), gradient clipping 1.0. Every checkpoint (its EMA weights; the reference's converted by
``maskdiff convert mdlm``) gets maskdiff's NELBO estimate on the same validation rows with the same t and
masks (common random numbers). Reported: bits per token at each fraction, the steps each side reached,
and the ratio maskdiff / reference of the bound, with a 95% t interval over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from parity import RESULT_TAG, Reference, bits, convert, estimates, ref_spec, t_interval, write_data  # noqa: E402

FRACTIONS = [0.25, 0.5, 0.75, 1.0]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


def maskdiff_config(spec: Dict[str, Any]):
    """The tiny preset's network and objective at this width, depth and length, on Shakespeare bytes."""
    from maskdiff.config import DataConfig, TrainConfig
    from maskdiff.presets import tiny

    config = tiny()
    config.preset = "parity-compute"
    config.model.width, config.model.depth, config.model.heads = spec["width"], spec["depth"], spec["heads"]
    config.data = DataConfig(corpus="shakespeare", tokenizer="bytes", length=spec["length"])
    config.train = TrainConfig(steps=10**6, batch_size=spec["batch"], lr=spec["lr"], warmup_steps=spec["warmup"],
                               lr_schedule="constant", grad_clip=1.0, ema_decay=config.train.ema_decay, seed=spec["seed"],
                               threads=1, checkpoint_every=10**6, keep_checkpoints=len(FRACTIONS) + 1, log_every=50,
                               device="cpu", compile="off")
    return config


class _BudgetSpent(Exception):
    pass


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """maskdiff's trainer on a CPU budget: a checkpoint at each fraction, then stop (run in its own process)."""
    import maskdiff.train as trainer

    torch.set_num_threads(1)
    lr, update = trainer.learning_rate, trainer._clip_and_update
    pending, marks, start = sorted(spec["fractions"]), [], []

    def first_step(k, tc):  # called at the start of every step: the clock starts with the first
        if not start:
            start.append(cpu_seconds())
        return lr(k, tc)

    def after_step(run, k, loss, log):
        norm = update(run, k, loss, log)
        used = cpu_seconds() - start[0]
        while pending and used >= pending[0] * spec["budget"]:
            trainer._save_checkpoint(run, k + 1)
            marks.append({"fraction": pending.pop(0), "step": k + 1, "cpu_seconds": used, "loss": loss})
        if not pending:
            raise _BudgetSpent
        return norm

    trainer.learning_rate, trainer._clip_and_update = first_step, after_step
    try:
        trainer.train(maskdiff_config(spec), Path(spec["out"]), progress=False, log=lambda *a, **k: None)
    except _BudgetSpent:
        pass
    return {"marks": marks}


def run_seed(args, ref: Reference, seed: int, work: Path) -> Dict[str, Any]:
    data = write_data(args, seed, args.max_steps, work / "data")
    common = dict(budget=args.budget, fractions=FRACTIONS)
    refdir, mddir = work / f"ref_seed{seed}", work / f"maskdiff_seed{seed}"
    spec = dict(width=args.width, depth=args.depth, heads=args.heads, length=args.length, batch=args.batch, lr=args.lr,
                warmup=args.warmup, out=str(mddir), seed=seed, **common)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.time()
    ours = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    theirs = ref.start("budget", ref_spec(args, seed, out=str(refdir), windows=str(data["windows"]), **common))
    md, rf = Reference.finish(ours), Reference.finish(theirs)
    wall = time.time() - t0
    val = torch.as_tensor(np.load(data["val"]).astype(np.int64))
    import maskdiff

    rows = []
    for i, (m, r) in enumerate(zip(md["marks"], rf["marks"])):
        pipe = maskdiff.load(mddir, checkpoint=mddir / "checkpoints" / f"step_{m['step']:08d}")
        a = estimates(pipe, val, 3000 + i, args.passes)
        b = estimates(convert(Path(r["ckpt"]), work / "tmp", args), val, 3000 + i, args.passes)
        rows.append({"fraction": m["fraction"], "maskdiff_bits": bits(a, args.length), "reference_bits": bits(b, args.length),
                     "maskdiff_steps": m["step"], "reference_steps": r["step"], "maskdiff_cpu_seconds": m["cpu_seconds"],
                     "reference_cpu_seconds": r["cpu_seconds"]})
        rows[-1]["ratio"] = rows[-1]["maskdiff_bits"] / rows[-1]["reference_bits"]
        print(f"seed {seed} {m['fraction']:.0%}: maskdiff {rows[-1]['maskdiff_bits']:.4f} bits/token at step {m['step']}, "
              f"reference {rows[-1]['reference_bits']:.4f} at step {r['step']}", flush=True)
    n_md = sum(p.numel() for p in pipe.objective.network.parameters())
    return {"checkpoints": rows, "wall_seconds_both": wall, "maskdiff_parameters": n_md,
            "reference_backbone_parameters": rf["backbone_parameters"]}


def summary(per_seed: Dict[Any, Any]) -> List[Dict[str, Any]]:
    out = []
    for i, fraction in enumerate(FRACTIONS):
        rows = [res["checkpoints"][i] for res in per_seed.values() if i < len(res["checkpoints"])]
        out.append({"fraction": fraction, "cpu_seconds": fraction * next(iter(per_seed.values()))["budget"],
                    **{k: t_interval([r[k] for r in rows]) for k in ("maskdiff_bits", "reference_bits", "ratio",
                                                                      "maskdiff_steps", "reference_steps")}})
    return out


def plot(per_seed, table, path: Path) -> Path:
    from maskdiff.visualize import save_line_chart

    series, bands = {}, {}
    for who in ("maskdiff", "reference"):
        series[f"{who} (mean of {len(per_seed)} seeds)"] = [(r["cpu_seconds"], r[f"{who}_bits"]["mean"]) for r in table]
        if table[0][f"{who}_bits"]["ci95"][0] is not None:
            bands[f"{who} (mean of {len(per_seed)} seeds)"] = [(r["cpu_seconds"], *r[f"{who}_bits"]["ci95"]) for r in table]
    return save_line_chart(series, path, bands=bands, xlabel="CPU seconds of the training process (one thread)",
                           ylabel="bits per token", title="validation NELBO of the EMA weights, same CPU budget "
                           "(maskdiff's estimator, same t and masks; 95% t intervals over seeds)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--peers", type=Path, help="the set-up peer harness (shims/, refs/mdlm, .venv)")
    p.add_argument("--work", type=Path, default=Path("/tmp/maskdiff_parity_compute"), help="scratch folder")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (default: 1,2,3)")
    p.add_argument("--budget", type=float, default=180.0, help="CPU seconds per training run (default: 180)")
    for name, default in [("width", 64), ("depth", 4), ("heads", 4), ("cond-dim", 128), ("length", 64), ("batch", 32),
                          ("warmup", 40), ("val-rows", 256), ("passes", 2), ("max-steps", 4000)]:
        p.add_argument(f"--{name}", type=int, default=default, help=f"(default: {default})")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of both (default: 1e-3)")
    p.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/parity_compute_cpu_<time>.json)")
    p.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "figures" / "parity_compute.png", help="PNG")
    args = p.parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.peers is None:
        p.error("--peers PATH is required (the set-up peer harness)")
    from common import git_commit, machine_info, write_result

    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.dropout, args.threads = 0.1, 1  # the reference's (ref_spec reads them); maskdiff's own is the preset's 0
    args.steps = args.every = args.max_steps  # parity.write_data's config reads them
    args.match_mdlm = []
    ref = Reference(args.peers.resolve(), 1)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or HERE / "results" / f"parity_compute_cpu_{stamp}.json"
    result: Dict[str, Any] = {"benchmark": "parity_compute", "started_utc": stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine_info("cpu"), "commit": git_commit(), "reference": {"mdlm_commit": ref.commit},
                              "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out", "figure")},
                              "maskdiff_config": maskdiff_config(dict(vars(args), seed=0)).to_dict(), "per_seed": {}}
    for seed in args.seeds:
        result["per_seed"][seed] = dict(run_seed(args, ref, seed, args.work), budget=args.budget)
        result["table"] = summary(result["per_seed"])
        write_result("parity_compute", "cpu", result, out)
    print("wrote", plot(result["per_seed"], result["table"], args.figure))
    for r in result["table"]:
        lo, hi = r["ratio"]["ci95"]
        print(f"{r['fraction']:.0%} ({r['cpu_seconds']:.0f} CPU s): maskdiff {r['maskdiff_bits']['mean']:.4f}, reference "
              f"{r['reference_bits']['mean']:.4f} bits/token; ratio {r['ratio']['mean']:.3f}"
              + ("" if lo is None else f" ({lo:.3f} .. {hi:.3f})"))
    result["finished_utc"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(f"saved {write_result('parity_compute', 'cpu', result, out)}")


if __name__ == "__main__":
    main()
