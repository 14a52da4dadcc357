"""Many prompts per call: wall-clock of the same rows drawn with different micro-batch sizes, and a check
that every batch size gives the same tokens (each row has its own generator; only network calls are shared).

    PYTHONPATH=src python benchmarks/many_prompts.py                       # 16 rows, batch sizes 1, 4, 16
    PYTHONPATH=src python benchmarks/many_prompts.py --rows 32 --batch-sizes 1,8,32 --device cuda

Random weights of a 4 x 256 transformer (4 heads), vocabulary 257 (bytes), L = 256, cached sampler; each
row a prompt of 8 to 23 bytes and a length of 128 or 256 (two length groups).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, machine_info, write_result  # noqa: E402

from maskdiff.config import RunConfig  # noqa: E402
from maskdiff.data.subword import ByteTokenizer  # noqa: E402
from maskdiff.objectives import build_objective  # noqa: E402
from maskdiff.pipeline import Pipeline  # noqa: E402
from maskdiff.sampling.rows import Row, RowsRequest  # noqa: E402


def build(args) -> Pipeline:
    cfg = RunConfig()
    cfg.data.length = args.length
    cfg.model.width, cfg.model.depth, cfg.model.heads = args.width, args.depth, args.heads
    tok = ByteTokenizer()
    torch.manual_seed(0)
    objective = build_objective(cfg, tok.vocab_size)
    for p in objective.parameters():  # random weights everywhere (the zero-initialised head would give uniform mu)
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.02)
    return Pipeline(cfg, tok, objective, device=args.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,4,16")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--sampler", default="cached")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = build(args)
    rows = [Row(prompt=f"row {i}: " + "to be or not"[: i % 12], length=args.length // (1 + i % 2)) for i in range(args.rows)]
    results, tokens = [], None
    for b in map(int, args.batch_sizes.split(",")):
        start = time.perf_counter()
        out = pipe.run_rows(RowsRequest(rows, sampler=args.sampler, steps=args.steps, batch_size=b, stop_at_eos=False))
        seconds = time.perf_counter() - start
        same = tokens is None or [r.tokens for r in out] == tokens
        tokens = tokens or [r.tokens for r in out]
        nfe = sum(r.network_calls for r in out) / len(out)
        results.append({"batch_size": b, "seconds": seconds, "rows_per_second": len(rows) / seconds, "nfe_mean": nfe,
                        "tokens_equal_to_first": same})
        print(f"batch size {b:>3}: {seconds:7.2f} s, {len(rows) / seconds:6.2f} rows/s, NFE mean {nfe:6.1f}, "
              f"tokens {'equal to the first batch size' if same else 'DIFFERENT'}", flush=True)
    payload = {"benchmark": "many_prompts", "machine": machine_info(args.device), "commit": git_commit(),
               "config": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}
    print(f"saved {write_result('many_prompts', args.device, payload, args.out)}")


if __name__ == "__main__":
    main()
