"""``maskdiff eval``: the NELBO bound of a split with a 95% interval (and the DNA probe, the image FID)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from maskdiff.cli.args import load_run, positive_int, weights_args
from maskdiff.errors import MaskdiffError


def register(sub) -> None:
    p = sub.add_parser("eval", help="NELBO bound (BPC / PPL) of a split with a 95%% interval", description="Estimate the negative ELBO of every sequence of a split and report bits per character (an upper bound) with a 95% interval over sequences.")
    p.add_argument("run_dir", type=Path, help="a run directory made by maskdiff train, or a model folder (maskdiff export / convert)")
    p.add_argument("--split", default="validation", help="train, validation or test (default: validation)")
    p.add_argument("--corpus", help="evaluate on another corpus (zero-shot): shakespeare, linux-doc, python-doc, brown, wiki, a text file, a folder or hf:NAME (default: the run's)")
    p.add_argument("--detokenizer", metavar="NAME", help="MDLM's zero-shot protocol on the local file --corpus: read it as corpus NAME, detokenize it and pack it as MDLM's evaluation does (wrap: rows [BOS] L-2 tokens [EOS], remainders dropped; pad: one document per row, cut at L-2). NAME: ptb, wikitext, lm1b, lambada, ag-news, pubmed, arxiv or none (docs/text.md)")
    p.add_argument("--pairs", type=Path, metavar="FILE", help="the NELBO of each response given its prompt, over the pairs of FILE (.jsonl or .parquet, as data.pairs: docs/conditional.md), for any masked, block or ar run; a run trained on pairs evaluates its own pairs of --split without this flag")
    p.add_argument("--passes", type=positive_int, default=1, help="Monte-Carlo estimates per sequence, averaged (default: 1)")
    p.add_argument("--discrete-steps", type=positive_int, help="discrete-time NELBO with T steps instead of continuous time")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sequences per forward pass (default: 64)")
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N sequences (quick checks)")
    p.add_argument("--unit", choices=["BPC", "PPL", "BPT", "BPD", "bits/base"], help="BPC (bits per character), PPL, BPT (bits per token), BPD (bits per dimension) or bits/base (default: the run's own: BPC for character text, PPL for subword and byte text, bits/base for DNA, BPD for images)")
    p.add_argument("--probe", action="store_true", help="DNA runs: classify the species of windows of held-out genomes from the model's mean-pooled features (logistic regression), beside a k-mer count baseline")
    p.add_argument("--fid", type=positive_int, metavar="N", help="image runs: draw N samples and report a Frechet distance on the features of a classifier trained here on the training images (NOT comparable with the papers' Inception FID)")
    p.add_argument("--guidance", type=float, default=0.0, help="image runs with --fid: classifier-free guidance weight w (0, the default: the conditional model; -1: unconditional)")
    p.add_argument("--sample-steps", type=positive_int, help="image runs with --fid: sampler steps (default: one per pixel)")
    weights_args(p)
    p.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from maskdiff.modalities import get_modality
    from maskdiff.modalities import eval_chunks

    if args.detokenizer is not None:
        from maskdiff.data.detokenize import get_detokenizer

        get_detokenizer(args.detokenizer)  # a bad name fails before loading anything
        if not args.corpus:
            raise MaskdiffError("--detokenizer needs --corpus FILE: the local file of that corpus to evaluate")
    pipe = load_run(args)
    modality = get_modality(pipe.config)
    own_unit, words = modality.report_unit(pipe.tokenizer)
    unit = args.unit or own_unit
    modality.check_unit(unit, pipe.tokenizer)
    cond = None
    if args.detokenizer is not None:
        from maskdiff.evaluation.zeroshot import mdlm_rows

        tokens, valid = mdlm_rows(pipe, args.corpus, args.detokenizer)
    elif args.pairs or (pipe.config.data.pairs and not args.corpus):
        tokens, valid, cond = _pair_rows(args, pipe)
    else:
        tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, args.split, args.corpus)
    if args.limit:
        tokens, valid = tokens[: args.limit], (valid[: args.limit] if valid is not None else None)
        cond = None if cond is None else cond[: args.limit]
    t0 = time.perf_counter()
    result = pipe.evaluate(
        tokens, valid, discrete_steps=args.discrete_steps, passes=args.passes,
        batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress, cond=cond,
    )
    if args.detokenizer is not None and result.length is not None:  # MDLM's figure has no -log p(length)
        result.nelbo, result.length = result.nelbo - result.length, None
    seconds = time.perf_counter() - t0
    corpus = args.corpus or pipe.config.data.corpus
    kind = pipe.describe_estimate(args.discrete_steps)
    where = f"MDLM's protocol ({args.detokenizer})" if args.detokenizer is not None else args.split
    if cond is not None:
        d = pipe.config.data
        own = d.pairs_validation if args.split == "validation" and d.pairs_validation else d.pairs
        corpus, where = str(args.pairs or own), "all pairs" if args.pairs else f"{args.split} pairs"
        mean, lo, hi = result.per_sequence()
        print(f"{corpus} {where}: response given prompt {result.summary(unit)} per response {words[:-1]}; "
              f"per response NELBO {result.relation} {mean:.3f} nats (95% CI {lo:.3f}-{hi:.3f})")
        words = f"response {words} (end-of-text padding included)"
    else:
        print(f"{corpus} {where}: {result.summary(unit)}")
    print(f"  {int(result.tokens.sum())} {words} in {result.nelbo.numel()} sequences, {kind}, "
          f"{args.passes} pass(es), {pipe.weights} weights of step {pipe.step}, {seconds:.1f} s")
    if result.length is not None:
        print(f"  includes -log p(length) = {float(result.length.sum()) / float(result.tokens.sum()):.4f} nats per token "
              "(row lengths of the training split, add-one smoothing): a bound on -log p(x), not -log p(x | length)")
    if args.json:
        record = dict(result.to_dict(), run_dir=str(args.run_dir), split=args.split, corpus=corpus, detokenizer=args.detokenizer, passes=args.passes,
                      discrete_steps=args.discrete_steps, weights=pipe.weights, step=pipe.step, seconds=seconds)
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")
    if args.probe or args.fid:
        from maskdiff.cli.media import extra_evaluations

        extra = extra_evaluations(args, pipe)
        if args.json:
            args.json.write_text(json.dumps(dict(record, **extra), indent=1), encoding="utf-8")
    return 0


def _pair_rows(args, pipe):
    """(tokens, valid: None, cond) of the pairs to evaluate: --pairs FILE whole, else the run's own split."""
    if args.corpus or args.detokenizer is not None:
        raise MaskdiffError("--pairs evaluates prompt/response pairs; leave out --corpus and --detokenizer")
    if args.pairs:
        from maskdiff.data.pairs import file_rows

        rows = file_rows(pipe.tokenizer, pipe.config.data.length, args.pairs)
    else:
        from maskdiff.modalities.text import pair_split

        rows = pair_split(pipe.config, pipe.tokenizer, args.split)
    return rows.tokens, None, rows.cond
