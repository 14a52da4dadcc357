"""The ``maskdiff export`` and ``maskdiff convert`` commands: model folders in and out."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskdiff.cli.args import device_arg, load_run, positive_int
from maskdiff.errors import MaskdiffError


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run as a model folder (config.json, model.safetensors, tokenizer, model card)",
                       description="Write the run's weights (EMA by default) as a folder that Hugging Face tooling recognises: "
                                   "config.json, model.safetensors, the tokenizer files and a README.md model card stating what "
                                   "the model was trained on, its validation bound with a 95% interval (measured here unless "
                                   "--no-eval) and how to sample it. maskdiff.from_pretrained(OUT), maskdiff eval OUT and "
                                   "maskdiff sample OUT read it.")
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory made by maskdiff train")
    p.add_argument("out", type=Path, metavar="OUT", help="the folder to write (new, or empty)")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint directory (default: the run's newest valid one)")
    p.add_argument("--raw-weights", action="store_true", help="export the raw weights instead of their EMA")
    p.add_argument("--split", default="validation", help="the split the card's bound is measured on (default: validation)")
    p.add_argument("--limit", type=positive_int, default=256, help="sequences of length L evaluated for the card (default: 256)")
    p.add_argument("--passes", type=positive_int, default=1, help="Monte-Carlo estimates per sequence for the card (default: 1)")
    p.add_argument("--no-eval", action="store_true", help="write the card without measuring the bound")
    p.add_argument("--overwrite", action="store_true", help="write into OUT even if it is not empty")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    device_arg(p)

    p = sub.add_parser("convert", help="convert a released checkpoint into a maskdiff model folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Convert another project's released checkpoint into a maskdiff model folder.\n\n"
                                   "  mdlm  MDLM's DiT (kuleshov-group/mdlm-owt: 12 x 768, 12 heads, GPT-2 vocabulary plus the\n"
                                   "        mask, id 50,257), from its model.safetensors or the folder holding it. Every name\n"
                                   "        and shape is checked; the result evaluates and samples without flash-attn:\n"
                                   "        maskdiff eval OUT --corpus brown, maskdiff sample OUT --num 4.\n"
                                   "  bd3lm BD3-LM's DiT (kuleshov-group/bd3lms): MDLM's names, trained in block diffusion;\n"
                                   "        needs --block-size (its block_size); the folder has the block objective.\n"
                                   "  md4   MD4's transformer (google-deepmind/md4, its text network), from an .npz of its flax\n"
                                   "        parameters keyed by their '/'-joined paths (benchmarks/parity_md4_reference.py writes\n"
                                   "        one); sizes are read from the shapes; defaults --length 256 --tokenizer text8.\n\n"
                                   "A pickle (.ckpt, .pt, .bin) is read only with --allow-pickle, and then as tensors only.")
    p.add_argument("format", choices=["mdlm", "bd3lm", "md4"], help="the checkpoint's format: mdlm, bd3lm or md4")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a .safetensors file or a folder holding model.safetensors "
                   "(a .ckpt needs --allow-pickle); md4: an .npz")
    p.add_argument("out", type=Path, metavar="OUT", help="the folder to write (new, or empty)")
    p.add_argument("--heads", type=positive_int, help="attention heads; shapes do not tell them (default: 12, as mdlm-owt; bd3lm: "
                   "its Hugging Face folder's n_heads where it has one)")
    p.add_argument("--length", type=positive_int, help="sequence length L of the model folder (default: 1024, mdlm-owt's; md4: 256)")
    p.add_argument("--tokenizer", help="the vocabulary the checkpoint was trained with: gpt2 (default, mdlm-owt; md4: text8), bert, "
                   "bytes, or a tokenizer folder; it must have exactly the checkpoint's tokens minus the mask")
    p.add_argument("--time-conditioned", action="store_true", help="the checkpoint was trained with MDLM's time conditioning "
                   "(sigma of the log-linear noise); mdlm-owt was not")
    p.add_argument("--allow-pickle", action="store_true", help="read a pickle checkpoint (.ckpt) with PyTorch's tensors-only loader (weights_only), "
                   "taking only the tensors of its state_dict; pickles can run code, so only for files you trust")
    p.add_argument("--raw-weights", action="store_true", help="from a Lightning .ckpt, its raw weights (state_dict) instead of "
                   "its EMA (what MDLM evaluates and samples with; the default)")
    p.add_argument("--block-size", type=positive_int, help="bd3lm: the block length L' it was trained with (its block_size); "
                   "required for bd3lm")
    p.add_argument("--overwrite", action="store_true", help="write into OUT even if it is not empty")


def run(args) -> int:
    return cmd_export(args) if args.command == "export" else cmd_convert(args)


def cmd_export(args) -> int:
    from maskdiff.modalities import eval_chunks, get_modality

    pipe = load_run(args)
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise MaskdiffError(f"{args.out} exists and is not empty; choose a new folder or pass --overwrite")
    evaluation = None
    if not args.no_eval:
        unit, _ = get_modality(pipe.config).report_unit(pipe.tokenizer)
        tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, args.split)
        tokens, valid = tokens[: args.limit], valid[: args.limit]
        t0 = time.perf_counter()
        result = pipe.evaluate(tokens, valid, passes=args.passes, seed=0, progress=not args.no_progress)
        evaluation = dict(result.to_dict(), summary=result.summary(unit), split=args.split, corpus=pipe.config.data.corpus,
                          passes=args.passes, estimate=pipe.describe_estimate(), seconds=time.perf_counter() - t0)
        print(f"{pipe.config.data.corpus} {args.split}: {evaluation['summary']} ({evaluation['sequences']} sequences)")
    out = pipe.save_pretrained(args.out, evaluation=evaluation, overwrite=args.overwrite)
    print(f"wrote {out} ({pipe.weights} weights of step {pipe.step}): config.json, model.safetensors, tokenizer, README.md")
    return 0


def cmd_convert(args) -> int:
    from maskdiff.convert import bd3lm_folder_settings, convert_bd3lm, convert_mdlm

    if args.format == "md4":
        from maskdiff.convert_md4 import convert_md4

        if args.block_size is not None:
            raise MaskdiffError("--block-size is for convert bd3lm; an MD4 checkpoint has no blocks")
        if args.raw_weights or args.time_conditioned or args.heads:
            raise MaskdiffError("--raw-weights, --time-conditioned and --heads are for mdlm and bd3lm: an MD4 .npz holds one set "
                                "of weights, and its heads and time conditioning are read from its parameters' shapes")
        out = convert_md4(args.checkpoint, args.out, length=args.length or 256, tokenizer=args.tokenizer or "text8", overwrite=args.overwrite)
        print(f"wrote {out}: maskdiff eval {out} --corpus NAME, maskdiff sample {out}")
        return 0
    recorded = bd3lm_folder_settings(args.checkpoint) if args.format == "bd3lm" else {}
    length, tokenizer = args.length or recorded.get("length") or 1024, args.tokenizer or "gpt2"
    heads = args.heads or recorded.get("heads") or 12
    if args.format == "bd3lm":
        if args.block_size and recorded.get("block_size", args.block_size) != args.block_size:
            raise MaskdiffError(f"--block-size {args.block_size} differs from the block_size {recorded['block_size']} that "
                                f"{args.checkpoint}'s config.json records; leave it out or give that one")
        block_size = args.block_size or recorded.get("block_size")
        if block_size is None:
            raise MaskdiffError("convert bd3lm needs the checkpoint's block size: give --block-size N (BD3-LM's block_size, e.g. 4 or 16)")
        if args.time_conditioned:
            raise MaskdiffError("BD3-LM's block models are not time-conditioned here; leave out --time-conditioned")
        out = convert_bd3lm(args.checkpoint, args.out, block_size=block_size, heads=heads, length=length,
                            tokenizer=tokenizer, allow_pickle=args.allow_pickle, overwrite=args.overwrite, ema=not args.raw_weights)
        print(f"wrote {out}: maskdiff eval {out} --corpus NAME, maskdiff sample {out}")
        return 0
    if args.block_size is not None:
        raise MaskdiffError("--block-size is for convert bd3lm; an MDLM checkpoint has no blocks")
    out = convert_mdlm(args.checkpoint, args.out, heads=heads, length=length, tokenizer=tokenizer,
                       time_conditioned=args.time_conditioned, allow_pickle=args.allow_pickle, overwrite=args.overwrite,
                       ema=not args.raw_weights)
    print(f"wrote {out}: maskdiff eval {out} --corpus NAME, maskdiff sample {out}")
    return 0
