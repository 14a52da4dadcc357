"""maskdiff against BD3-LM's reference code: a block-diffusion checkpoint it trains and writes, converted.

    PYTHONPATH=src .venv/bin/python benchmarks/parity_bd3lm.py --peers /path/to/peers --ref /path/to/bd3lms

``--ref`` is an extracted snapshot of github:kuleshov-group/bd3lms (``git archive``; a ``.commit`` file
beside it names the commit). ``--peers`` is the set-up peer harness of benchmarks/parity.py: its
virtualenv ``.venv`` (torch 2.13.0 CPU, Lightning 2.2, hydra) runs the reference and its ``shims/``
stand in for ``timm``. The reference runs unchanged through ``parity_bd3lm_reference.py`` (its
LightningModule with ``algo=bd3lm`` and the ``sdpa`` attention backend, Lightning's Trainer); nothing of
it is copied into this repository. Data as benchmarks/parity.py: Shakespeare as bytes (vocabulary 256,
the mask id 256), training windows drawn by maskdiff's data source for (seed, step), validation = the
first ``--val-rows`` consecutive windows of the validation split.

The reference trains ``--steps`` steps with block size ``--block-size`` and saves its ``.ckpt``;
``maskdiff convert bd3lm`` reads it (EMA and raw weights), and the folder its Hugging Face class writes
(``models/hf``, EMA weights copied in as its ``push_to_hf.py`` does). Figures: the largest difference between the
reference backbone's logits on [x_t, x_0] and the converted network's ``two_stream`` logits (and SUBS
log-probabilities at the masks); the reference's own validation NELBO (``Trainer.validate``, ``val/nll``)
over ``--eval-repeats`` seeds against maskdiff's estimate of the same quantity and its whole block NELBO,
each a 95% t interval over repeats; samples drawn with maskdiff's block sampler from the converted model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from parity import LN2, Reference, bits, estimates, t_interval, write_data  # noqa: E402


class BD3LMReference:
    """parity_bd3lm_reference.py in the harness's virtualenv, with its shims and the BD3-LM snapshot on the path."""

    def __init__(self, peers: Path, ref: Path, threads: int):
        missing = [str(p) for p in (peers / "shims", peers / ".venv" / "bin" / "python", ref / "diffusion.py") if not p.exists()]
        if missing:
            raise SystemExit(f"missing {', '.join(missing)}; set the harness up and extract kuleshov-group/bd3lms into --ref")
        self.peers, self.ref, self.threads = peers, ref, threads
        commit = ref / ".commit"
        self.commit = commit.read_text().strip() if commit.exists() else "unknown"

    def run(self, command: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        env = dict(os.environ, PYTHONPATH=f"{self.peers / 'shims'}:{self.ref}", OMP_NUM_THREADS=str(self.threads))
        cmd = [str(self.peers / ".venv" / "bin" / "python"), str(HERE / "parity_bd3lm_reference.py"), command,
               "--spec", json.dumps(dict(spec, threads=self.threads))]
        return Reference.finish(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.ref))


def ref_spec(args, **extra) -> Dict[str, Any]:
    return dict(vocab=256, width=args.width, depth=args.depth, heads=args.heads, cond_dim=args.cond_dim, length=args.length,
                block_size=args.block_size, dropout=args.dropout, ema=0.9999, lr=args.lr, warmup=args.warmup, batch=args.batch,
                seed=args.seed, **extra)


def convert(ckpt: Path, out: Path, args, ema: bool = True):
    """``maskdiff convert bd3lm CKPT OUT --allow-pickle --block-size N`` (EMA weights unless ``ema`` is False; a
    Hugging Face folder is read as safetensors), loaded."""
    import maskdiff
    from maskdiff.convert import convert_bd3lm

    return maskdiff.from_pretrained(convert_bd3lm(ckpt, out, block_size=args.block_size, heads=args.heads, length=args.length,
                                                  tokenizer="bytes", allow_pickle=True, overwrite=True, ema=ema))


def run(args, ref: BD3LMReference, work: Path) -> Dict[str, Any]:
    data = write_data(args, args.seed, args.steps, work / "data")
    ckdir = work / "reference"
    t0 = time.time()
    trained = ref.run("train", ref_spec(args, steps=args.steps, every=args.steps, out=str(ckdir), windows=str(data["windows"])))
    train_seconds = time.time() - t0
    ckpt = ckdir / f"step{args.steps}.ckpt"
    val = torch.as_tensor(np.load(data["val"]).astype(np.int64))
    # inputs: validation rows (x_0) with 0%, 15%, 50%, 85% and 100% of positions masked (x_t)
    gen = torch.Generator().manual_seed(0)
    x0 = val[:10].clone()
    x_t = x0.clone()
    for i, rate in enumerate([0.0, 0.15, 0.5, 0.85, 1.0] * 2):
        x_t[i][torch.rand(args.length, generator=gen) < rate] = 256
    np.save(work / "inputs.npy", x_t.numpy())
    np.save(work / "clean.npy", x0.numpy())
    inputs = dict(inputs=str(work / "inputs.npy"), clean=str(work / "clean.npy"))
    hf = ref.run("hf", ref_spec(args, ckpt=str(ckpt), out=str(work / "hf"), **inputs))
    pipes = {"ema": convert(ckpt, work / "ema", args), "raw": convert(ckpt, work / "raw", args, ema=False),
             "hf_folder": convert(work / "hf", work / "from_hf", args)}
    logits = {}
    for name, pipe in pipes.items():
        weights = "raw" if name == "raw" else "ema"
        if name != "hf_folder":  # the hf folder holds the EMA weights: compared with the same reference run as "ema"
            ref.run("logits", ref_spec(args, ckpt=str(ckpt), out=str(work / f"ref_{weights}"), weights=weights, **inputs))
        ref_raw = torch.from_numpy(np.load(work / f"ref_{weights}.raw.npy"))
        ref_subs = torch.from_numpy(np.load(work / f"ref_{weights}.subs.npy"))
        with torch.no_grad():
            ours = pipe.objective.network.two_stream(x_t, x0)
            log_mu = pipe.denoiser(x_t, x0)
        masked = x_t == 256
        logits[name] = {"weights": weights, "max_abs_logit_difference": float((ours - ref_raw).abs().max()),
                        "logit_scale_max_abs": float(ref_raw.abs().max()),
                        "max_abs_log_prob_difference_at_masks": float((log_mu[masked] - ref_subs[masked][:, :256]).abs().max()),
                        "shape": list(ours.shape)}
        if name == "hf_folder":  # BD3-LM's own Hugging Face model on the same inputs
            hf_logits = torch.from_numpy(np.load(work / "hf.logits.npy"))
            logits[name]["max_abs_difference_to_its_hf_model"] = float((ours - hf_logits).abs().max())
    t0 = time.time()
    own = ref.run("eval", ref_spec(args, ckpt=str(ckpt), val=str(data["val"]), eval_batch=args.eval_batch,
                                   eval_seeds=list(range(args.eval_repeats))))
    ref_eval_seconds = time.time() - t0
    ref_nll = [r["val_nll"] / LN2 for r in own["runs"]]
    pipe = pipes["ema"]
    ours_nll = [bits(estimates(pipe, val, s, 1, diffusion_only=True), args.length) for s in range(args.eval_repeats)]
    ours_nelbo = [bits(estimates(pipe, val, s, 1), args.length) for s in range(args.eval_repeats)]
    samples = pipe.sample(num=4, steps=args.block_size, seed=0)
    return {"train_losses": trained["losses"], "reference_train_seconds": train_seconds, "reference_eval_seconds": ref_eval_seconds,
            "reference_state_dict_keys": trained["state_dict_keys"], "reference_checkpoint_files": sorted(os.listdir(ckdir)),
            "hf_files": hf["files"],
            "reference_clip_interval": own["runs"][0]["sampling_eps"], "logits": logits,
            "nelbo_bits_per_token": {"reference_val_nll": t_interval(ref_nll), "maskdiff_same_quantity": t_interval(ours_nll),
                                     "maskdiff_nelbo": t_interval(ours_nelbo)},
            "samples": list(samples.texts)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=Path, required=True, help="the set-up peer harness (shims/, .venv)")
    p.add_argument("--ref", type=Path, required=True, help="an extracted snapshot of kuleshov-group/bd3lms")
    p.add_argument("--work", type=Path, default=Path("/tmp/maskdiff_parity_bd3lm"), help="scratch folder for data, checkpoints, conversions")
    for name, default in [("width", 64), ("depth", 4), ("heads", 4), ("cond-dim", 128), ("length", 64), ("block-size", 4),
                          ("batch", 32), ("steps", 40), ("warmup", 40), ("threads", 1), ("val-rows", 512), ("eval-batch", 32),
                          ("eval-repeats", 20), ("seed", 1)]:
        p.add_argument(f"--{name}", type=int, default=default, help=f"(default: {default})")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, constant after warm-up (default: 1e-3)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout (BD3-LM's tiny model: 0.1)")
    p.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/parity_bd3lm_cpu_<time>.json)")
    args = p.parse_args(argv)
    if args.length % args.block_size:
        p.error(f"--block-size {args.block_size} must divide --length {args.length}")
    args.every = args.steps  # write_data's run config keeps one checkpoint
    return args


def main(argv=None):
    args = parse_args(argv)
    from common import git_commit, machine_info, write_result

    torch.set_num_threads(args.threads)
    ref = BD3LMReference(args.peers.resolve(), args.ref.resolve(), args.threads)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or HERE / "results" / f"parity_bd3lm_cpu_{stamp}.json"
    result: Dict[str, Any] = {"benchmark": "parity_bd3lm", "started_utc": stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine_info("cpu"), "commit": git_commit(),
                              "reference": {"bd3lms_commit": ref.commit, "harness": str(ref.peers)},
                              "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}}
    result["convert"] = run(args, ref, args.work)
    result["finished_utc"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(json.dumps({k: v for k, v in result["convert"].items() if k not in ("train_losses", "reference_state_dict_keys")}, indent=1))
    print(f"saved {write_result('parity_bd3lm', 'cpu', result, out)}")


if __name__ == "__main__":
    main()
