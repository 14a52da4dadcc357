"""``make demo``: train the tiny preset on Shakespeare, report validation BPC, print samples."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from maskdiff.checkpoint import latest_valid_checkpoint


def run_demo(run_dir: Path, steps: Optional[int] = None, progress: bool = True) -> int:
    import maskdiff
    from maskdiff.evaluation.nelbo import unigram_entropy_bits
    from maskdiff.modalities.text import split_stream
    from maskdiff.pipeline import eval_chunks
    from maskdiff.presets import tiny
    from maskdiff.train import train

    config = tiny()
    if steps:
        config.train.steps = steps
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    found = latest_valid_checkpoint(run_dir) if (run_dir / "config.json").exists() else None
    if found and found[1]["step"] >= config.train.steps:
        print(f"reusing {run_dir}: already trained to step {found[1]['step']} (delete it to train again)")
    elif found:
        print(f"resuming {run_dir} from step {found[1]['step']} of {config.train.steps}")
    else:
        m = config.model
        print(f"training the tiny preset ({m.depth} layers x {m.width} wide, length {config.data.length}, "
              f"batch {config.train.batch_size}, {config.train.steps} steps) on text8-style Shakespeare into {run_dir}")
    result = train(config, run_dir, progress=progress)
    if result.interrupted:
        return 130
    train_s = time.perf_counter() - t0

    pipe = maskdiff.load(run_dir)
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
    total = time.perf_counter() - t0
    bpc, lo, hi = res.bits_per_token()
    record = {"step": pipe.step, "bpc": bpc, "bpc_ci95": [lo, hi], "unigram_bpc": baseline,
              "train_and_load_s": train_s, "eval_s": eval_s, "total_s": total, "samples": out.texts}
    (run_dir / "demo.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"\ndone in {total:.0f} s (train {train_s:.0f} s, eval {eval_s:.0f} s); results in {run_dir}/demo.json")
    print(f"next: maskdiff sample {run_dir} --num 8 --steps 512   |   maskdiff eval {run_dir} --split test --passes 4")
    return 0
