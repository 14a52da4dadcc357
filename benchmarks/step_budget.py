"""Where a CPU training step's time goes: its matrix products and attention timed alone, against the step.

The floor of a training step is the time of the work no implementation can skip at a given size: every
matrix product of the transformer (forward, and the two products of each backward: the input's
gradient and the weight's), attention forward and backward, and the output layer. This script times
each of them alone, at the step's exact shapes, sums them into the floor, and times the whole step (the
worker of ``vs_reference.py``: loss, backward, clipping, AdamW, EMA) in the same process, so

    step - floor = everything else: elementwise work (GELU, LayerNorm, rotary, residuals, the loss),
                   copies, the optimizer and Python.

Two floors: every position computed to the end, and ``masked_logits`` (the last block after its attention
and the output layer at the masked positions only, ``--masked-fraction`` of them; about half with the
loglinear schedule and stratified t).

    .venv/bin/python benchmarks/step_budget.py                      # the baseline of vs_reference.py
    .venv/bin/python benchmarks/step_budget.py --width 128 --length 128 --batch 32

Timings of products alone run with warm caches, so the floor is a little optimistic.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import maskdiff  # noqa: F401  (the editable install)
except ImportError:
    sys.path.insert(0, str(HERE.parent / "src"))

from common import git_commit, machine_info, write_result  # noqa: E402
from vs_reference import BASELINE, _worker_train, matmul_peak, model_flops_per_token  # noqa: E402


def seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after two untimed ones."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def linear_seconds(rows: int, fan_in: int, fan_out: int, repeats: int) -> float:
    """Forward, input-gradient and weight-gradient products of one linear layer over ``rows`` positions."""
    x, w, dy = torch.randn(rows, fan_in), torch.randn(fan_out, fan_in), torch.randn(rows, fan_out)
    return (seconds(lambda: x @ w.t(), repeats) + seconds(lambda: dy @ w, repeats)
            + seconds(lambda: dy.t() @ x, repeats))


def attention_seconds(batch: int, heads: int, length: int, head_dim: int, repeats: int) -> float:
    """scaled_dot_product_attention forward and backward (bidirectional, no mask)."""
    q, k, v = (torch.randn(batch, heads, length, head_dim, requires_grad=True) for _ in range(3))
    grad = torch.randn(batch, heads, length, head_dim)

    def run():
        out = F.scaled_dot_product_attention(q, k, v)
        torch.autograd.grad(out, (q, k, v), grad)

    return seconds(run, repeats)


def floors(a, repeats: int) -> Dict[str, float]:
    """Seconds of each kind of product per step, and the two floors."""
    tokens, W = a.batch * a.length, a.width
    masked_rows = max(1, round(a.masked_fraction * tokens))
    hidden = 4 * W
    part = {
        "qkv": linear_seconds(tokens, W, 3 * W, repeats),
        "proj": linear_seconds(tokens, W, W, repeats),
        "mlp": linear_seconds(tokens, W, hidden, repeats) + linear_seconds(tokens, hidden, W, repeats),
        "attention": attention_seconds(a.batch, a.heads, a.length, W // a.heads, repeats),
        "head": linear_seconds(tokens, W, a.vocab, repeats),
        "proj_masked": linear_seconds(masked_rows, W, W, repeats),
        "mlp_masked": linear_seconds(masked_rows, W, hidden, repeats) + linear_seconds(masked_rows, hidden, W, repeats),
        "head_masked": linear_seconds(masked_rows, W, a.vocab, repeats),
    }
    block = part["qkv"] + part["proj"] + part["mlp"] + part["attention"]
    last_masked = part["qkv"] + part["attention"] + part["proj_masked"] + part["mlp_masked"]
    part["floor_all"] = a.depth * block + part["head"]
    part["floor_masked"] = (a.depth - 1) * block + last_masked + part["head_masked"]
    return part


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("vocab", "length", "width", "depth", "heads", "batch"):
        p.add_argument(f"--{name}", type=int, default=BASELINE[name], help=f"(default: {BASELINE[name]}, the baseline)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--masked-fraction", type=float, default=0.5, help="share of positions masked, for the masked floor (default: 0.5)")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per product (default: 15)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per measurement (default: 10)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of floors and steps (default: 2)")
    p.add_argument("--out", help="JSON path (default: benchmarks/results/step_budget_cpu_<time>.json)")
    args = p.parse_args(argv)
    for name in ("vocab", "length", "width", "depth", "heads", "batch", "threads", "repeats", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0.0 < args.masked_fraction <= 1.0:
        p.error(f"--masked-fraction must be in (0, 1], got {args.masked_fraction}")
    if args.width % args.heads:
        p.error(f"--width {args.width} must split into {args.heads} heads")
    return args


def main(argv=None) -> Path:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sizes = dict(vocab=a.vocab, length=a.length, width=a.width, depth=a.depth, heads=a.heads, batch=a.batch)
    spec = dict(sizes, cond_dim=128, threads=a.threads, seed=1, dropout=0.0, steps=a.steps, warmup=2)
    rounds: List[Dict[str, float]] = []
    for r in range(a.rounds):
        row = {"round": r, "peak_flops_per_s": matmul_peak(2048, a.threads)["flops_per_s_best"]}
        row.update(floors(a, a.repeats))
        for masked in (True, False):
            steps = _worker_train(dict(spec, masked_logits=masked))["seconds_per_step"]
            row["step_masked" if masked else "step_all"] = statistics.median(steps)
        rounds.append(row)
        print(f"round {r + 1}/{a.rounds}: step {row['step_masked']:.3f} s (masked logits), {row['step_all']:.3f} s "
              f"(all); floor {row['floor_masked']:.3f} / {row['floor_all']:.3f} s", flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if k != "round"}
    flops = model_flops_per_token(**sizes) * a.batch * a.length
    print(f"\nmedians over {a.rounds} rounds (ms per step); float32 matmul peak {med['peak_flops_per_s'] / 1e9:.1f} GFLOP/s\n")
    print("| part | all positions | masked logits |\n|---|---|---|")
    print(f"| qkv products x {a.depth} | {a.depth * med['qkv'] * 1e3:.1f} | {a.depth * med['qkv'] * 1e3:.1f} |")
    print(f"| attention x {a.depth} | {a.depth * med['attention'] * 1e3:.1f} | {a.depth * med['attention'] * 1e3:.1f} |")
    last_proj_mlp = (med["proj_masked"] + med["mlp_masked"]) * 1e3
    print(f"| projection + MLP products | {a.depth * (med['proj'] + med['mlp']) * 1e3:.1f} | "
          f"{((a.depth - 1) * (med['proj'] + med['mlp'])) * 1e3 + last_proj_mlp:.1f} |")
    print(f"| output layer | {med['head'] * 1e3:.1f} | {med['head_masked'] * 1e3:.1f} |")
    print(f"| **floor** | {med['floor_all'] * 1e3:.1f} | {med['floor_masked'] * 1e3:.1f} |")
    print(f"| training step | {med['step_all'] * 1e3:.1f} | {med['step_masked'] * 1e3:.1f} |")
    print(f"| everything else | {(med['step_all'] - med['floor_all']) * 1e3:.1f} | {(med['step_masked'] - med['floor_masked']) * 1e3:.1f} |")
    print(f"\nmodel FLOPs of the step at the floor (all positions): {flops / med['floor_all'] / med['peak_flops_per_s']:.1%} of the peak")
    path = write_result("step_budget", "cpu", {
        "benchmark": "step_budget", "machine": machine_info("cpu"), "commit": git_commit(), "config": vars(a),
        "model_flops_per_step": flops, "medians_s": med, "rounds": rounds,
    }, a.out)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
