"""maskdiff against MDLM's reference code: checkpoints it writes, converted, and learning curves on the same data.

    PYTHONPATH=src .venv/bin/python benchmarks/parity.py --peers /path/to/peers                  # both parts
    PYTHONPATH=src .venv/bin/python benchmarks/parity.py --peers /path/to/peers --parts convert  # one of them

``--peers``: a set-up copy of the project's peer harness (``STAGES=setup bash run_all.sh``): MDLM's reference
under ``refs/mdlm``, its CPU shims, its ``.venv``. The reference runs there, unchanged, through
``parity_reference.py`` (its LightningModule and Lightning's Trainer); none of it is copied here. Data:
Shakespeare bytes (vocabulary 256, the mask is id 256 in both), training windows drawn by maskdiff's data source
for each (seed, step), handed to the reference in that order; validation: the first ``--val-rows`` windows.

convert: the reference trains ``--convert-steps`` steps and saves its ``.ckpt`` (and a Hugging Face folder);
``maskdiff convert mdlm`` reads them. Figures: the largest logit difference between the two networks (EMA and
raw weights, the Hugging Face folder), the reference's ``val/nll`` against maskdiff's estimate, samples.

curves: for each seed, the reference (Lightning) and maskdiff (``maskdiff.train``, backbone ``mdlm-dit``)
train from the same initial weights (the reference's, converted) on the same windows, with MDLM's settings:
log-linear schedule, antithetic uniform t on [1e-3, 1], AdamW, constant lr after linear warm-up, gradient
clipping 1.0, dropout, EMA 0.9999. Every checkpoint (EMA weights) is evaluated with maskdiff's estimator on
the same t and masks for both (common random numbers), and the reference's checkpoints also with its own
``Trainer.validate``. The paired difference (maskdiff - reference, bits per token) gets a 95% t interval
over seeds; parity at a checkpoint: the interval includes 0 or lies within +-0.02 bits per token.
``--match-mdlm`` makes maskdiff's side draw t and count the warm-up and the EMA as MDLM's code does.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULT_TAG = "PARITY_REFERENCE_RESULT "
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t_{0.975, df}
MARGIN = 0.02  # bits per token
LN2 = math.log(2)


def t_interval(values: List[float]) -> Dict[str, Any]:
    """Mean and 95% t interval of independent values (None bounds for a single value)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci95": [None, None], "n": n, "values": values}
    half = T95.get(n - 1, 1.96) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "values": values}


class Reference:
    """parity_reference.py in the harness's virtualenv, with its shims and refs/mdlm on the path."""

    def __init__(self, peers: Path, threads: int):
        self.peers, self.threads = peers, threads
        missing = [p for p in ("shims", "refs/mdlm", ".venv/bin/python") if not (peers / p).exists()]
        if missing:
            raise SystemExit(f"--peers {peers}: missing {', '.join(missing)}; set the harness up (STAGES=setup bash run_all.sh)")
        commit = peers / "refs" / "mdlm" / ".commit"
        self.commit = commit.read_text().strip() if commit.exists() else "unknown"

    def start(self, command: str, spec: Dict[str, Any]) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=f"{self.peers / 'shims'}:{self.peers / 'refs' / 'mdlm'}", OMP_NUM_THREADS=str(self.threads))
        cmd = [str(self.peers / ".venv" / "bin" / "python"), str(HERE / "parity_reference.py"), command,
               "--spec", json.dumps(dict(spec, threads=self.threads))]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.peers)

    @staticmethod
    def finish(proc: subprocess.Popen) -> Dict[str, Any]:
        out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith(RESULT_TAG)]
        if proc.returncode or not lines:
            raise RuntimeError(f"reference failed (exit {proc.returncode}):\n{err[-3000:]}")
        return json.loads(lines[-1][len(RESULT_TAG):])

    def run(self, command: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        return self.finish(self.start(command, spec))


# ------------------------------------------------------------------------------------------------ maskdiff side


def run_config(args, seed: int, pretrained: str = ""):
    from maskdiff.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        preset="parity",
        model=ModelConfig(backbone="mdlm-dit", width=args.width, depth=args.depth, heads=args.heads, cond_dim=args.cond_dim,
                          dropout=args.dropout, pretrained=pretrained),
        data=DataConfig(corpus="shakespeare", tokenizer="bytes", length=args.length),
        diffusion=DiffusionConfig(schedule="loglinear", t_min=1e-3, low_discrepancy=True,
                                  time_sampler="stratified" if "time" in getattr(args, "match_mdlm", ()) else "uniform"),
        train=TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_steps=args.warmup, lr_schedule="constant",
                          grad_clip=1.0, ema_decay=0.9999, seed=seed, threads=args.threads, checkpoint_every=args.every,
                          keep_checkpoints=args.steps // args.every + 1, log_every=args.every, device="cpu", compile="off"),
    )


@contextlib.contextmanager
def mdlm_offsets(match: List[str]):
    """MDLM's one-step offsets in maskdiff's trainer, for this benchmark only: lr k / W at step k = 0, 1, ... of
    the warm-up ('warmup'; maskdiff: (k + 1) / W) and the EMA count n = k + 1 after step k ('ema'; maskdiff: k)."""
    import maskdiff.train as trainer

    lr, update = trainer.learning_rate, trainer._clip_and_update
    if "warmup" in match:
        trainer.learning_rate = lambda k, tc: tc.lr * k / tc.warmup_steps if k < tc.warmup_steps else lr(k, tc)
    if "ema" in match:  # _clip_and_update reads the step for the EMA's warm-up decay (and its error messages)
        trainer._clip_and_update = lambda run, k, loss, log: update(run, k + 1, loss, log)
    try:
        yield
    finally:
        trainer.learning_rate, trainer._clip_and_update = lr, update


def write_data(args, seed: int, steps: int, folder: Path) -> Dict[str, Path]:
    """The windows maskdiff's trainer draws at steps 0..steps-1 of ``seed`` (B rows each, in order) and the validation rows."""
    from maskdiff.data.chunking import contiguous_chunks
    from maskdiff.data.sources import WindowSource
    from maskdiff.modalities import build_tokenizer
    from maskdiff.modalities.text import split_stream
    from maskdiff.step import step_generator

    config = run_config(args, seed)
    tok = build_tokenizer(config)
    source = WindowSource(split_stream(config, tok, "train"), args.length)
    rows = torch.cat([source.draw(args.batch, step_generator(seed, k))[0] for k in range(steps)])
    val = contiguous_chunks(split_stream(config, tok, "validation"), args.length)[0][: args.val_rows]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"windows": folder / f"train_seed{seed}.npy", "val": folder / "val.npy"}
    np.save(paths["windows"], rows.numpy().astype(np.uint8))
    np.save(paths["val"], val.numpy().astype(np.uint8))
    return paths


def convert_folder(path: Path, out: Path, args, ema: bool = True) -> Path:
    """``maskdiff convert mdlm PATH OUT --allow-pickle`` (EMA weights of a .ckpt unless ``ema`` is False)."""
    from maskdiff.convert import convert_mdlm

    return convert_mdlm(path, out, heads=args.heads, length=args.length, tokenizer="bytes", allow_pickle=True, overwrite=True, ema=ema)


def convert(path: Path, out: Path, args, ema: bool = True):
    import maskdiff

    return maskdiff.from_pretrained(convert_folder(path, out, args, ema))


def estimates(pipe, val: torch.Tensor, seed: int, passes: int, diffusion_only: bool = False) -> torch.Tensor:
    """Per-row NELBO in nats (maskdiff's estimator: stratified t per batch, one mask per row and pass); with
    ``diffusion_only`` the continuous term alone, divided by 1 - t_min: the reference's val/nll."""
    from maskdiff.evaluation.nelbo import nelbo_estimates
    from maskdiff.loss import NELBOTerms

    def terms(x, t, gen, v):
        full = pipe.objective.eval_terms(x, t, gen, v)
        if not diffusion_only:
            return full
        zero = torch.zeros_like(full.diffusion)
        return NELBOTerms(full.diffusion / (1 - pipe.config.diffusion.t_min), zero, zero, full.tokens)

    return nelbo_estimates(terms, val, None, passes=passes, batch_size=64, seed=seed)


def bits(per_row: torch.Tensor, length: int) -> float:
    return float(per_row.sum()) / (per_row.numel() * length) / LN2


# ------------------------------------------------------------------------------------------------------ parts


def ref_spec(args, seed: int, **extra) -> Dict[str, Any]:
    return dict(vocab=256, width=args.width, depth=args.depth, heads=args.heads, cond_dim=args.cond_dim, length=args.length,
                dropout=args.dropout, ema=0.9999, lr=args.lr, warmup=args.warmup, batch=args.batch, seed=seed, **extra)


def part_convert(args, ref: Reference, work: Path) -> Dict[str, Any]:
    data = write_data(args, args.seeds[0], args.convert_steps, work / "data")
    ckdir = work / "convert" / "reference"
    trained = ref.run("train", ref_spec(args, args.seeds[0], steps=args.convert_steps, every=args.convert_steps, out=str(ckdir),
                                        windows=str(data["windows"])))
    ckpt = ckdir / f"step{args.convert_steps}.ckpt"
    hf = work / "convert" / "hf"
    ref.run("hf", ref_spec(args, args.seeds[0], ckpt=str(ckpt), out=str(hf)))
    pipes = {"ckpt_ema": convert(ckpt, work / "convert" / "ema", args), "ckpt_raw": convert(ckpt, work / "convert" / "raw", args, ema=False),
             "hf_folder": convert(hf, work / "convert" / "from_hf", args)}
    val = torch.as_tensor(np.load(data["val"]).astype(np.int64))
    # inputs: validation rows with 0%, 15%, 50%, 85% and 100% of positions masked
    gen = torch.Generator().manual_seed(0)
    x = val[:10].clone()
    for i, rate in enumerate([0.0, 0.15, 0.5, 0.85, 1.0] * 2):
        x[i][torch.rand(args.length, generator=gen) < rate] = 256
    np.save(work / "convert" / "inputs.npy", x.numpy())
    logits = {}
    for weights in ("ema", "raw"):
        ref.run("logits", ref_spec(args, args.seeds[0], ckpt=str(ckpt), inputs=str(work / "convert" / "inputs.npy"),
                                   out=str(work / "convert" / f"ref_{weights}"), weights=weights))
        ref_raw = torch.from_numpy(np.load(work / "convert" / f"ref_{weights}.raw.npy"))
        ref_subs = torch.from_numpy(np.load(work / "convert" / f"ref_{weights}.subs.npy"))
        for name, pipe in pipes.items():
            if (weights == "raw") != (name == "ckpt_raw"):
                continue
            with torch.no_grad():
                ours = pipe.objective.network(x, None)
                log_mu = pipe.denoiser(x, torch.full((x.shape[0],), 0.5))
            masked = x == 256
            logits[name] = {"max_abs_logit_difference": float((ours - ref_raw).abs().max()),
                            "logit_scale_max_abs": float(ref_raw.abs().max()),
                            "max_abs_log_prob_difference_at_masks": float((log_mu[masked] - ref_subs[masked][:, :256]).abs().max()),
                            "weights": weights}
    own = ref.run("eval", ref_spec(args, args.seeds[0], ckpts=[str(ckpt)], val=str(data["val"]), eval_batch=args.eval_batch,
                                   eval_seeds=list(range(args.eval_repeats))))
    ref_nll = [r["val_nll"] / LN2 for r in own["runs"][0]["runs"]]
    pipe = pipes["ckpt_ema"]
    ours_nll = [bits(estimates(pipe, val, s, 1, diffusion_only=True), args.length) for s in range(args.eval_repeats)]
    ours_nelbo = [bits(estimates(pipe, val, s, 1), args.length) for s in range(args.eval_repeats)]
    samples = pipe.sample(num=4, steps=args.length, sampler="cached", seed=0)
    return {"train_losses": trained["losses"], "reference_checkpoint_files": sorted(os.listdir(ckdir)),
            "hf_files": sorted(os.listdir(hf)), "logits": logits,
            "nelbo_bits_per_token": {"reference_val_nll": t_interval(ref_nll), "maskdiff_same_quantity": t_interval(ours_nll),
                                     "maskdiff_nelbo": t_interval(ours_nelbo)},
            "samples": [s for s in samples.texts]}


def part_curves(args, ref: Reference, work: Path, save) -> Dict[str, Any]:
    from maskdiff.train import train

    val = None
    per_seed = {}
    for seed in args.seeds:
        data = write_data(args, seed, args.steps, work / "data")
        val = torch.as_tensor(np.load(data["val"]).astype(np.int64))
        refdir, mddir = work / "curves" / f"ref_seed{seed}", work / "curves" / f"maskdiff_seed{seed}"
        steps = list(range(args.every, args.steps + 1, args.every))
        reused = [d / "curves" / f"ref_seed{seed}" for d in args.reuse_reference
                  if all((d / "curves" / f"ref_seed{seed}" / f).exists() for f in ["init.safetensors"] + [f"step{k}.ckpt" for k in steps])]
        t0 = time.time()
        proc = None if reused else ref.start("train", ref_spec(args, seed, steps=args.steps, every=args.every, out=str(refdir),
                                                              windows=str(data["windows"])))
        refdir = reused[0] if reused else refdir  # the reference's training is deterministic for a seed
        while not (refdir / "init.safetensors").exists():
            if proc.poll() is not None:
                Reference.finish(proc)
            time.sleep(1)
        time.sleep(0 if reused else 2)
        init = convert_folder(refdir / "init.safetensors", work / "curves" / f"init_seed{seed}", args)
        torch.set_num_threads(args.threads)
        with mdlm_offsets(args.match_mdlm):
            train(run_config(args, seed, pretrained=str(init)), mddir, progress=False, log=lambda *a, **k: None)
        md_seconds = time.time() - t0
        ref_train = Reference.finish(proc) if proc else {"losses": None, "reused_from": str(refdir)}
        ref_seconds = time.time() - t0
        ckpts = [str(refdir / f"step{k}.ckpt") for k in steps]
        own = ref.run("eval", ref_spec(args, seed, ckpts=ckpts, val=str(data["val"]), eval_batch=args.eval_batch, eval_seeds=[0]))
        import maskdiff

        rows = []
        for k, ck, own_k in zip(steps, ckpts, own["runs"]):
            ours = estimates(maskdiff.load(mddir, checkpoint=mddir / "checkpoints" / f"step_{k:08d}"), val, 1000 + k, args.passes)
            theirs = estimates(convert(Path(ck), work / "curves" / "tmp", args), val, 1000 + k, args.passes)
            d = (ours - theirs) / args.length / LN2  # per-row paired difference, bits per token
            rows.append({"step": k, "maskdiff_bits": bits(ours, args.length), "reference_bits": bits(theirs, args.length),
                         "difference": float(d.mean()), "difference_se_rows": float(d.std() / math.sqrt(d.numel())),
                         "reference_own_val_nll_bits": own_k["runs"][0]["val_nll"] / LN2})
            print(f"seed {seed} step {k}: maskdiff {rows[-1]['maskdiff_bits']:.4f} reference {rows[-1]['reference_bits']:.4f} "
                  f"(its own estimator {rows[-1]['reference_own_val_nll_bits']:.4f}) bits/token", flush=True)
        md_log = [json.loads(line) for line in (mddir / "log.jsonl").read_text().splitlines() if line.strip()]
        per_seed[seed] = {"checkpoints": rows, "reference_train_losses": ref_train["losses"], "maskdiff_log": md_log, "reference_reused_from":
                          ref_train.get("reused_from"), "wall_seconds_both_training": max(md_seconds, ref_seconds)}
        save(per_seed)
    return per_seed


def verdicts(per_seed: Dict[int, Any]) -> List[Dict[str, Any]]:
    seeds = sorted(per_seed)
    out = []
    for i, row in enumerate(per_seed[seeds[0]]["checkpoints"]):
        diffs = [per_seed[s]["checkpoints"][i]["difference"] for s in seeds if i < len(per_seed[s]["checkpoints"])]
        ci = t_interval(diffs)
        lo, hi = ci["ci95"]
        if lo is None:
            verdict = "one seed: no interval"
        else:
            verdict = "parity" if (lo <= 0 <= hi) or (-MARGIN <= lo and hi <= MARGIN) else "differ"
        out.append({"step": row["step"], "difference_bits": ci, "verdict": verdict,
                    "maskdiff_bits": t_interval([per_seed[s]["checkpoints"][i]["maskdiff_bits"] for s in seeds]),
                    "reference_bits": t_interval([per_seed[s]["checkpoints"][i]["reference_bits"] for s in seeds])})
    return out


def plot(per_seed, table, path: Path) -> List[Path]:
    """Two PNGs: the curves of every seed (``path``) and the paired difference with its interval (``*_difference.png``)."""
    from maskdiff.visualize import save_line_chart

    series = {}
    for seed, res in sorted(per_seed.items()):
        for who, key in (("maskdiff", "maskdiff_bits"), ("reference", "reference_bits")):
            series[f"{who}, seed {seed}"] = [(r["step"], r[key]) for r in res["checkpoints"]]
    first = save_line_chart(series, path, title="validation NELBO of the EMA weights (maskdiff's estimator, same t and masks)",
                            xlabel="step", ylabel="bits per token")
    diff = {"mean difference": [(r["step"], r["difference_bits"]["mean"]) for r in table]}
    if table and table[0]["difference_bits"]["ci95"][0] is not None:
        diff["95% interval, low"] = [(r["step"], r["difference_bits"]["ci95"][0]) for r in table]
        diff["95% interval, high"] = [(r["step"], r["difference_bits"]["ci95"][1]) for r in table]
    second = save_line_chart(diff, path.with_name(path.stem + "_difference.png"), xlabel="step", ylabel="bits per token",
                             title="maskdiff - reference, paired by seed (95% t interval over seeds)",
                             hlines={"+0.02": MARGIN, "0": 0.0, "-0.02": -MARGIN})
    return [first, second]


def print_table(table) -> None:
    for r in table:
        lo, hi = r["difference_bits"]["ci95"]
        print(f"step {r['step']}: difference {r['difference_bits']['mean']:+.4f} bits/token, 95% CI "
              f"{'-' if lo is None else f'{lo:+.4f} .. {hi:+.4f}'}, per seed "
              f"{', '.join(f'{v:+.3f}' for v in r['difference_bits']['values'])}: {r['verdict']}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=Path, help="the set-up peer harness (shims/, refs/mdlm, .venv); required unless --replot")
    p.add_argument("--parts", default="convert,curves", help="comma-separated: convert, curves (default: both)")
    p.add_argument("--work", type=Path, default=Path("/tmp/maskdiff_parity"), help="scratch folder for data, checkpoints, conversions")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (default: 1,2,3)")
    for name, default in [("width", 64), ("depth", 4), ("heads", 4), ("cond-dim", 128), ("length", 64), ("batch", 32), ("steps", 400),
                          ("every", 100), ("warmup", 40), ("threads", 1), ("convert-steps", 40), ("val-rows", 128), ("passes", 2),
                          ("eval-batch", 32), ("eval-repeats", 5)]:
        p.add_argument(f"--{name}", type=int, default=default, help=f"(default: {default})")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, constant after warm-up (default: 1e-3)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout of both (MDLM's default 0.1)")
    p.add_argument("--match-mdlm", default="", help="comma-separated, what maskdiff does as MDLM does: time (the 'stratified' "
                   "sampler), warmup (lr k/W from k = 0), ema (EMA count from 1)")
    p.add_argument("--reuse-reference", default="", help="comma-separated --work folders of earlier runs with the same settings")
    p.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/parity_cpu_<time>.json)")
    p.add_argument("--replot", help="only redraw the figures (--figure) and the verdicts from result JSONs of this script "
                                    "(comma-separated: their seeds are pooled)")
    p.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "figures" / "parity_curves.png", help="PNG of the curves")
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.match_mdlm, args.reuse_reference = args.match_mdlm.split(",") if args.match_mdlm else [], [Path(x) for x in args.reuse_reference.split(",") if x]
    if set(args.match_mdlm) - {"time", "warmup", "ema"}:
        p.error(f"unknown --match-mdlm {sorted(set(args.match_mdlm) - {'time', 'warmup', 'ema'})}; choose from: time, warmup, ema")
    if args.peers is None and args.replot is None:
        p.error("--peers PATH is required (the set-up peer harness)")
    if set(args.parts) - {"convert", "curves"}:
        p.error(f"unknown part(s) {sorted(set(args.parts) - {'convert', 'curves'})}; choose from: convert, curves")
    return args


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from common import git_commit, machine_info, write_result

    if args.replot:
        per_seed = {}
        for path in args.replot.split(","):
            per_seed.update(json.loads(Path(path).read_text())["curves"]["per_seed"])
        table = verdicts(per_seed)
        print("wrote", *plot(per_seed, table, args.figure))
        print_table(table)
        return
    torch.set_num_threads(args.threads)
    ref = Reference(args.peers.resolve(), args.threads)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or HERE / "results" / f"parity_cpu_{stamp}.json"
    result: Dict[str, Any] = {"benchmark": "parity", "started_utc": stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine_info("cpu"), "commit": git_commit(), "reference": {"mdlm_commit": ref.commit, "harness": str(ref.peers)},
                              "config": {k: str(v) if isinstance(v, Path) else [str(x) for x in v] if k == "reuse_reference" else v
                                         for k, v in vars(args).items() if k not in ("out", "figure")}}
    if "convert" in args.parts:
        result["convert"] = part_convert(args, ref, args.work)
        write_result("parity", "cpu", result, out)
        print(json.dumps({k: v for k, v in result["convert"].items() if k != "train_losses"}, indent=1))

    def save(per_seed):
        result["curves"] = {"per_seed": per_seed, "table": verdicts(per_seed)}
        write_result("parity", "cpu", result, out)

    if "curves" in args.parts:
        per_seed = part_curves(args, ref, args.work, save)
        save(per_seed)
        plot(per_seed, result["curves"]["table"], args.figure)
        print_table(result["curves"]["table"])
    result["finished_utc"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(f"saved {write_result('parity', 'cpu', result, out)}")


if __name__ == "__main__":
    main()
