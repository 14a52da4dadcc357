"""``make demo``: train the tiny preset on Shakespeare for a time budget, report validation BPC, print
samples, draw the learning curve.

The number of steps is sized to the machine: the run starts, its throughput is read off its first
steps, and the run is extended to fill the budget. The first steps are still in the learning-rate
warm-up, whose rate does not depend on the total, so the result is the same run as one started with
that many steps (resuming is exact).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Optional, Tuple

from maskdiff.checkpoint import latest_valid_checkpoint
from maskdiff.plotting import draw_learning_curve
from maskdiff.runs import CONFIG_FILE, read_log, read_run_config
from maskdiff.cli.args import positive_float, positive_int

DEMO_BUDGET_S = 180.0  # seconds of training a fresh demo run is sized to
PROBE_STEPS = 20  # steps run to measure the machine's throughput (inside the warm-up)
MIN_STEPS, MAX_STEPS = 100, 4000


def register(sub) -> None:
    p = sub.add_parser("demo", help="train tiny on Shakespeare, report BPC, print samples", description="Train the tiny preset on text8-style Shakespeare (reusing or resuming --run-dir) for a time budget: the machine's throughput is measured on the first steps and the run sized to fit. Then report validation BPC with a 95% interval beside the unigram baseline, print samples from the EMA weights and draw the learning curve (learning_curve.png in the run directory).")
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    p.add_argument("--budget", type=positive_float, default=DEMO_BUDGET_S, help="seconds of training a new run is sized to (default: 180)")
    p.add_argument("--steps", type=positive_int, help="training steps instead of sizing the run to --budget")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    return run_demo(args.run_dir, steps=args.steps, progress=not args.no_progress, budget_s=args.budget)


def size_to_budget(budget_s: float, seconds_per_step: float, done: int) -> int:
    """Total steps that fit ``budget_s`` of training when ``done`` steps are behind us, in [MIN, MAX]
    steps and rounded down to a multiple of 10."""
    total = done + max(0.0, budget_s - done * seconds_per_step) / seconds_per_step
    return int(min(MAX_STEPS, max(MIN_STEPS, total)) // 10 * 10)


def _probe_throughput(config, run_dir: Path) -> Tuple[float, float]:
    """Train the first PROBE_STEPS steps of the run and return (seconds per step, tokens per second),
    measured over the steps after the first log window (the first steps pay for start-up)."""
    from maskdiff.train import train

    config.train.steps = 10 * MAX_STEPS  # a placeholder: only the warm-up steps run, whose rate ignores it
    config.train.log_every = 10
    result = train(config, run_dir, progress=False, log=lambda *a: None, stop_after=PROBE_STEPS)
    if result.step < PROBE_STEPS:  # Ctrl-C during the probe
        raise KeyboardInterrupt
    records = read_log(run_dir)
    last = records[-1]
    seconds_per_step = config.train.batch_size * config.data.length / last["tokens_per_s"]
    return seconds_per_step, last["tokens_per_s"]


def run_demo(run_dir: Path, steps: Optional[int] = None, progress: bool = True, budget_s: float = DEMO_BUDGET_S) -> int:
    import torch

    import maskdiff
    from maskdiff.evaluation.nelbo import unigram_entropy_bits
    from maskdiff.modalities.text import split_stream
    from maskdiff.experiments.provenance import cpu_name
    from maskdiff.modalities import eval_chunks
    from maskdiff.presets import tiny
    from maskdiff.train import train

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    existing = (run_dir / CONFIG_FILE).exists()
    found = latest_valid_checkpoint(run_dir) if existing else None
    config = read_run_config(run_dir) if found else tiny()
    m, tc = config.model, config.train
    machine = f"{cpu_name()}, {tc.threads or torch.get_num_threads()} threads"
    budget_note = None
    if steps:
        config.train.steps = steps
    if found and found[1]["step"] >= config.train.steps:
        print(f"reusing {run_dir}: already trained to step {found[1]['step']} (delete it to train again)")
    elif found:
        print(f"resuming {run_dir} from step {found[1]['step']} of {config.train.steps}")
    else:
        print(f"training the tiny preset ({m.depth} layers x {m.width} wide, length {config.data.length}, "
              f"batch {tc.batch_size}) on text8-style Shakespeare into {run_dir}")
        if not steps:
            print(f"measuring this machine ({machine}) on the first {PROBE_STEPS} steps ...")
            try:
                sec, tok_s = _probe_throughput(config, run_dir)
            except KeyboardInterrupt:
                print(f"stopped; run the same command again to resume from {run_dir}")
                return 130
            config.train.steps = size_to_budget(budget_s, sec, PROBE_STEPS)
            budget_note = (f"{tok_s:,.0f} tokens/s ({sec * 1000:.0f} ms per step): a {budget_s:.0f} s training budget "
                           f"fits {config.train.steps} steps")
            print(f"  {budget_note}")
    result = train(config, run_dir, progress=progress)
    if result.interrupted:
        return 130
    train_s = time.perf_counter() - t0

    pipe = maskdiff.load(run_dir, device=config.train.device)  # where it trained
    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, "validation")
    t1 = time.perf_counter()
    res = pipe.evaluate(tokens, valid, progress=progress)
    eval_s = time.perf_counter() - t1
    baseline = unigram_entropy_bits(split_stream(pipe.config, pipe.tokenizer, "validation"), pipe.tokenizer.vocab_size)
    print()
    print(f"validation (whole works held out: Julius Caesar, Twelfth Night, the Sonnets), {int(res.tokens.sum()):,} characters:")
    print(f"  masked diffusion, EMA weights of step {pipe.step}:  {res.summary('BPC')}")
    print(f"  unigram entropy of the same text (no context):   BPC  = {baseline:.4f}")

    out = pipe.sample(4, steps=256, sampler="cached", seed=0, progress=progress)
    print(f"\nsamples ({len(out.texts)} x {pipe.config.data.length} characters, cached sampler, 256 steps, "
          f"mean {out.nfe.float().mean():.0f} network calls each, {out.seconds:.1f} s):")
    for text in out.texts:
        print(f"  | {text}")
    bpc, lo, hi = res.bits_per_token()
    records = read_log(run_dir)
    curve = draw_learning_curve(records, run_dir / "learning_curve.png", bpc, pipe.step, baseline)
    total = time.perf_counter() - t0
    tok_s = [r["tokens_per_s"] for r in records[2:]] or [r["tokens_per_s"] for r in records]
    median_tok_s = statistics.median_high(tok_s) if tok_s else math.nan
    record = {"step": pipe.step, "bpc": bpc, "bpc_ci95": [lo, hi], "unigram_bpc": baseline, "machine": machine,
              "budget_s": budget_s if budget_note else None, "median_tokens_per_s": median_tok_s,
              "train_and_load_s": train_s, "eval_s": eval_s, "total_s": total, "samples": out.texts}
    (run_dir / "demo.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"\nlearning curve: {curve}")
    print(f"done in {total:.0f} s on {machine} (train {train_s:.0f} s at a median {median_tok_s:,.0f} tokens/s, "
          f"eval {eval_s:.0f} s); results in {run_dir}/demo.json")
    print(f"next: maskdiff sample {run_dir} --num 8 --steps 512   |   maskdiff eval {run_dir} --split test --passes 4")
    return 0
