"""Fine-tuning throughput: tokens/s of a training step on prompt/response pairs (the prompt never masked or
scored) against an unconditional step of the same size, measured interleaved in one process.

A step is what ``maskdiff.train`` does per optimizer step apart from logging and the EMA: the objective's
forward and loss (``Objective.forward``, with ``cond`` for the pairs), backward, gradient clipping and
AdamW, on batches drawn beforehand by the trainer's own ``draw_step`` from its sources: windows of the
Shakespeare stream (unconditional) and rows of Shakespeare line pairs (benchmarks/shakespeare_pairs.py).
Both count B x L tokens per step. Rounds alternate which of the two goes first, so a drift of the machine's
speed falls on both alike; the figure is the median over rounds of the ratio of the two step times.

    .venv/bin/python benchmarks/sft_throughput.py                          # the tiny preset, 20 rounds
    .venv/bin/python benchmarks/sft_throughput.py --rounds 40 --objective ar
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
try:
    import maskdiff  # noqa: F401  (the editable install)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import git_commit, machine_info, write_result  # noqa: E402
from shakespeare_pairs import line_pairs  # noqa: E402

from maskdiff.data.corpora import load_split_texts  # noqa: E402
from maskdiff.data.pairs import PairSource, encode_pairs  # noqa: E402
from maskdiff.data.sources import WindowSource  # noqa: E402
from maskdiff.loss import low_discrepancy_times  # noqa: E402
from maskdiff.modalities import build_tokenizer  # noqa: E402
from maskdiff.modalities.text import split_stream  # noqa: E402
from maskdiff.objectives import build_objective  # noqa: E402
from maskdiff.presets import get_preset  # noqa: E402
from maskdiff.step import draw_step, make_optimizer  # noqa: E402


def _step(objective, optimizer, batch, t_min: float, grad_clip: float) -> float:
    """One optimizer step on a drawn batch, as the trainer's (one micro-batch)."""
    optimizer.zero_grad(set_to_none=True)
    B = batch.x0.shape[0]
    t = low_discrepancy_times(B, batch.u, t_min)
    c = {} if batch.cond is None else {"cond": batch.cond}
    out = objective(batch.x0, t, batch.noise, batch.valid, batch.labels, **c)
    (out[0].float().sum() / batch.n_tokens).backward()
    torch.nn.utils.clip_grad_norm_(objective.parameters(), grad_clip)
    optimizer.step()
    return float(out[1].detach().sum()) / batch.n_tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", help="the model and batch size (default: tiny)")
    p.add_argument("--objective", default="masked", help="masked, block or ar (default: masked)")
    p.add_argument("--block-size", type=int, default=16, help="block objective: its block size (default: 16)")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds, each one step of each kind (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default: 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the preset's, else torch's default)")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/sft_throughput_<device>_<time>.json)")
    args = p.parse_args()

    cfg = get_preset(args.preset)
    cfg.diffusion.objective = args.objective
    if args.objective == "block":
        cfg.diffusion.block_size = args.block_size
    threads = args.threads or cfg.train.threads
    if threads:
        torch.set_num_threads(threads)
    tokenizer = build_tokenizer(cfg)
    B, L = cfg.train.batch_size, cfg.data.length
    plain = WindowSource(split_stream(cfg, tokenizer, "train"), L)
    pairs = line_pairs(load_split_texts("shakespeare", "train"))[:4000]
    pairs = [q for q in pairs if len(tokenizer.encode(q[0])) + len(tokenizer.encode(q[1])) + 2 <= L]
    rows = encode_pairs(pairs, tokenizer, L, "shakespeare line pairs")
    conditional = PairSource(rows)

    torch.manual_seed(0)
    objective = build_objective(cfg, tokenizer.vocab_size)
    objective.set_check_inputs(False)
    objective.train()
    optimizer = make_optimizer(objective, cfg.train)
    d, clip = cfg.diffusion, cfg.train.grad_clip or float("inf")
    draws = {name: [draw_step(src, 0, k, B, L, objective.noise_draws, d.low_discrepancy, torch.device("cpu")) for k in range(4)]
             for name, src in (("unconditional", plain), ("pairs", conditional))}
    seconds = {"unconditional": [], "pairs": []}
    for r in range(args.warmup + args.rounds):
        order = ("unconditional", "pairs") if r % 2 == 0 else ("pairs", "unconditional")
        for name in order:
            start = time.perf_counter()
            _step(objective, optimizer, draws[name][r % 4], d.t_min, clip)
            if r >= args.warmup:
                seconds[name].append(time.perf_counter() - start)
    tokens = B * L
    ratios = [u / c for u, c in zip(seconds["unconditional"], seconds["pairs"])]  # pairs tokens/s over unconditional
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    result = {
        "tokens_per_step": tokens,
        "unconditional_tokens_per_s_median": tokens / statistics.median(seconds["unconditional"]),
        "pairs_tokens_per_s_median": tokens / statistics.median(seconds["pairs"]),
        "ratio_median": statistics.median(ratios),
        "ratio_quartiles": [q[0], q[2]],
        "prompt_fraction": float(rows.cond.float().mean()),
        "seconds": seconds,
    }
    payload = {"benchmark": "sft_throughput", "machine": machine_info("cpu"), "commit": git_commit(),
               "config": {"preset": args.preset, "objective": args.objective, "batch_size": B, "length": L, "rounds": args.rounds,
                          "warmup": args.warmup, "threads": torch.get_num_threads(), "pair_rows": len(rows)},
               "results": result}
    print(f"{args.preset} ({args.objective}, batch {B} x L {L}, {torch.get_num_threads()} threads): unconditional "
          f"{result['unconditional_tokens_per_s_median']:,.0f} tokens/s, pairs {result['pairs_tokens_per_s_median']:,.0f} tokens/s; "
          f"pairs / unconditional {result['ratio_median']:.3f} (quartiles {q[0]:.3f}-{q[2]:.3f}) over {args.rounds} interleaved rounds; "
          f"prompt {result['prompt_fraction']:.0%} of the positions")
    print(f"saved {write_result('sft_throughput', 'cpu', payload, args.out)}")


if __name__ == "__main__":
    main()
