"""maskdiff against MD4's reference code (JAX) at its text8 setting, scaled down: same network, same initial
weights, same windows, learning curves paired by seed.

    PYTHONPATH=src .venv/bin/python benchmarks/parity_md4.py --peers /path/to/peers            # 3 seeds
    PYTHONPATH=src .venv/bin/python benchmarks/parity_md4.py --peers PEERS --seeds 1 --gradient-check  # one step's gradient
    PYTHONPATH=src .venv/bin/python benchmarks/parity_md4.py --peers PEERS --control          # the reference against itself
    PYTHONPATH=src .venv/bin/python benchmarks/parity_md4.py --replot A.json[,B.json]          # figures and verdicts only

``--peers`` is a set-up copy of the project's peer harness (``STAGES=setup bash run_all.sh`` there) holding
MD4's reference under ``refs/md4`` and its JAX virtualenv ``.venv-jax``. The reference runs there, unchanged,
through ``parity_md4_reference.py`` (its model from its own text8 config with the sizes put in, its
``create_train_state`` and ``train_step``); nothing of it is copied into this repository. XLA runs on one
thread (``XLA_FLAGS``).

Configuration (MD4's text8: vocabulary 27, linear schedule, continuous time, t-conditioned adaLN-zero, glu
MLP, depth-scaled init, no dropout, AdamW b2 0.999 without clipping or weight decay, cosine learning rate
with linear warm-up, EMA 0.9999), scaled down: ``--depth`` x ``--heads`` x ``--feature-dim`` (width =
heads x feature_dim), L ``--length``, batch ``--batch``, ``--steps`` steps. Data: Shakespeare as text8
(a-z and space); step k of seed s trains on the windows maskdiff's data source draws for (s, k), handed to
the reference as arrays in that order; validation: the first ``--val-rows`` consecutive windows of the
validation split.

For each seed the reference initialises and writes its initial parameters; ``maskdiff convert md4`` turns
them into the starting point of maskdiff's run (``maskdiff.train``, backbone ``md4-transformer``). Every
checkpoint of both, raw weights and EMA, is scored with maskdiff's estimator on the same t and masks
(common random numbers); the reference's raw checkpoints also with MD4's own loss (``MD4.__call__``,
train=False). Paired difference (maskdiff - reference, bits per token), 95% t interval over seeds; parity
at a checkpoint: the interval includes 0 or lies within +-0.02. The last reference checkpoint's logits are
compared with the converted network's on masked validation rows at several t.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import parity  # noqa: E402
from parity import LN2, MARGIN, bits, estimates, verdicts  # noqa: E402  the MDLM comparison's statistics

XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
TIMES = [0.0, 0.05, 0.3, 0.7, 1.0]


class Reference(parity.Reference):
    """parity_md4_reference.py in the harness's JAX virtualenv, refs/md4 on the path, XLA on one thread (its
    results read as MDLM's driver's: parity.Reference.finish and run)."""

    def __init__(self, peers: Path):
        self.peers = peers
        missing = [p for p in ("refs/md4", ".venv-jax/bin/python") if not (peers / p).exists()]
        if missing:
            raise SystemExit(f"--peers {peers}: missing {', '.join(missing)}; set the harness up (STAGES=setup bash run_all.sh)")
        commit = peers / "refs" / "md4" / ".commit"
        self.commit = commit.read_text().strip() if commit.exists() else "unknown"

    def start(self, command: str, spec: Dict[str, Any]) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(self.peers / "refs" / "md4"), XLA_FLAGS=XLA_ONE_THREAD, OMP_NUM_THREADS="1")
        cmd = [str(self.peers / ".venv-jax" / "bin" / "python"), str(HERE / "parity_md4_reference.py"), command, "--spec", json.dumps(spec)]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.peers)


def ref_spec(args, seed: int, **extra) -> Dict[str, Any]:
    return dict(vocab=27, length=args.length, depth=args.depth, heads=args.heads, feature_dim=args.feature_dim, batch=args.batch,
                lr=args.lr, warmup=args.warmup, steps=args.steps, ema=args.ema, seed=seed, **extra)


def run_config(args, seed: int, pretrained: str = ""):
    """maskdiff's side: MD4's network and settings (see the module docstring)."""
    from maskdiff.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        preset="parity-md4",
        model=ModelConfig(backbone="md4-transformer", width=args.heads * args.feature_dim, depth=args.depth, heads=args.heads,
                          time_conditioned=True, pretrained=pretrained),
        data=DataConfig(corpus="shakespeare", form="text8", length=args.length),
        diffusion=DiffusionConfig(schedule="linear", t_min=1e-3, time_sampler="uniform", low_discrepancy=True),
        train=TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_steps=args.warmup, lr_schedule="cosine",
                          min_lr_ratio=0.0, weight_decay=0.0, beta1=0.9, beta2=0.999, grad_clip=0.0, ema_decay=args.ema, seed=seed,
                          threads=1, checkpoint_every=args.every, keep_checkpoints=args.steps // args.every + 1, log_every=1,
                          device="cpu", compile="off"),
    )


def write_data(args, seed: int, folder: Path) -> Dict[str, Path]:
    """The windows maskdiff's trainer draws at steps 0..steps-1 of ``seed`` (B rows each, in order) and the validation rows."""
    from maskdiff.data.chunking import contiguous_chunks
    from maskdiff.data.sources import WindowSource
    from maskdiff.modalities import build_tokenizer
    from maskdiff.modalities.text import split_stream
    from maskdiff.step import step_generator

    config = run_config(args, seed)
    tok = build_tokenizer(config)
    source = WindowSource(split_stream(config, tok, "train"), args.length)
    rows = torch.cat([source.draw(args.batch, step_generator(seed, k))[0] for k in range(args.steps)])
    val = contiguous_chunks(split_stream(config, tok, "validation"), args.length)[0][: args.val_rows]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"windows": folder / f"train_seed{seed}.npy", "val": folder / "val.npy"}
    np.save(paths["windows"], rows.numpy().astype(np.uint8))
    np.save(paths["val"], val.numpy().astype(np.uint8))
    return paths


def converted(npz: Path, out: Path, args):
    """``maskdiff convert md4 NPZ OUT``, loaded."""
    import maskdiff
    from maskdiff.convert_md4 import convert_md4

    return maskdiff.from_pretrained(convert_md4(npz, out, length=args.length, overwrite=True))


def logits_check(args, ref: Reference, npz: Path, val: torch.Tensor, work: Path, seed: int) -> Dict[str, Any]:
    """Largest |logit difference| between MD4's classifier and the converted network on validation rows with
    0-100% of positions masked, at the times TIMES."""
    gen = torch.Generator().manual_seed(seed)
    x = val[:10].clone()
    for i, rate in zip(range(len(x)), [0.0, 0.15, 0.5, 0.85, 1.0] * 2):
        x[i][torch.rand(args.length, generator=gen) < rate] = 27
    np.save(work / "inputs.npy", x.numpy().astype(np.int32))
    ref.run("logits", ref_spec(args, seed, params=str(npz), inputs=str(work / "inputs.npy"), times=TIMES, out=str(work / "ref_logits.npz")))
    theirs = np.load(work / "ref_logits.npz")
    pipe = converted(npz, work / "converted", args)
    out = {}
    for t in TIMES:
        with torch.no_grad():
            ours = pipe.objective.network(x, torch.full((x.shape[0],), t))
        ref_t = torch.from_numpy(theirs[str(t)])
        out[str(t)] = {"max_abs_logit_difference": float((ours - ref_t).abs().max()), "max_abs_logit": float(ref_t.abs().max())}
    return out


def part_curves(args, ref: Reference, work: Path, save) -> Dict[int, Any]:
    import maskdiff
    from maskdiff.train import train

    per_seed: Dict[int, Any] = {}
    for seed in args.seeds:
        data = write_data(args, seed, work / "data")
        val = torch.as_tensor(np.load(data["val"]).astype(np.int64))
        refdir, mddir = work / f"ref_seed{seed}", work / f"maskdiff_seed{seed}"
        for folder in (refdir, mddir):
            shutil.rmtree(folder, ignore_errors=True)  # a fresh run, never a resumed one
        t0 = time.time()
        proc = ref.start("train", ref_spec(args, seed, every=args.every, out=str(refdir), windows=str(data["windows"])))
        while not (refdir / "init.npz").exists():
            if proc.poll() is not None:
                Reference.finish(proc)
            time.sleep(1)
        time.sleep(2)
        from maskdiff.convert_md4 import convert_md4

        init = convert_md4(refdir / "init.npz", work / f"init_seed{seed}", length=args.length, overwrite=True)
        torch.set_num_threads(1)
        train(run_config(args, seed, pretrained=str(init)), mddir, progress=False, log=lambda *a, **k: None)
        md_seconds = time.time() - t0
        ref_train = Reference.finish(proc)
        ref_seconds = time.time() - t0
        steps = list(range(args.every, args.steps + 1, args.every))
        own = ref.run("eval", ref_spec(args, seed, params=[str(refdir / f"step{k}.npz") for k in steps], val=str(data["val"]),
                                       eval_batch=min(args.eval_batch, len(val)), eval_seeds=[0, 1]))
        rows = []
        for k, own_k in zip(steps, own["runs"]):
            row: Dict[str, Any] = {"step": k, "reference_own_loss_bits": own_k["bits_per_token"]}
            for weights in ("raw", "ema"):
                theirs_npz = refdir / f"step{k}{'_ema' if weights == 'ema' else ''}.npz"
                ours = estimates(maskdiff.load(mddir, checkpoint=mddir / "checkpoints" / f"step_{k:08d}", ema=weights == "ema"),
                                 val, 1000 + k, args.passes)
                theirs = estimates(converted(theirs_npz, work / "tmp", args), val, 1000 + k, args.passes)
                d = (ours - theirs) / args.length / LN2  # per-row paired difference, bits per token
                suffix = "" if weights == "raw" else "_ema"
                row.update({f"maskdiff_bits{suffix}": bits(ours, args.length), f"reference_bits{suffix}": bits(theirs, args.length),
                            f"difference{suffix}": float(d.mean()), f"difference_se_rows{suffix}": float(d.std() / math.sqrt(d.numel()))})
            rows.append(row)
            print(f"seed {seed} step {k}: raw maskdiff {row['maskdiff_bits']:.4f} reference {row['reference_bits']:.4f} "
                  f"(MD4's own loss {np.mean(row['reference_own_loss_bits']):.4f}); EMA maskdiff {row['maskdiff_bits_ema']:.4f} "
                  f"reference {row['reference_bits_ema']:.4f} bits/token", flush=True)
        md_log = [json.loads(line) for line in (mddir / "log.jsonl").read_text().splitlines() if line.strip()]
        per_seed[seed] = {"checkpoints": rows, "reference_train": ref_train, "maskdiff_log": md_log,
                          "logits": logits_check(args, ref, refdir / f"step{args.steps}.npz", val, work, seed),
                          "wall_seconds_both_training": max(md_seconds, ref_seconds)}
        save(per_seed)
    return per_seed


def part_control(args, ref: Reference, work: Path) -> Dict[int, Any]:
    """The spread between two runs of one implementation: for each seed, MD4's reference trains again from the
    same initial weights on the same windows with other draws of t and masks (``noise_seed`` = 1000 + seed),
    and both of its runs are scored as above (raw weights, common random numbers). The main run of the seed
    (its ``ref_seed{s}`` folder under ``--work``) must exist."""
    import maskdiff

    per_seed: Dict[int, Any] = {}
    for seed in args.seeds:
        data = write_data(args, seed, work / "data")
        val = torch.as_tensor(np.load(data["val"]).astype(np.int64))
        first, again = work / f"ref_seed{seed}", work / f"ref_seed{seed}_noise"
        if not (first / f"step{args.steps}.npz").is_file():
            raise SystemExit(f"{first} has no step{args.steps}.npz: run the comparison of seed {seed} first (same --work)")
        shutil.rmtree(again, ignore_errors=True)
        trained = ref.run("train", ref_spec(args, seed, every=args.every, out=str(again), windows=str(data["windows"]), noise_seed=1000 + seed))
        rows = []
        for k in range(args.every, args.steps + 1, args.every):
            a = estimates(converted(again / f"step{k}.npz", work / "tmp", args), val, 1000 + k, args.passes)
            b = estimates(converted(first / f"step{k}.npz", work / "tmp", args), val, 1000 + k, args.passes)
            rows.append({"step": k, "maskdiff_bits": bits(a, args.length), "reference_bits": bits(b, args.length),
                         "difference": float(((a - b) / args.length / LN2).mean())})
            print(f"control seed {seed} step {k}: reference, other noise {rows[-1]['maskdiff_bits']:.4f}; reference {rows[-1]['reference_bits']:.4f}",
                  flush=True)
        per_seed[seed] = {"checkpoints": rows, "reference_train": trained}
    return per_seed


def gradient_check(args, ref: Reference, npz: Path, val: torch.Tensor, work: Path) -> Dict[str, Any]:
    """One training step's gradient, both sides, at the same weights (``npz``), rows, t and masks: MD4's own loss
    code (``grad``) against maskdiff's objective (``train_loss``, the trainer's normalisation). MD4's loss is in
    bits and weights t by (1 - 2e-4) / ((1 - 2e-4) t + 1e-4), maskdiff's in nats by (1 - t_min) / t; each
    side's gradient is divided by its own factor before they are compared (t >= 0.1 here)."""
    from maskdiff.convert_md4 import md4_sizes, md4_state_dict, read_npz

    gen = torch.Generator().manual_seed(0)
    x = val[: args.batch].clone()
    t = 0.1 + 0.9 * torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
    mask = torch.rand(x.shape, generator=gen, dtype=torch.float64) < t[:, None]
    for name, value in (("x", x.numpy().astype(np.int32)), ("t", t.numpy().astype(np.float32)), ("mask", mask.numpy())):
        np.save(work / f"grad_{name}.npy", value)
    ref_out = ref.run("grad", ref_spec(args, 0, params=str(npz), x=str(work / "grad_x.npy"), t=str(work / "grad_t.npy"),
                                       mask=str(work / "grad_mask.npy"), out=str(work / "grad_ref.npz")))
    eps, t_min = 1e-4, 1e-3
    md4_weight = (1 - 2 * eps) / ((1 - 2 * eps) * t + eps)
    ours_weight = (1 - t_min) / t
    pipe = converted(npz, work / "grad_converted", args)
    objective = pipe.objective.train()
    noise = torch.where(mask, torch.full_like(t[:, None].expand_as(mask), 1.0 - 1e-12), torch.zeros_like(mask, dtype=torch.float64))
    # the same t enter the network on both sides, but each loss weights rows by its own w(t): rescale maskdiff's rows to MD4's
    per_row, _ = objective.train_loss(x, t.float(), [noise])
    loss = (per_row * (md4_weight / ours_weight).float()).sum() / (x.numel() * LN2)
    objective.zero_grad()
    loss.backward()
    theirs = read_npz(work / "grad_ref.npz")
    theirs = md4_state_dict(theirs, md4_sizes(theirs))
    grads = dict(objective.network.named_parameters())
    rel = {name: float((grads[name].grad - g).norm() / g.norm().clamp_min(1e-30)) for name, g in theirs.items()}
    worst = max(rel, key=rel.get)
    return {"loss_bits_per_token": {"maskdiff": float(loss.detach()), "reference": ref_out["loss_bits_per_token"]},
            "largest_relative_gradient_difference": {"tensor": worst, "value": rel[worst]}, "relative_by_tensor": rel}


def ema_table(per_seed) -> list:
    """verdicts() on the EMA columns."""
    renamed = {s: {"checkpoints": [{"step": r["step"], "difference": r["difference_ema"], "maskdiff_bits": r["maskdiff_bits_ema"],
                                    "reference_bits": r["reference_bits_ema"]} for r in res["checkpoints"]]}
               for s, res in per_seed.items()}
    return verdicts(renamed)


def plot(per_seed, table, path: Path) -> list:
    """Two PNGs: every seed's curves (``path``) and the paired difference with its interval (``*_difference.png``)."""
    from maskdiff.visualize import save_line_chart

    series = {}
    for seed, res in sorted(per_seed.items()):
        for who, key in (("maskdiff", "maskdiff_bits"), ("MD4 reference", "reference_bits")):
            series[f"{who}, seed {seed}"] = [(r["step"], r[key]) for r in res["checkpoints"]]
    first = save_line_chart(series, path, title="validation NELBO, raw weights (maskdiff's estimator, same t and masks)",
                            xlabel="step", ylabel="bits per token")
    diff = {"mean difference": [(r["step"], r["difference_bits"]["mean"]) for r in table]}
    bands = None
    if table and table[0]["difference_bits"]["ci95"][0] is not None:
        bands = {"mean difference": [(r["step"], *r["difference_bits"]["ci95"]) for r in table]}
    second = save_line_chart(diff, path.with_name(path.stem + "_difference.png"), xlabel="step", ylabel="bits per token",
                             title="maskdiff - MD4 reference, paired by seed (95% t interval over seeds)",
                             hlines={"+0.02": MARGIN, "0": 0.0, "-0.02": -MARGIN}, bands=bands)
    return [first, second]


def print_table(name: str, table) -> None:
    print(f"{name}:")
    for r in table:
        lo, hi = r["difference_bits"]["ci95"]
        print(f"  step {r['step']}: maskdiff {r['maskdiff_bits']['mean']:.4f} reference {r['reference_bits']['mean']:.4f} "
              f"difference {r['difference_bits']['mean']:+.4f}, 95% CI {'-' if lo is None else f'{lo:+.4f} .. {hi:+.4f}'}, per seed "
              f"{', '.join(f'{v:+.3f}' for v in r['difference_bits']['values'])}: {r['verdict']}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=Path, help="the set-up peer harness (refs/md4, .venv-jax); required unless --replot")
    p.add_argument("--work", type=Path, default=Path("/tmp/maskdiff_parity_md4"), help="scratch folder for data, checkpoints, conversions")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (default: 1,2,3)")
    for name, default in [("depth", 4), ("heads", 4), ("feature-dim", 32), ("length", 64), ("batch", 32), ("steps", 300),
                          ("every", 100), ("warmup", 30), ("val-rows", 128), ("passes", 2), ("eval-batch", 32)]:
        p.add_argument(f"--{name}", type=int, default=default, help=f"(default: {default})")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3; MD4's text8: 3e-4 over 1M steps)")
    p.add_argument("--ema", type=float, default=0.9999, help="EMA rate of both (MD4's text8: 0.9999)")
    p.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/parity_md4_cpu_<time>.json)")
    p.add_argument("--control", action="store_true", help="instead of the comparison: the reference against itself with other draws "
                                                           "of t and masks (needs the comparison's --work)")
    p.add_argument("--gradient-check", action="store_true", help="instead of the comparison: one step's gradient of both at the "
                                                                  "last checkpoint of the first seed's reference run (needs --work)")
    p.add_argument("--replot", help="only redraw the figures and the verdicts from result JSONs of this script (comma-separated: seeds pooled)")
    p.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "figures" / "parity_md4_curves.png", help="PNG of the curves")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.peers is None and args.replot is None:
        p.error("--peers PATH is required (the set-up peer harness)")
    return args


def main(argv=None):
    args = parse_args(argv)
    from common import git_commit, machine_info, write_result

    if args.replot:
        per_seed = {}
        for path in args.replot.split(","):
            per_seed.update(json.loads(Path(path).read_text())["curves"]["per_seed"])
        table = verdicts(per_seed)
        print("wrote", *plot(per_seed, table, args.figure))
        print_table("raw weights", table)
        print_table("EMA", ema_table(per_seed))
        return
    torch.set_num_threads(1)
    ref = Reference(args.peers.resolve())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or HERE / "results" / f"parity_md4_cpu_{stamp}.json"
    result: Dict[str, Any] = {"benchmark": "parity_md4", "started_utc": stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine_info("cpu"), "commit": git_commit(),
                              "reference": {"md4_commit": ref.commit, "harness": str(ref.peers), "xla_flags": XLA_ONE_THREAD},
                              "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out", "figure")}}

    if args.gradient_check:
        seed = args.seeds[0]
        val = torch.as_tensor(np.load(write_data(args, seed, args.work / "data")["val"]).astype(np.int64))
        result["gradient_check"] = gradient_check(args, ref, args.work / f"ref_seed{seed}" / f"step{args.steps}.npz", val, args.work)
        print(json.dumps({k: v for k, v in result["gradient_check"].items() if k != "relative_by_tensor"}, indent=1))
        print(f"saved {write_result('parity_md4', 'cpu', result, out)}")
        return
    if args.control:
        control = part_control(args, ref, args.work)
        result["control"] = {"per_seed": control, "table": verdicts(control)}
        print_table("reference (other noise) - reference", result["control"]["table"])
        print(f"saved {write_result('parity_md4', 'cpu', result, out)}")
        return

    def save(per_seed):
        result["curves"] = {"per_seed": per_seed, "table": verdicts(per_seed), "table_ema": ema_table(per_seed)}
        write_result("parity_md4", "cpu", result, out)

    per_seed = part_curves(args, ref, args.work, save)
    save(per_seed)
    plot(per_seed, result["curves"]["table"], args.figure)
    print_table("raw weights", result["curves"]["table"])
    print_table("EMA", result["curves"]["table_ema"])
    for seed, res in per_seed.items():
        print(f"seed {seed} logits:", {t: f"{v['max_abs_logit_difference']:.2e} of {v['max_abs_logit']:.2f}" for t, v in res["logits"].items()})
    result["finished_utc"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(f"saved {write_result('parity_md4', 'cpu', result, out)}")


if __name__ == "__main__":
    main()
