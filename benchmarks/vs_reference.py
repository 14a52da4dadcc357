"""maskdiff and MDLM's reference implementation side by side on this machine, interleaved, at one configuration.

One command, one table: training tokens/s and MFU (against a float32 matmul peak measured in the same
run) at the baseline configuration and at GPT-2 size, and the seconds and network calls per sample of
MDLM's ``ddpm_cache`` sampler against maskdiff's cached and first-hitting samplers.

    .venv/bin/python benchmarks/vs_reference.py --peers /path/to/peers
    .venv/bin/python benchmarks/vs_reference.py --peers /path/to/peers --ours 2f4187b,worktree --parts train
    .venv/bin/python benchmarks/vs_reference.py --smoke        # maskdiff only, tiny sizes, seconds (checks the script)

``--peers`` is a copy of the project's peer-benchmark harness (``peers/`` beside the repository: its
README says how to set it up) with the MDLM reference extracted under ``refs/mdlm`` and its virtualenv in
``.venv``. The reference runs there, unchanged, through the harness's ``mdlm_bench.py`` and CPU shims
(flash-attn replaced by PyTorch's SDPA); nothing of it is copied into this repository.

Every figure comes from its own fresh process (the reference in the harness's virtualenv; maskdiff in
this interpreter with ``PYTHONPATH`` set to the ``src`` of each revision in ``--ours``), and the
implementations take turns: within a round each measurement runs for every implementation, in an order
that rotates from round to round (A B C, B C A, ...), so slow phases of a shared machine fall on all of
them. Medians over rounds are reported, and each ratio is the median of the per-round ratios.

What is compared (defaults; every size is a flag):

- training: vocabulary 256 + mask, L 256, width 256, 4 layers, 4 heads, batch 16, float32, 2 threads,
  continuous-time SUBS loss with the loglinear schedule, gradient clipping at 1.0, AdamW, EMA 0.9999
  (what each implementation's trainer does per step), dropout 0; data and t drawn before timing.
  maskdiff as its CPU presets run (``model.masked_logits``: the output layer, and the last block after
  its attention, at the masked positions only; the same loss and gradients) and, in the row
  ``baseline-all``, with every position computed to the end as the reference does.
- GPT-2 size: vocabulary 50,257 + mask, L 1024, width 768, 12 layers, 12 heads, batch 2; maskdiff with
  its output layer at the masked positions only (``model.masked_logits``), the reference as it is.
- sampling: batch 16, L 256, 1024 steps, loglinear schedule, random weights (cost and network calls
  do not depend on what was learned), MDLM ``ddpm_cache`` (with its final noise-removal call) against
  maskdiff ``cached`` (same grid) and ``first-hitting`` (no grid).

MFU: model FLOPs per token, the same formula for both implementations, over the best float32 matmul
rate (an n x n product, best of 5, measured by this process before every round; the best over the
run). Model FLOPs per token = 6 (12 depth width^2 + width V) + 12 depth width L: every matrix product
a token goes through, forward and backward (3x forward), and the attention scores; the reference's
per-sequence adaLN conditioning and the rows maskdiff skips (output layer, last block) are not counted,
so the MFU ratio equals the tokens/s ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
REFERENCE = "mdlm-reference"
RESULT_TAG = "VS_REFERENCE_RESULT "

BASELINE = dict(vocab=256, length=256, width=256, depth=4, heads=4, batch=16, cond_dim=128)
GPT2 = dict(vocab=50257, length=1024, width=768, depth=12, heads=12, cond_dim=128)
SMOKE = dict(vocab=16, length=16, width=32, depth=2, heads=2, batch=4, cond_dim=32)


def model_flops_per_token(vocab: int, length: int, width: int, depth: int, **_) -> float:
    """Training FLOPs per token: 6 x the matrix-product weights a token meets + 12 depth width L (attention)."""
    return 6.0 * (12 * depth * width * width + width * vocab) + 12.0 * depth * width * length


# ----------------------------------------------------------------------------------------------- workers
# A worker runs in a fresh process with PYTHONPATH = <a revision's src>, measures one thing and prints
# one line RESULT_TAG + JSON. It uses only what maskdiff has had since the objectives registry, so it
# runs against earlier revisions too.


def _worker_train(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from maskdiff.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig
    from maskdiff.loss import low_discrepancy_times
    from maskdiff.objectives import build_objective
    from maskdiff.train import make_optimizer

    torch.set_num_threads(spec["threads"])
    B, L, V = spec["batch"], spec["length"], spec["vocab"]
    cfg = RunConfig(
        preset="custom",
        model=ModelConfig(width=spec["width"], depth=spec["depth"], heads=spec["heads"], cond_dim=spec["cond_dim"],
                          dropout=spec["dropout"], masked_logits=spec["masked_logits"]),
        data=DataConfig(form="chars", length=L),
        diffusion=DiffusionConfig(schedule="loglinear"),
        train=TrainConfig(batch_size=B, threads=spec["threads"], grad_clip=1.0, ema_decay=0.9999),
    )
    torch.manual_seed(spec["seed"])
    objective = build_objective(cfg, V)
    objective.train()
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = make_optimizer(objective, cfg.train)
    ema = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(spec["seed"])
    batches = []
    for _ in range(3):
        x0 = torch.randint(0, V, (B, L), generator=gen)
        u = float(torch.rand((), generator=gen, dtype=torch.float64))
        t = low_discrepancy_times(B, u, cfg.diffusion.t_min)
        noise = torch.rand((objective.noise_draws, B, L), generator=gen, dtype=torch.float64)
        batches.append((x0, t, noise))

    def step(batch) -> float:  # what maskdiff.train does per step, without data loading and logging
        x0, t, noise = batch
        optimizer.zero_grad(set_to_none=True)
        per_seq, _ = objective.train_loss(x0, t, noise)
        loss = per_seq.float().sum() / (B * L)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - 0.9999)
        return float(loss.detach())

    for i in range(spec["warmup"]):
        step(batches[i % 3])
    seconds, losses = [], []
    for i in range(spec["steps"]):
        start = time.perf_counter()
        losses.append(step(batches[i % 3]))
        seconds.append(time.perf_counter() - start)
    return {"seconds_per_step": seconds, "loss_first": losses[0], "loss_last": losses[-1],
            "parameters": sum(p.numel() for p in params)}


def _worker_sample(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from maskdiff import get_schedule
    from maskdiff.denoiser import SUBSDenoiser
    from maskdiff.networks.transformer import DiT
    from maskdiff.sampling import get_sampler

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    V, L = spec["vocab"], spec["length"]
    net = DiT(V, L, width=spec["width"], depth=spec["depth"], heads=spec["heads"], cond_dim=spec["cond_dim"])
    torch.nn.init.normal_(net.head.weight, std=0.02)  # not the zero (uniform-mu) initialisation
    denoise = SUBSDenoiser(net, V, max_length=L).eval()
    fn = get_sampler(spec["sampler"])
    gen = torch.Generator().manual_seed(spec["seed"])
    start = time.perf_counter()
    out = fn(denoise, get_schedule("loglinear"), (spec["batch"], L), steps=spec["steps"], generator=gen)
    seconds = time.perf_counter() - start
    nfe = out.nfe.tolist()
    return {"seconds": seconds, "nfe_mean": statistics.fmean(nfe), "nfe_max": max(nfe), "nfe_min": min(nfe),
            "masked_left": int((out.tokens == V).sum())}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = {"train": _worker_train, "sample": _worker_sample}[spec["kind"]](spec)
    print(RESULT_TAG + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------- the driver


def matmul_peak(n: int, threads: int, repeats: int = 5) -> Dict[str, Any]:
    """float32 FLOP/s of one n x n @ n x n product on this CPU: best and median of ``repeats``."""
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    for _ in range(2):
        torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    flops = 2.0 * n**3
    return {"n": n, "threads": threads, "seconds": seconds, "flops_per_s_best": flops / min(seconds),
            "flops_per_s_median": flops / statistics.median(seconds)}


class Ours:
    """maskdiff at one revision: 'worktree' (this checkout's src, uncommitted changes included) or a git
    revision, whose src is extracted with ``git archive`` into a temporary folder."""

    def __init__(self, rev: str, scratch: Path):
        self.rev = rev
        if rev == "worktree":
            self.src = REPO_ROOT / "src"
            self.commit = _git("rev-parse", "HEAD")
            self.dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        else:
            self.commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
            if not self.commit:
                raise SystemExit(f"--ours: {rev!r} is not a git revision of {REPO_ROOT} (or use 'worktree')")
            dest = scratch / self.commit[:12]
            dest.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "archive", self.commit, "src"], cwd=REPO_ROOT, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
            self.src = dest / "src"
            self.dirty = False
        self.name = f"maskdiff@{self.commit[:7]}" + ("+changes" if self.dirty else "")

    def run(self, spec: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        env = dict(os.environ, PYTHONPATH=str(self.src))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
        if proc.returncode or not lines:
            raise RuntimeError(f"{self.name} {spec['kind']} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1][len(RESULT_TAG):])


class Reference:
    """MDLM's reference through the harness's mdlm_bench.py, in the harness's virtualenv."""

    def __init__(self, peers: Path):
        self.peers = peers
        missing = [p for p in ("mdlm_bench.py", "shims", "refs/mdlm", ".venv/bin/python") if not (peers / p).exists()]
        if missing:
            raise SystemExit(f"--peers {peers}: missing {', '.join(missing)}; copy the project's peers/ harness there "
                             "and set it up as its README says (bash run_all.sh with STAGES=setup)")
        commit_file = peers / "refs" / "mdlm" / ".commit"
        self.commit = commit_file.read_text().strip() if commit_file.exists() else "unknown"
        self.name = REFERENCE

    def _run(self, args: List[str], timeout: float) -> List[Dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.jsonl"
            env = dict(os.environ, PYTHONPATH=f"{self.peers / 'shims'}:{self.peers / 'refs' / 'mdlm'}")
            cmd = [str(self.peers / ".venv" / "bin" / "python"), str(self.peers / "mdlm_bench.py"), "--out", str(out), *args]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=self.peers)
            if proc.returncode or not out.exists():
                raise RuntimeError(f"{self.name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]

    @staticmethod
    def _model_args(spec: Dict[str, Any]) -> List[str]:
        return ["--threads", str(spec["threads"]), "--seed", str(spec["seed"]), "--vocab", str(spec["vocab"]),
                "--seq-len", str(spec["length"]), "--hidden", str(spec["width"]), "--layers", str(spec["depth"]),
                "--heads", str(spec["heads"]), "--cond-dim", str(spec["cond_dim"])]

    def run(self, spec: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        if spec["kind"] == "train":
            (rec,) = self._run(["--mode", "train", *self._model_args(spec), "--dropout", str(spec["dropout"]),
                                "--batch", str(spec["batch"]), "--train-steps", str(spec["steps"]),
                                "--warmup", str(spec["warmup"]), "--grad-clip", "1.0", "--ema", "0.9999"], timeout)
            # mdlm_bench keeps the median, minimum and mean of the timed steps (not each one)
            return {"seconds_per_step": [rec["s_per_step_median"]], "s_per_step_min": rec["s_per_step_min"],
                    "s_per_step_mean": rec["s_per_step_mean"], "loss_first": rec["loss_first"],
                    "loss_last": rec["loss_last"], "parameters": rec["model"]["params_backbone"]}
        (rec,) = self._run(["--mode", "sample", *self._model_args(spec), "--dropout", "0.0",
                            "--samplers", spec["sampler"], "--sample-batch", str(spec["batch"]),
                            "--sample-steps", str(spec["steps"])], timeout)
        # the reference calls the network on the whole batch: every sample sees every call
        return {"seconds": rec["seconds"], "nfe_mean": rec["nfe_total"], "nfe_max": rec["nfe_total"],
                "nfe_min": rec["nfe_total"], "cache_hits": rec["cache_hits"], "masked_left": rec["masked_tokens_left"]}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def measurements(args) -> List[Dict[str, Any]]:
    """The list of (part, spec, which implementations) measured in every round."""
    common = dict(threads=args.threads, seed=args.seed, dropout=args.dropout)
    sizes = SMOKE if args.smoke else BASELINE
    out = []
    if "train" in args.parts:
        spec = dict(common, kind="train", **sizes, steps=args.train_steps, warmup=args.warmup, masked_logits=True)
        out.append({"part": "train", "label": "baseline", "spec": spec, "ours": "all", "reference": True})
        out.append({"part": "train", "label": "baseline-all", "spec": dict(spec, masked_logits=False), "ours": "all",
                    "reference": False})
    if "gpt2" in args.parts:
        g = dict(SMOKE, vocab=1000) if args.smoke else GPT2
        spec = dict(common, kind="train", **dict(g, batch=args.gpt2_batch), steps=args.gpt2_steps,
                    warmup=args.gpt2_warmup, masked_logits=True)
        out.append({"part": "gpt2", "label": "gpt2", "spec": spec, "ours": "all", "reference": True, "rounds": args.gpt2_rounds})
    if "sample" in args.parts:
        base = dict(common, kind="sample", **dict(sizes, batch=args.sample_batch), steps=args.sample_steps)
        for name in ("cached", "first-hitting"):
            out.append({"part": "sample", "label": name, "spec": dict(base, sampler=name), "ours": "all",
                        "reference": False, "rounds": args.sample_rounds})
        out.append({"part": "sample", "label": "ddpm_cache", "spec": dict(base, sampler="ddpm_cache"),
                    "ours": None, "reference": True, "rounds": args.sample_rounds})
    return out


def run_all(args, impls_ours: List[Ours], reference: Optional[Reference], save=None) -> Dict[str, Any]:
    """Every round, every measurement; ``save(rows, peaks)`` after each one, so a run cut short keeps its figures."""
    rows: List[Dict[str, Any]] = []
    peaks: List[Dict[str, Any]] = []
    plan = measurements(args)
    for r in range(args.rounds):
        peak = matmul_peak(args.peak_size, args.threads)
        peak["round"] = r
        peaks.append(peak)
        print(f"round {r + 1}/{args.rounds}: float32 matmul {args.peak_size}^3 best "
              f"{peak['flops_per_s_best'] / 1e9:.1f} GFLOP/s", flush=True)
        jobs = []
        for m in plan:
            if r >= m.get("rounds", args.rounds):
                continue
            if m["ours"] == "all":
                jobs += [(m, impl) for impl in impls_ours]
            if m["reference"] and reference is not None:
                jobs.append((m, reference))
        # take turns: the order of the implementations rotates from round to round, within each measurement
        by_part: Dict[str, List] = {}
        for m, impl in jobs:
            by_part.setdefault(m["part"], []).append((m, impl))
        for part_jobs in by_part.values():
            shift = r % len(part_jobs)
            for m, impl in part_jobs[shift:] + part_jobs[:shift]:
                start = time.time()
                result = impl.run(m["spec"], args.timeout)
                row = {"round": r, "part": m["part"], "label": m["label"], "impl": impl.name, "spec": m["spec"],
                       "load_average_1min": os.getloadavg()[0], "wall_s": time.time() - start, **result}
                if m["spec"]["kind"] == "train":
                    row["s_per_step_median"] = statistics.median(result["seconds_per_step"])
                    row["tokens_per_s"] = m["spec"]["batch"] * m["spec"]["length"] / row["s_per_step_median"]
                    print(f"  {m['label']:>13} {impl.name:<26} {row['s_per_step_median']:8.3f} s/step "
                          f"{row['tokens_per_s']:9,.0f} tokens/s  (load {row['load_average_1min']:.1f})", flush=True)
                else:
                    print(f"  {m['label']:>13} {impl.name:<26} {row['seconds']:8.1f} s  NFE/sample mean "
                          f"{row['nfe_mean']:.1f} max {row['nfe_max']}  (load {row['load_average_1min']:.1f})", flush=True)
                rows.append(row)
                if save is not None:
                    save(rows, peaks)
    return {"rows": rows, "peaks": peaks}


def summarise(rows: List[Dict[str, Any]], peak: float) -> List[Dict[str, Any]]:
    """One line per (part, label, implementation): medians over rounds and the median per-round ratio
    against the reference's line of the same part."""
    summary = []
    keys = []
    for row in rows:
        k = (row["part"], row["label"], row["impl"])
        if k not in keys:
            keys.append(k)
    for part, label, impl in keys:
        mine = [r for r in rows if (r["part"], r["label"], r["impl"]) == (part, label, impl)]
        spec = mine[0]["spec"]
        line: Dict[str, Any] = {"part": part, "label": label, "impl": impl, "rounds": len(mine)}
        if spec["kind"] == "train":
            fpt = model_flops_per_token(**spec)
            tps = statistics.median(r["tokens_per_s"] for r in mine)
            line.update(s_per_step=statistics.median(r["s_per_step_median"] for r in mine), tokens_per_s=tps,
                        model_flops_per_token=fpt, mfu=fpt * tps / peak,
                        per_round_tokens_per_s=[r["tokens_per_s"] for r in mine])
            ref = {r["round"]: r["tokens_per_s"] for r in rows if r["part"] == part and r["impl"] == REFERENCE}
            ratios = [r["tokens_per_s"] / ref[r["round"]] for r in mine if r["round"] in ref]
        else:
            secs = statistics.median(r["seconds"] for r in mine)
            line.update(seconds=secs, seconds_per_sample=secs / spec["batch"], nfe_mean=statistics.median(r["nfe_mean"] for r in mine),
                        nfe_max=max(r["nfe_max"] for r in mine), per_round_seconds=[r["seconds"] for r in mine])
            ref = {r["round"]: r["seconds"] for r in rows if r["part"] == part and r["impl"] == REFERENCE}
            ratios = [ref[r["round"]] / r["seconds"] for r in mine if r["round"] in ref]
        if ratios and impl != REFERENCE:
            line["speedup_vs_reference"] = statistics.median(ratios)
            line["per_round_speedup"] = ratios
        summary.append(line)
    return summary


def table(summary: List[Dict[str, Any]], peak: float) -> str:
    lines = [f"float32 matmul peak (best in this run): {peak / 1e9:.1f} GFLOP/s", "",
             "| part | implementation | s/step | tokens/s | MFU | x reference |", "|---|---|---|---|---|---|"]
    for s in summary:
        if "tokens_per_s" in s:
            x = f"{s['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in s else ("1" if s["impl"] == REFERENCE else "-")
            lines.append(f"| {s['label']} | {s['impl']} | {s['s_per_step']:.3f} | {s['tokens_per_s']:,.0f} | "
                         f"{100 * s['mfu']:.1f}% | {x} |")
    samples = [s for s in summary if "seconds" in s]
    if samples:
        lines += ["", "| sampler | implementation | seconds (batch) | s / sample | network calls / sample (mean, max) | x ddpm_cache |",
                  "|---|---|---|---|---|---|"]
        for s in samples:
            x = f"{s['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in s else ("1" if s["impl"] == REFERENCE else "-")
            lines.append(f"| {s['label']} | {s['impl']} | {s['seconds']:.1f} | {s['seconds_per_sample']:.2f} | "
                         f"{s['nfe_mean']:.1f}, {s['nfe_max']} | {x} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=Path, help="the set-up peer harness (mdlm_bench.py, shims/, refs/mdlm, .venv); "
                                              "required unless --no-reference or --smoke")
    p.add_argument("--no-reference", action="store_true", help="maskdiff only (e.g. to compare revisions)")
    p.add_argument("--ours", default="worktree",
                   help="comma-separated maskdiff revisions: 'worktree' (this checkout) or git revisions (default: worktree)")
    p.add_argument("--parts", default="train,gpt2,sample", help="comma-separated, from: train, gpt2, sample (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the training measurements (default: 3)")
    p.add_argument("--sample-rounds", type=int, default=1, help="rounds of the sampling measurements (default: 1; the "
                                                                  "reference's ddpm_cache takes minutes)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for everything (default: 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.0, help="training dropout of both (default: 0)")
    p.add_argument("--train-steps", type=int, default=10, help="timed steps per baseline measurement (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (default: 2)")
    p.add_argument("--gpt2-batch", type=int, default=2, help="batch of the GPT-2-size measurement (default: 2)")
    p.add_argument("--gpt2-rounds", type=int, default=2, help="rounds of the GPT-2-size measurement (default: 2)")
    p.add_argument("--gpt2-steps", type=int, default=2, help="timed steps per GPT-2-size measurement (default: 2)")
    p.add_argument("--gpt2-warmup", type=int, default=1, help="untimed steps before them (default: 1)")
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--sample-steps", type=int, default=1024)
    p.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmul peak (default: 2048)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before one measurement is given up (default: 3600)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, maskdiff only, one round: checks the script, no figures")
    p.add_argument("--out", help="JSON path (default: benchmarks/results/vs_reference_cpu_<time>.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in args.parts if x not in ("train", "gpt2", "sample")]
    if bad or not args.parts:
        p.error(f"unknown part(s) {bad}; choose from: train, gpt2, sample")
    if args.smoke:
        args.no_reference, args.rounds, args.sample_rounds, args.gpt2_rounds = True, 1, 1, 1
        args.train_steps, args.warmup, args.gpt2_steps, args.gpt2_warmup = 2, 1, 1, 0
        args.sample_batch, args.sample_steps, args.peak_size = 2, 32, 256
    if not args.no_reference and args.peers is None:
        p.error("--peers PATH is required (the set-up peer harness), or pass --no-reference")
    for name in ("rounds", "sample_rounds", "gpt2_rounds", "threads", "train_steps", "gpt2_steps", "gpt2_batch", "sample_batch", "sample_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> Optional[Path]:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return None
    sys.path.insert(0, str(HERE))
    from common import machine_info, write_result  # noqa: E402

    reference = None if args.no_reference else Reference(args.peers.resolve())
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or str(HERE / "results" / f"vs_reference_cpu_{stamp}.json")
    machine = machine_info("cpu")
    with tempfile.TemporaryDirectory() as scratch:
        ours = [Ours(rev.strip(), Path(scratch)) for rev in args.ours.split(",") if rev.strip()]

        def payload(rows, peaks, complete: bool) -> Dict[str, Any]:
            peak = max(p["flops_per_s_best"] for p in peaks)
            summary = summarise(rows, peak)
            return {
                "benchmark": "vs_reference",
                "complete": complete,
                "started_utc": started,
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": machine,
                "load_average_after_1_5_15min": list(os.getloadavg()),
                "implementations": [{"name": o.name, "revision": o.rev, "commit": o.commit, "uncommitted_changes": o.dirty}
                                    for o in ours]
                + ([{"name": reference.name, "commit": reference.commit, "harness": str(reference.peers)}] if reference else []),
                "config": {k: (v if not isinstance(v, Path) else str(v)) for k, v in vars(args).items() if k not in ("out", "worker")},
                "flops_formula": "6 (12 depth width^2 + width V) + 12 depth width L per token (both implementations)",
                "matmul_peak_float32": peaks,
                "peak_used": peak,
                "summary": summary,
                "rows": rows,
                "table_markdown": table(summary, peak),
                "smoke": args.smoke,
            }

        measured = run_all(args, ours, reference, save=lambda rows, peaks: write_result("vs_reference", "cpu", payload(rows, peaks, False), out))
        final = payload(measured["rows"], measured["peaks"], True)
    print("\n" + final["table_markdown"])
    path = write_result("vs_reference", "cpu", final, out)
    print(f"\nsaved {path}")
    return path


if __name__ == "__main__":
    main()
