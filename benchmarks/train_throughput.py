"""Training throughput: seconds per step, tokens/s, achieved FLOP/s and MFU of a full training step.

A step is what ``maskdiff.train`` does per optimizer step without data loading, EMA or logging:
forward of SUBSDenoiser(DiT) through ``continuous_diffusion_term`` (linear schedule, stratified t),
backward, gradient clipping at 1.0 and an AdamW step (``make_optimizer``), then reading the loss.
Model FLOPs per step are ``DiT.flops_per_token(L) * B * L`` (6 N + attention, forward + backward);
MFU divides the achieved FLOP/s by a matmul peak MEASURED in the same run, on the same device, dtype
and thread count (best of a few large square matmuls), not by a datasheet figure.

    .venv/bin/python benchmarks/train_throughput.py                       # baseline,tiny on CUDA if present, else CPU
    .venv/bin/python benchmarks/train_throughput.py --configs small --steps 3 --warmup 1
    .venv/bin/python benchmarks/train_throughput.py --device cuda --dtype bf16 --compile
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
try:
    import maskdiff  # noqa: F401  (the editable install)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import git_commit, machine_info, write_result  # noqa: E402

from maskdiff.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from maskdiff.loss import continuous_diffusion_term, low_discrepancy_times  # noqa: E402
from maskdiff.pipeline import build_denoiser, build_schedule  # noqa: E402
from maskdiff.presets import small, tiny  # noqa: E402
from maskdiff.step import make_optimizer  # noqa: E402

DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Bench:
    """One benchmark configuration: a run configuration plus the vocabulary size it is built with."""

    name: str
    description: str
    vocab_size: int
    config: RunConfig
    cpu_steps: int
    """Default timed steps on CPU (--steps overrides); on CUDA the default is 50."""
    cpu_warmup: int
    """Default warm-up steps on CPU (--warmup overrides); on CUDA the default is 10."""


def _baseline() -> Bench:
    cfg = RunConfig(
        preset="custom",
        model=ModelConfig(width=256, depth=4, heads=4),
        data=DataConfig(form="chars", length=256),
        train=TrainConfig(batch_size=16, threads=2),
    )
    return Bench("baseline", "byte-sized vocab 257, L=256, 4 x 256, 4 heads, batch 16", 257, cfg, 20, 3)


def _tiny() -> Bench:
    return Bench("tiny", "the tiny preset: text8 vocab 27, L=128, 4 x 128, 4 heads, batch 32", 27, tiny(), 20, 3)


def _small() -> Bench:
    cfg = small()
    cfg.train.batch_size = 8  # the preset's 256 is for a GPU; 8 keeps a CPU step to seconds
    return Bench("small", "MDLM small (the small preset): text8 vocab 27, L=256, 12 x 768, 12 heads, batch 8", 27, cfg, 3, 1)


CONFIGS: Dict[str, Callable[[], Bench]] = {"baseline": _baseline, "tiny": _tiny, "small": _small}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> Dict[str, Any]:
    """FLOP/s of an (n, n) @ (n, n) matmul in ``dtype``: best and median of ``repeats`` timings.

    On CUDA each timing covers 10 back-to-back matmuls so launch overhead does not count.
    """
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    inner = 10 if device.type == "cuda" else 1
    for _ in range(2):  # warm-up: thread pool, cuBLAS heuristics
        torch.mm(a, b)
    _sync(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        _sync(device)
        seconds.append((time.perf_counter() - start) / inner)
    flops = 2.0 * n**3
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "n": n,
        "repeats": repeats,
        "seconds": seconds,
        "flops_per_s_best": flops / min(seconds),
        "flops_per_s_median": flops / statistics.median(seconds),
    }


def make_batches(bench: Bench, device: torch.device, count: int, seed: int = 0) -> List[Dict[str, torch.Tensor]]:
    """``count`` random batches (x0, stratified t, mask uniforms), drawn once before timing."""
    B, L, V = bench.config.train.batch_size, bench.config.data.length, bench.vocab_size
    t_min = bench.config.diffusion.t_min
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        x0 = torch.randint(0, V, (B, L), generator=gen)  # (B, L)
        u = float(torch.rand((), generator=gen, dtype=torch.float64))
        t = low_discrepancy_times(B, u, t_min)  # (B,)
        noise = torch.rand((B, L), generator=gen, dtype=torch.float64)  # (B, L) mask uniforms
        batches.append({"x0": x0.to(device), "t": t.to(device), "noise": noise.to(device)})
    return batches


def run_config(bench: Bench, args, device: torch.device, peak: Dict[str, Any]) -> Dict[str, Any]:
    cfg = bench.config
    B, L = cfg.train.batch_size, cfg.data.length
    steps = args.steps if args.steps is not None else (bench.cpu_steps if device.type == "cpu" else 50)
    warmup = args.warmup if args.warmup is not None else (bench.cpu_warmup if device.type == "cpu" else 10)
    if steps < 1 or warmup < 0:
        raise SystemExit(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")

    torch.manual_seed(cfg.train.seed)
    denoiser = build_denoiser(cfg, bench.vocab_size).to(device)
    denoiser.check_inputs = False  # as in the trainer
    net = denoiser.network
    optimizer = make_optimizer(net, cfg.train)
    schedule = build_schedule(cfg)
    if args.compile:
        denoiser.network = torch.compile(net)
    denoiser.train()
    t_min, tokens = cfg.diffusion.t_min, B * L
    grad_clip = cfg.train.grad_clip if cfg.train.grad_clip else float("inf")
    dtype = DTYPES[args.dtype]
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    )
    batches = make_batches(bench, device, count=4)

    def step(batch) -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            per_seq = continuous_diffusion_term(denoiser, batch["x0"], batch["t"], schedule, t_min=t_min, noise=batch["noise"])
        loss = per_seq.sum() / tokens  # nats per token, as the trainer's loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
        return float(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_seconds, losses = [], []
    for i in range(warmup):
        _sync(device)
        start = time.perf_counter()
        losses.append(step(batches[i % len(batches)]))
        _sync(device)
        warmup_seconds.append(time.perf_counter() - start)
    seconds = []
    for i in range(steps):
        _sync(device)
        start = time.perf_counter()
        losses.append(step(batches[(warmup + i) % len(batches)]))
        _sync(device)
        seconds.append(time.perf_counter() - start)
    if not all(math.isfinite(x) for x in losses):
        raise SystemExit(f"{bench.name}: the loss is not finite: {losses}")

    flops_per_token = net.flops_per_token(L)
    flops_per_step = flops_per_token * tokens
    median, mean = statistics.median(seconds), statistics.fmean(seconds)
    achieved = flops_per_step / median
    m = cfg.model
    result = {
        "name": bench.name,
        "description": bench.description,
        "config": {
            "vocab_size": bench.vocab_size,
            "length": L,
            "batch_size": B,
            "tokens_per_step": tokens,
            "width": m.width,
            "depth": m.depth,
            "heads": m.heads,
            "mlp_ratio": m.mlp_ratio,
            "cond_dim": m.cond_dim,
            "time_conditioned": m.time_conditioned,
            "dropout": m.dropout,
            "schedule": cfg.diffusion.schedule,
            "t_min": t_min,
            "optimizer": {"name": "AdamW", "lr": cfg.train.lr, "betas": [cfg.train.beta1, cfg.train.beta2], "weight_decay": cfg.train.weight_decay},
            "grad_clip": cfg.train.grad_clip,
            "device": str(device),
            "dtype": args.dtype,
            "autocast": dtype != torch.float32,
            "threads": torch.get_num_threads(),
            "compile": args.compile,
            "steps": steps,
            "warmup": warmup,
            "run_config": cfg.to_dict(),
        },
        "parameters": net.num_parameters(exclude_embedding=False),
        "parameters_non_embedding": net.num_parameters(),
        "seconds_per_step": seconds,
        "warmup_seconds_per_step": warmup_seconds,
        "s_per_step_median": median,
        "s_per_step_mean": mean,
        "s_per_step_min": min(seconds),
        "s_per_step_max": max(seconds),
        "tokens_per_s": tokens / median,
        "model_flops_per_token": flops_per_token,
        "model_flops_per_step": flops_per_step,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak["flops_per_s_best"],
        "peak_dtype": peak["dtype"],
        "mfu": achieved / peak["flops_per_s_best"],
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }
    if device.type == "cuda":
        result["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    return result


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.2f} "


def print_table(results: List[Dict[str, Any]], peaks: Dict[str, Dict[str, Any]]) -> None:
    for p in peaks.values():
        print(f"matmul peak {p['dtype']} {p['n']}x{p['n']}: {_si(p['flops_per_s_best'])}FLOP/s best, "
              f"{_si(p['flops_per_s_median'])}FLOP/s median of {p['repeats']}")
    head = ["config", "params", "B x L", "steps", "s/step med", "s/step mean", "tokens/s", "FLOP/step", "FLOP/s", "MFU"]
    rows = [
        [
            r["name"],
            f"{r['parameters'] / 1e6:.2f}M",
            f"{r['config']['batch_size']} x {r['config']['length']}",
            str(r["config"]["steps"]),
            f"{r['s_per_step_median']:.4f}",
            f"{r['s_per_step_mean']:.4f}",
            f"{r['tokens_per_s']:,.0f}",
            _si(r["model_flops_per_step"]),
            _si(r["achieved_flops_per_s"]),
            f"{100 * r['mfu']:.1f}%",
        ]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="baseline,tiny", help=f"comma-separated, from: {', '.join(CONFIGS)} (default: baseline,tiny)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="float32, or bf16 autocast (default: float32)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: per config on CPU, 50 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default: per config on CPU, 10 on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (compilation falls in the warm-up)")
    p.add_argument("--peak-size", type=int, default=None, help="n of the n x n matmul peak (default: 2048 on CPU, 8192 on CUDA)")
    p.add_argument("--peak-repeats", type=int, default=5, help="timings of the matmul peak (default: 5)")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/train_throughput_<device>_<time>.json)")
    args = p.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown or not names:
        p.error(f"unknown config(s) {unknown}; choose from: {', '.join(CONFIGS)}")
    args.config_names = names
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        p.error(f"unknown device {args.device!r}; choose one of: cpu, cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available; use --device cpu")
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine_before = machine_info(args.device)  # load average before this run adds its own
    device = torch.device(args.device)
    n = args.peak_size or (8192 if device.type == "cuda" else 2048)
    peak_dtypes = ["float32"] + (["bf16"] if device.type == "cuda" or args.dtype == "bf16" else [])
    peaks = {d: measure_matmul_peak(device, DTYPES[d], n, args.peak_repeats) for d in peak_dtypes}
    results = [run_config(CONFIGS[name](), args, device, peaks[args.dtype]) for name in args.config_names]
    print_table(results, peaks)
    payload = {
        "benchmark": "train_throughput",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_before,
        "load_average_after_1_5_15min": machine_info(args.device)["load_average_1_5_15min"],
        "git": git_commit(),
        "matmul_peak": peaks,
        "mfu_against": f"matmul_peak[{args.dtype!r}].flops_per_s_best",
        "flops_formula": "DiT.flops_per_token(L) * B * L; flops_per_token = 6 N_non_embedding + 12 depth width L",
        "runs": results,
    }
    if device.type == "cuda":
        payload["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    path = write_result("train_throughput", args.device, payload, args.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
