"""Generation quality against the number of steps, per sampler, for a trained run.

For each sampler and T it draws --num samples from the run's EMA weights and reports generative
perplexity under SmolLM2-135M (the evaluator LM; an upper bound on nothing, just a judge), unigram
entropy of the characters (low entropy = repetitive text that a judge LM likes), the repeated word
4-gram rate, NFE and seconds per sample. Held-out text of the same length is scored the same way as
the reference row. Writes JSON under benchmarks/results/ and prints a Markdown table.

    .venv/bin/python benchmarks/generation_quality.py runs/demo
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_run_result  # noqa: E402

import maskdiff  # noqa: E402
from maskdiff.modalities import eval_chunks  # noqa: E402
from maskdiff.evaluation.judge import EvaluatorLM  # noqa: E402
from maskdiff.evaluation.quality import report_for_samples  # noqa: E402


class _Held:
    """Held-out chunks wrapped like a sample output, for the reference row."""

    def __init__(self, tokens, texts):
        self.tokens, self.texts = tokens, texts
        self.nfe = torch.zeros(len(texts), dtype=torch.long)
        self.seconds = 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--num", type=int, default=16)
    ap.add_argument("--steps", default="16,64,256,1024")
    ap.add_argument("--samplers", default="ancestral,cached,first-hitting,confidence")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = maskdiff.load(args.run_dir)
    judge = EvaluatorLM.smollm2()
    rows = []

    tokens, _ = eval_chunks(pipe.config, pipe.tokenizer, "validation")
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(tokens.shape[0] - 1, generator=g)[: args.num]  # the last chunk may be padded
    held = _Held(tokens[pick], pipe.tokenizer.decode_batch(tokens[pick]))
    ref = report_for_samples(held, "held-out text", 0, evaluator=judge)
    rows.append(dict(ref.to_dict(), sampler="held-out text", steps=None))
    print(ref.summary(), flush=True)

    for name in args.samplers.split(","):
        for steps in map(int, args.steps.split(",")):
            if name == "first-hitting" and rows[-1]["sampler"] == "first-hitting":
                break  # no time grid: one row
            out = pipe.sample(args.num, steps=steps, sampler=name, seed=args.seed)
            rep = report_for_samples(out, name, steps, evaluator=judge)
            rows.append(dict(rep.to_dict(), sampler=name, steps=None if name == "first-hitting" else steps, example=out.texts[0]))
            print(rep.summary(), flush=True)

    print("\n| sampler | T | NFE / sample | gen-PPL (SmolLM2) | unigram entropy (bits) | repeated word 4-grams | s / sample |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t = "-" if r["steps"] is None else r["steps"]
        print(f"| {r['sampler']} | {t} | {r['nfe_mean']:.1f} | {r['gen_ppl']:.1f} | {r['unigram_entropy']:.3f} | "
              f"{(r.get('repeated_word_4gram_rate') or 0):.3f} | {r['seconds_per_sample']:.3f} |")
    write_run_result("generation_quality", pipe, args, rows)


if __name__ == "__main__":
    main()
