"""Fine-tuning a pretrained masked LM with the masked-diffusion objective, against the same architecture
trained from scratch (MDLM fine-tunes BERT this way; Sahoo et al. 2024).

Both runs are the ``minilm`` preset (all-MiniLM-L6-v2's BERT architecture, 6 x 384, Shakespeare in its
WordPiece vocabulary, L = 64, lr 1e-4, MDLM objective with the linear schedule) at batch 8 (--batch-size)
for 80 steps (--steps), a few minutes on 2 idle CPU cores; they differ only in the starting weights:

    pretrained   the all-MiniLM-L6-v2 encoder (its masked-LM head, which the package does not ship,
                 starts fresh: the output layer is tied to the pretrained input embedding)
    scratch      Hugging Face's own initialisation of the same config

Each is evaluated before training (step 0) and after --steps steps (EMA weights) on the same first
--eval-rows validation sequences with the same t and masks (seeded), so the differences are paired per
sequence. The result (NELBO per token, PPL bounds with 95% intervals, paired differences, samples,
machine, commit) goes to benchmarks/results/pretrained_finetune_cpu_<time>.json, with a Markdown table.

    python benchmarks/pretrained_finetune.py --steps 80 --batch-size 8 --eval-rows 128
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, machine_info, write_result  # noqa: E402

Z95 = 1.959963984540054


def config_for(variant: str, args):
    from maskdiff.presets import get_preset
    from maskdiff.completion import complete_backbone

    config = complete_backbone(get_preset("minilm"))
    config.train.steps = steps = args.steps
    config.train.seed = args.seed
    config.train.batch_size = args.batch_size
    config.train.checkpoint_every = steps
    if variant == "scratch":
        config.model.pretrained = ""
    return config


def initial_pipeline(config):
    """The pipeline of a run before its first step: the weights training starts from."""
    from maskdiff.objectives import build_objective
    from maskdiff.modalities import build_tokenizer
    from maskdiff.pipeline import Pipeline

    tokenizer = build_tokenizer(config)
    torch.manual_seed(config.train.seed)  # the trainer seeds the same way before it builds the network
    objective = build_objective(config, tokenizer.vocab_size)
    if config.model.pretrained:
        objective.init_from_pretrained()
    pipe = Pipeline(config, tokenizer, objective)
    pipe.step, pipe.weights = 0, "initial"
    return pipe


def evaluate(pipe, tokens, valid, passes: int):
    result = pipe.evaluate(tokens, valid, passes=passes, batch_size=32, seed=0)
    nats, (lo, hi) = result.nats_per_token, result.interval()
    return result, {"nats_per_token": nats, "ci95": [lo, hi], "ppl_bound": math.exp(nats), "ppl_ci95": [math.exp(lo), math.exp(hi)],
                    "summary": result.summary("PPL"), "sequences": int(result.nelbo.numel()), "tokens": int(result.tokens.sum())}


def paired(a, b):
    """Nats per token of a minus b over the same sequences, with a 95% interval over sequences."""
    d = (a.nelbo - b.nelbo) / a.tokens
    mean = float(d.mean())
    se = float(d.std(unbiased=True)) / math.sqrt(d.numel())
    return {"mean": mean, "ci95": [mean - Z95 * se, mean + Z95 * se]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80, help="training steps of each run (default: 80)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: 8; the preset's is 16)")
    parser.add_argument("--eval-rows", type=int, default=128, help="validation sequences of 64 tokens (default: 128)")
    parser.add_argument("--passes", type=int, default=1, help="Monte-Carlo passes per sequence (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("runs/pretrained_finetune"), help="run directories (resumed if present)")
    parser.add_argument("--out", help="result JSON (default: benchmarks/results/pretrained_finetune_cpu_<time>.json)")
    args = parser.parse_args()

    import maskdiff
    from maskdiff.modalities import eval_chunks
    from maskdiff.train import train

    torch.set_num_threads(2)
    results, evals = {}, {}
    tokens = valid = None
    for variant in ("pretrained", "scratch"):
        config = config_for(variant, args)
        before = initial_pipeline(config)
        if tokens is None:
            tokens, valid = eval_chunks(config, before.tokenizer, "validation")
            tokens, valid = tokens[: args.eval_rows], valid[: args.eval_rows]
        t0 = time.perf_counter()
        evals[variant, "before"], results_before = evaluate(before, tokens, valid, args.passes)
        eval_s = time.perf_counter() - t0
        del before
        run_dir = args.workdir / variant
        t0 = time.perf_counter()
        trained = train(config, run_dir, progress=True)
        train_s = time.perf_counter() - t0
        after = maskdiff.load(run_dir)
        evals[variant, "after"], results_after = evaluate(after, tokens, valid, args.passes)
        samples = after.generate(num=3, steps=64, sampler="cached", seed=0)
        prompted = after.generate(prompt="to be, or not to be", num=2, length=32, steps=64, seed=0)
        results[variant] = {"before": results_before, "after": results_after, "train_seconds": train_s, "eval_seconds": eval_s,
                            "trained_to": trained.step, "samples": samples, "prompted": prompted}
        print(f"{variant}: before {results_before['summary']}, after {results_after['summary']} ({train_s:.0f} s of training)")
    comparisons = {
        "pretrained_after_minus_scratch_after": paired(evals["pretrained", "after"], evals["scratch", "after"]),
        "pretrained_after_minus_before": paired(evals["pretrained", "after"], evals["pretrained", "before"]),
        "scratch_after_minus_before": paired(evals["scratch", "after"], evals["scratch", "before"]),
        "pretrained_before_minus_scratch_before": paired(evals["pretrained", "before"], evals["scratch", "before"]),
    }
    config = config_for("pretrained", args)
    payload = {"benchmark": "pretrained_finetune", "machine": machine_info("cpu"), "commit": git_commit(),
               "config": config.to_dict(), "args": {k: str(v) for k, v in vars(args).items()},
               "results": results, "paired_nats_per_token": comparisons}
    path = write_result("pretrained_finetune", "cpu", payload, args.out)
    print(f"\n| start | step 0: PPL bound (95% CI) | step {args.steps}: PPL bound (95% CI) | training s |\n|---|---|---|---|")
    for variant in results:
        r = results[variant]
        b, a = r["before"], r["after"]
        print(f"| {variant} | {b['ppl_bound']:,.1f} ({b['ppl_ci95'][0]:,.1f}-{b['ppl_ci95'][1]:,.1f}) | "
              f"{a['ppl_bound']:,.1f} ({a['ppl_ci95'][0]:,.1f}-{a['ppl_ci95'][1]:,.1f}) | {r['train_seconds']:.0f} |")
    for name, c in comparisons.items():
        print(f"{name}: {c['mean']:+.4f} nats/token (95% CI {c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f})")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
