"""Wall-clock and network calls (NFE) per sample for every sampler.

The comparison point of the project: vocabulary 257, L = 256, a 4 x 256 transformer (4 heads), batch 16,
T = 1024, 2 threads. The reference caching sampler (batch-global cache) makes about 1,008 calls there.
Goal: maskdiff's cached and first-hitting samplers make at most 256 calls per sample and are at least
4x faster than per-step ancestral sampling measured in the same run.

    .venv/bin/python benchmarks/sampling.py                     # the default grid (about 15 min on 2 cores)
    .venv/bin/python benchmarks/sampling.py --batches 16 --steps 1024 --samplers ancestral,cached,first-hitting

Weights are random (speed and NFE do not depend on what was learned; the caching sampler's NFE depends
on how many steps unmask something, which is a property of the schedule and the grid, not the model).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, machine_info, write_result  # noqa: E402

from maskdiff import get_schedule  # noqa: E402
from maskdiff.denoiser import SUBSDenoiser  # noqa: E402
from maskdiff.networks.transformer import DiT  # noqa: E402
from maskdiff.sampling import get_sampler  # noqa: E402


def build(vocab: int, length: int, width: int, depth: int, heads: int, device: str) -> SUBSDenoiser:
    torch.manual_seed(0)
    net = DiT(vocab, length, width=width, depth=depth, heads=heads)
    torch.nn.init.normal_(net.head.weight, std=0.02)  # not the all-uniform zero initialisation
    return SUBSDenoiser(net, vocab, max_length=length).to(device).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samplers", default="ancestral,cached,mean,first-hitting,confidence")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--steps", default="128,1024")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=257)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--schedule", default="linear")
    ap.add_argument("--skip-slow", action="store_true", default=True,
                    help="at T >= 1024 and batch > 1 run only ancestral, cached and first-hitting (the goal's comparison)")
    ap.add_argument("--all", dest="skip_slow", action="store_false", help="run every sampler at every size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    denoise = build(args.vocab, args.length, args.width, args.depth, args.heads, args.device)
    schedule = get_schedule(args.schedule)
    rows = []
    for batch in map(int, args.batches.split(",")):
        for steps in map(int, args.steps.split(",")):
            for name in args.samplers.split(","):
                if args.skip_slow and steps >= 1024 and batch > 1 and name in ("mean", "confidence"):
                    continue
                fn = get_sampler(name)
                gen = torch.Generator().manual_seed(0)
                start = time.perf_counter()
                out = fn(denoise, schedule, (batch, args.length), steps=steps, generator=gen, device=args.device)
                seconds = time.perf_counter() - start
                nfe = out.nfe.tolist()
                row = {
                    "sampler": name, "batch": batch, "steps": steps, "seconds": seconds,
                    "seconds_per_sample": seconds / batch, "nfe_mean": statistics.mean(nfe), "nfe_max": max(nfe),
                    "nfe_min": min(nfe),
                }
                rows.append(row)
                print(f"{name:>14} batch {batch:>2} T {steps:>4}: {seconds:8.1f} s  {seconds / batch:7.2f} s/sample  "
                      f"NFE mean {row['nfe_mean']:7.1f} max {row['nfe_max']:5d}", flush=True)
    # ratios against ancestral at the same batch and T, measured in this run
    for row in rows:
        base = next((r for r in rows if r["sampler"] == "ancestral" and r["batch"] == row["batch"] and r["steps"] == row["steps"]), None)
        if base:
            row["speedup_vs_ancestral"] = base["seconds"] / row["seconds"]
    print("\nspeed-up against ancestral in this run:")
    for row in rows:
        if "speedup_vs_ancestral" in row and row["sampler"] != "ancestral":
            print(f"  {row['sampler']:>14} batch {row['batch']:>2} T {row['steps']:>4}: {row['speedup_vs_ancestral']:.2f}x")
    payload = {
        "benchmark": "sampling",
        "machine": machine_info(args.device),
        "commit": git_commit(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "results": rows,
    }
    path = write_result("sampling", args.device, payload, args.out)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
