"""The ``maskdiff`` command: train, eval, sample and demo, each a thin layer over the library."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from maskdiff.errors import MaskdiffError

DESCRIPTION = """\
maskdiff: masked diffusion models of discrete data (MD4 / MDLM).

  maskdiff train  --preset tiny --run-dir runs/tiny     train (or resume) a run
  maskdiff eval   runs/tiny                             validation BPC bound with a 95% interval
  maskdiff sample runs/tiny --num 4 --steps 256         draw samples from the EMA weights
  maskdiff demo                                          all three on the tiny preset
  maskdiff data list                                     corpora and vocabularies, installed or not
  maskdiff zero-shot runs/a runs/b                       PPL bounds of runs on held-out corpora
  maskdiff experiment subs                               a paper comparison over 3 seeds, with verdicts
  maskdiff train --objective block --block-size 4        block diffusion (BD3-LM); sample it at any length
  maskdiff export runs/tiny out/tiny                     a model folder (safetensors, tokenizer, model card)
  maskdiff convert mdlm mdlm-owt/ out/mdlm-owt           MDLM's released checkpoint as a maskdiff model folder
  maskdiff train --preset minilm                         fine-tune a pretrained masked LM (all-MiniLM-L6-v2)
  maskdiff serve  runs/tiny                              a web page to watch and steer generation (JSON API too)
  torchrun --nproc_per_node 8 -m maskdiff.cli train ...  the same trainer on several processes (DDP / FSDP2)

  DNA:    maskdiff train --preset dna; maskdiff eval runs/dna --probe       (bits per base, genome probe)
  images: maskdiff train --preset digits; maskdiff eval runs/digits --fid 500; maskdiff sample runs/digits --num 40

A run directory holds config.json, tokenizer.json, checkpoints/, log.jsonl and samples/.
"""


def _number(cast, ok, expected: str):
    """An argparse type: ``cast`` the text and check ``ok``, else say what was expected."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive finite number")
_unit_float = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def _key_value(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. w=2.0, got {text!r}")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value of {key} must be a number, got {value!r}") from None


# (flag, config section, field, argparse type) for the train overrides; help comes from the config docstrings.
TRAIN_OVERRIDES = [
    ("--steps", "train", "steps", _positive_int),
    ("--batch-size", "train", "batch_size", _positive_int),
    ("--micro-batch-size", "train", "micro_batch_size", _nonneg_int),
    ("--lr", "train", "lr", _positive_float),
    ("--warmup-steps", "train", "warmup_steps", _nonneg_int),
    ("--lr-schedule", "train", "lr_schedule", str),
    ("--ema-decay", "train", "ema_decay", _unit_float),
    ("--seed", "train", "seed", int),
    ("--threads", "train", "threads", _nonneg_int),
    ("--device", "train", "device", str),
    ("--parallel", "train", "parallel", str),
    ("--precision", "train", "precision", str),
    ("--compile", "train", "compile", str),
    ("--max-bad-steps", "train", "max_bad_steps", _positive_int),
    ("--checkpoint-every", "train", "checkpoint_every", _positive_int),
    ("--log-every", "train", "log_every", _positive_int),
    ("--keep-checkpoints", "train", "keep_checkpoints", _positive_int),
    ("--objective", "diffusion", "objective", str),
    ("--schedule", "diffusion", "schedule", str),
    ("--time-sampler", "diffusion", "time_sampler", str),
    ("--genmd4-samples", "diffusion", "genmd4_samples", _positive_int),
    ("--block-size", "diffusion", "block_size", _positive_int),
    ("--mask-rate-min", "diffusion", "mask_rate_min", _unit_float),
    ("--mask-rate-max", "diffusion", "mask_rate_max", _number(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")),
    ("--t-min", "diffusion", "t_min", _unit_float),
    ("--discrete-steps", "diffusion", "discrete_steps", _nonneg_int),
    ("--corpus", "data", "corpus", str),
    ("--form", "data", "form", str),
    ("--tokenizer", "data", "tokenizer", str),
    ("--packing", "data", "packing", str),
    ("--length", "data", "length", _positive_int),
    ("--width", "model", "width", _positive_int),
    ("--depth", "model", "depth", _positive_int),
    ("--heads", "model", "heads", _positive_int),
    ("--init", "model", "init", str),
    ("--local-mixing", "model", "local_mixing", _nonneg_int),
    ("--backbone", "model", "backbone", str),
    ("--pretrained", "model", "pretrained", str),
    ("--modality", "data", "modality", str),
    ("--levels", "data", "levels", _nonneg_int),
    ("--image-size", "data", "image_size", _nonneg_int),
    ("--num-classes", "model", "num_classes", _nonneg_int),
    ("--class-dropout", "train", "class_dropout", _unit_float),
]


def build_parser() -> argparse.ArgumentParser:
    from maskdiff.config import describe_field
    from maskdiff.presets import PRESETS
    from maskdiff.sampling import SAMPLERS
    from maskdiff.schedules import SCHEDULES

    parser = argparse.ArgumentParser(prog="maskdiff", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train or resume a run", description="Train a masked diffusion model, or resume the run in --run-dir from its newest valid checkpoint. Ctrl-C stops after the current step and saves a checkpoint.")
    p.add_argument("--preset", default="tiny", help=f"starting recipe: {', '.join(PRESETS)} (default: tiny)")
    p.add_argument("--config", type=Path, help="a config.json to start from instead of a preset")
    p.add_argument("--run-dir", type=Path, help="where config, checkpoints and logs go (default: runs/<preset>)")
    for flag, section, name, typ in TRAIN_OVERRIDES:
        extra = f" Choices: {', '.join(SCHEDULES)}." if name == "schedule" else ""
        p.add_argument(flag, type=typ, default=None, help=(describe_field(section, name) or "") + extra)
    p.add_argument("--schedule-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="schedule argument, e.g. w=3 for polynomial, eps=1e-3 for loglinear (repeatable)")
    p.add_argument("--time-conditioned", action="store_true", default=None, help=describe_field("model", "time_conditioned"))
    p.add_argument("--no-carry-over", action="store_true", help=describe_field("diffusion", "carry_over"))
    p.add_argument("--no-zero-mask", action="store_true", help=describe_field("diffusion", "zero_mask"))
    p.add_argument("--masked-logits", action=argparse.BooleanOptionalAction, default=None,
                   help=describe_field("model", "masked_logits") + " (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("eval", help="NELBO bound (BPC / PPL) of a split with a 95%% interval", description="Estimate the negative ELBO of every sequence of a split and report bits per character (an upper bound) with a 95% interval over sequences.")
    p.add_argument("run_dir", type=Path, help="a run directory made by maskdiff train, or a model folder (maskdiff export / convert)")
    p.add_argument("--split", default="validation", help="train, validation or test (default: validation)")
    p.add_argument("--corpus", help="evaluate on another corpus (zero-shot): shakespeare, linux-doc, python-doc, brown, wiki, a text file, a folder or hf:NAME (default: the run's)")
    p.add_argument("--passes", type=_positive_int, default=1, help="Monte-Carlo estimates per sequence, averaged (default: 1)")
    p.add_argument("--discrete-steps", type=_positive_int, help="discrete-time NELBO with T steps instead of continuous time")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="sequences per forward pass (default: 64)")
    p.add_argument("--limit", type=_positive_int, help="evaluate only the first N sequences (quick checks)")
    p.add_argument("--unit", choices=["BPC", "PPL", "BPT", "BPD", "bits/base"], help="BPC (bits per character), PPL, BPT (bits per token), BPD (bits per dimension) or bits/base (default: the run's own: BPC for character text, PPL for subword and byte text, bits/base for DNA, BPD for images)")
    p.add_argument("--probe", action="store_true", help="DNA runs: classify the species of windows of held-out genomes from the model's mean-pooled features (logistic regression), beside a k-mer count baseline")
    p.add_argument("--fid", type=_positive_int, metavar="N", help="image runs: draw N samples and report a Frechet distance on the features of a classifier trained here on the training images (NOT comparable with the papers' Inception FID)")
    p.add_argument("--guidance", type=float, default=0.0, help="image runs with --fid: classifier-free guidance weight w (0, the default: the conditional model; -1: unconditional)")
    p.add_argument("--sample-steps", type=_positive_int, help="image runs with --fid: sampler steps (default: one per pixel)")
    _weights_args(p)
    p.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("sample", help="draw samples (prompts, infilling, longer than L)", description="Draw samples and print them; they are also saved under RUN_DIR/samples/. Samplers: ancestral (the T-step chain), cached (the same law, reuses the network output while a sample is unchanged: at most min(T, L) calls), mean (MD4's two-stage draw, same law), greedy (argmax values, biased), first-hitting (exact, no grid, exactly L calls), confidence (MaskGIT / LLaDA, biased), remdm-cap / remdm-rescale / remdm-conf / remdm-loop (ReMDM's remasking: tokens may be masked again and redrawn; same forward marginals; --eta, --t-on, --t-off, --alpha-on), threshold (Fast-dLLM's parallel decoding: fills every position whose confidence exceeds --threshold, at least one per call; --decode-block, --kv-cache). Block diffusion runs (--objective block) sample with their own sampler: block by block, --steps ancestral steps per block, with a key-value cache of the finished blocks, any --length, stopping at the end-of-text token where the tokenizer has one.")
    p.add_argument("run_dir", type=Path, help="a run directory made by maskdiff train, or a model folder (maskdiff export / convert)")
    p.add_argument("--num", type=_positive_int, default=4, help="number of samples (default: 4)")
    p.add_argument("--length", type=_positive_int, help="tokens per sample (default: the training length L; longer is generated semi-autoregressively)")
    p.add_argument("--block", type=_positive_int, help="semi-autoregressive block size for lengths beyond L (default: L/4)")
    p.add_argument("--steps", type=_positive_int, default=256, help="reverse steps T (default: 256; first-hitting needs no grid)")
    p.add_argument("--sampler", default="cached", help=f"one of: {', '.join(SAMPLERS)} (default: cached)")
    p.add_argument("--grid", default="uniform", choices=["uniform", "cosine"], help="time grid: uniform t_k = k/T or MD4's cosine grid")
    p.add_argument("--temperature", type=_positive_float, default=1.0, help="divide log mu by this before drawing (biased unless 1)")
    p.add_argument("--top-p", type=_positive_float, default=1.0, help="nucleus truncation of mu (biased unless 1)")
    p.add_argument("--eta", type=float, help="remdm-* samplers: eta_cap (remdm-cap), the held phase's sigma (remdm-loop, at most (1 - alpha_on)/alpha_on), eta_rescale (remdm-rescale) or the scale of sigma_max shared by confidence (remdm-conf), in [0, 1] (defaults: 0.02, 0.02, 1.0, 0.02)")
    p.add_argument("--t-on", type=float, help="remdm-loop: the time where the remasking loop starts (alpha is held at alpha_on; default 0.55)")
    p.add_argument("--alpha-on", type=float, help="remdm-loop: alpha held between t_on and t_off, in (0, 1) (default 0.9, ReMDM's)")
    p.add_argument("--t-off", type=float, help="remdm-loop: the time where the loop ends and plain unmasking resumes (default 0.05)")
    p.add_argument("--threshold", type=float, help="threshold sampler: fill every masked position whose confidence exceeds this, in [0, 1] (default 0.9; 1: one position per call, 0: a whole block per call)")
    p.add_argument("--decode-block", type=_positive_int, help="threshold sampler: decode in blocks of this many positions, left to right (default: the whole sample)")
    p.add_argument("--kv-cache", choices=["none", "prefix", "dual"], help="threshold sampler: Fast-dLLM's approximate key/value cache within a block (default: none)")
    p.add_argument("--prompt", help="a fixed prefix; the sampler fills what follows")
    p.add_argument("--template", help="text with [N] spans of N characters to fill, e.g. 'to be or [12] to be'")
    p.add_argument("--show", action="store_true", help="draw the first sample live in the terminal as it is unmasked")
    p.add_argument("--visualize", type=Path, metavar="DIR", help="save a PNG strip and an animated GIF of the first sample's unmasking in DIR")
    p.add_argument("--evaluate", action="store_true", help="report generative perplexity (SmolLM2-135M), unigram entropy, repeated 4-grams, NFE and time per sample")
    p.add_argument("--evaluator", type=Path, help="with --evaluate: score the samples with this autoregressive run (trained with --objective ar) instead of SmolLM2-135M")
    p.add_argument("--out", type=Path, help="file to write the samples to (default: RUN_DIR/samples/<time>.txt, or .png for images)")
    p.add_argument("--label", type=_nonneg_int, action="append", metavar="CLASS", help="image runs of a class-conditional model: the class of the samples (repeatable, cycled; default: every class in turn)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight w: log mu = (1 + w) log mu(.|c) - w log mu(.|no class); 0 (default): the conditional model, -1: the unconditional one")
    p.add_argument("--no-kv-cache", action="store_true", help="block diffusion runs: recompute the finished blocks at every network call instead of caching their keys and values (the same samples, slower; a check)")
    _weights_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    from maskdiff.experiments import EXPERIMENTS, SCALES

    lines = "\n".join(f"  {name:18s} {e.question}" for name, e in EXPERIMENTS.items())
    lines += ("\n  samplers           Samplers at equal network calls per sample: MDLM ancestral / cached, first-hitting, ReMDM "
              "(cap, rescale, conf, loop), threshold decoding (Fast-dLLM) and block diffusion (BD3-LM, L' = 4 and 16, its own "
              "models); gen-PPL under the project's AR model and "
              "SmolLM2, entropy, repeats (scales: test, cpu)")
    p = sub.add_parser("experiment", help="re-run one of the papers' comparisons over seeds, with 95%% intervals",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train every variant of a comparison with the same budget for several seeds, evaluate them on the "
                                   "same validation sequences, and write a Markdown + JSON table with 95% intervals over seeds and "
                                   "a verdict per paper trend. An interrupted experiment resumes.\n\nexperiments:\n" + lines)
    p.add_argument("name", help=f"one of: {', '.join(EXPERIMENTS)}, samplers")
    p.add_argument("--scale", default="cpu", help=f"budget: {', '.join(SCALES)} (default: cpu, minutes per variant on 2 cores; gpu is bigger)")
    p.add_argument("--seeds", type=_positive_int, help="seeds per variant (default: 3)")
    p.add_argument("--out", type=Path, help="output folder (default: experiments/NAME-SCALE)")
    _device_arg(p)

    p = sub.add_parser("exponents", help="list (and plot) a GenMD4 run's learned per-token exponents",
                       description="Print the learned exponent w_v of every token of a GenMD4 run (alpha_{t,v} = 1 - t^w_v: a larger "
                                   "w_v keeps v unmasked longer in the forward process, so it is generated earlier), sorted.")
    p.add_argument("run_dir", type=Path, help="a run directory trained with --objective genmd4")
    p.add_argument("--plot", type=Path, help="also draw a bar chart PNG to this file")
    _weights_args(p)

    from maskdiff.cli.text import add_text_commands

    add_text_commands(sub, _positive_int, _device_arg)

    from maskdiff.cli.pretrained import add_pretrained_commands

    add_pretrained_commands(sub, _positive_int, _device_arg)
    from maskdiff.cli.serve import add_serve_command

    add_serve_command(sub, _positive_int, _nonneg_int, _device_arg)

    p = sub.add_parser("demo", help="train tiny on Shakespeare, report BPC, print samples", description="Train the tiny preset on text8-style Shakespeare (reusing or resuming --run-dir) for a time budget: the machine's throughput is measured on the first steps and the run sized to fit. Then report validation BPC with a 95% interval beside the unigram baseline, print samples from the EMA weights and draw the learning curve (learning_curve.png in the run directory).")
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    p.add_argument("--budget", type=_positive_float, default=180.0, help="seconds of training a new run is sized to (default: 180)")
    p.add_argument("--steps", type=_positive_int, help="training steps instead of sizing the run to --budget")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs: auto (a GPU when PyTorch sees one, else the CPU), cpu or cuda (default: auto)")


def _weights_args(p: argparse.ArgumentParser) -> None:
    _device_arg(p)
    p.add_argument("--checkpoint", type=Path, help="a checkpoint directory (default: the run's newest valid one)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of their EMA")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def cmd_train(args) -> int:
    from maskdiff.config import RunConfig
    from maskdiff.presets import get_preset
    from maskdiff.train import train
    from maskdiff.validation import complete_backbone, validate_config

    if args.config:
        try:
            config = RunConfig.from_dict(json.loads(args.config.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise MaskdiffError(f"config file {args.config} does not exist") from None
        except json.JSONDecodeError as err:
            raise MaskdiffError(f"config file {args.config} is not valid JSON ({err})") from None
    else:
        config = get_preset(args.preset)
    for flag, section, name, _ in TRAIN_OVERRIDES:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            setattr(getattr(config, section), name, value)
    if args.schedule_arg:
        config.diffusion.schedule_args = dict(args.schedule_arg)
    if args.time_conditioned:
        config.model.time_conditioned = True
    if args.no_carry_over:
        config.diffusion.carry_over = False
    if args.no_zero_mask:
        config.diffusion.zero_mask = False
    if args.masked_logits is not None:
        config.model.masked_logits = args.masked_logits
    complete_backbone(config)
    validate_config(config)
    run_dir = args.run_dir or Path("runs") / config.preset
    result = train(config, run_dir, progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 130 if result.interrupted else 0
    if result.resumed_from is not None and result.resumed_from >= config.train.steps:
        print(f"{run_dir} is already trained to step {result.step}; nothing to do (raise --steps to continue)")
    else:
        how = f"resumed from step {result.resumed_from}" if result.resumed_from is not None else "from scratch"
        print(f"trained {run_dir} to step {result.step} ({how}, {result.seconds:.0f} s)")
    return 130 if result.interrupted else 0


def cmd_eval(args) -> int:
    import maskdiff
    from maskdiff.pipeline import eval_chunks

    pipe = maskdiff.load(args.run_dir, checkpoint=args.checkpoint, ema=not args.raw_weights, device=args.device)
    from maskdiff.modalities import get_modality

    modality = get_modality(pipe.config)
    own_unit, words = modality.report_unit(pipe.tokenizer)
    unit = args.unit or own_unit
    modality.check_unit(unit, pipe.tokenizer)
    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, args.split, args.corpus)
    if args.limit:
        tokens, valid = tokens[: args.limit], valid[: args.limit]
    t0 = time.perf_counter()
    result = pipe.evaluate(
        tokens, valid, discrete_steps=args.discrete_steps, passes=args.passes,
        batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress,
    )
    seconds = time.perf_counter() - t0
    corpus = args.corpus or pipe.config.data.corpus
    kind = pipe.describe_estimate(args.discrete_steps)
    print(f"{corpus} {args.split}: {result.summary(unit)}")
    print(f"  {int(result.tokens.sum())} {words} in {result.nelbo.numel()} sequences, {kind}, "
          f"{args.passes} pass(es), {pipe.weights} weights of step {pipe.step}, {seconds:.1f} s")
    if result.length is not None:
        print(f"  includes -log p(length) = {float(result.length.sum()) / float(result.tokens.sum()):.4f} nats per token "
              "(row lengths of the training split, add-one smoothing): a bound on -log p(x), not -log p(x | length)")
    if args.json:
        record = dict(result.to_dict(), run_dir=str(args.run_dir), split=args.split, corpus=corpus, passes=args.passes,
                      discrete_steps=args.discrete_steps, weights=pipe.weights, step=pipe.step, seconds=seconds)
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")
    if args.probe or args.fid:
        from maskdiff.cli.media import extra_evaluations

        extra = extra_evaluations(args, pipe)
        if args.json:
            args.json.write_text(json.dumps(dict(record, **extra), indent=1), encoding="utf-8")
    return 0


def cmd_sample(args) -> int:
    import maskdiff
    from maskdiff.sampling import get_sampler

    get_sampler(args.sampler)  # fail on a bad name before loading anything
    if args.evaluator and not args.evaluate:
        raise MaskdiffError("--evaluator chooses the LM of --evaluate; add --evaluate")
    pipe = maskdiff.load(args.run_dir, checkpoint=args.checkpoint, ema=not args.raw_weights, device=args.device)
    kwargs = {}
    if args.temperature != 1.0 or args.top_p != 1.0:
        kwargs.update(temperature=args.temperature, top_p=args.top_p)
    if args.grid != "uniform":
        if args.sampler in ("first-hitting", "threshold"):
            raise MaskdiffError(f"the {args.sampler} sampler has no time grid; leave out --grid")
        kwargs["grid"] = args.grid
    kwargs.update(_sampler_options(args))
    callbacks = []
    recorder = None
    if args.visualize:
        from maskdiff.visualize import FrameRecorder

        recorder = FrameRecorder()
        callbacks.append(recorder)
    if args.show:
        from maskdiff.visualize import TerminalView

        callbacks.append(TerminalView(pipe.tokenizer.decode, pipe.tokenizer.mask_id))
    if callbacks:
        kwargs["callback"] = lambda x: [cb(x) for cb in callbacks]
    if args.no_kv_cache:
        kwargs["kv_cache"] = False
    from maskdiff.modalities import get_modality

    if get_modality(pipe.config).renders_images or args.label or args.guidance:
        from maskdiff.cli.media import sample_images_command

        return sample_images_command(args, pipe, kwargs)
    out = pipe.sample(args.num, length=args.length, steps=args.steps, sampler=args.sampler, seed=args.seed,
                      prompt=args.prompt, template=args.template, block=args.block,
                      progress=not (args.no_progress or args.show), **kwargs)
    for i, text in enumerate(out.texts):
        print(f"--- sample {i} ({int(out.nfe[i])} network calls)\n{text}")
    print(f"{args.num} samples, {out.sampler} sampler, {out.steps} steps, mean NFE {out.nfe.float().mean():.1f}, {out.seconds:.1f} s")
    path = args.out or Path(args.run_dir) / "samples" / f"{time.strftime('%Y%m%d-%H%M%S')}-{out.sampler}-{out.steps}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(out.texts) + "\n", encoding="utf-8")
    print(f"saved to {path}")
    if recorder is not None:
        from maskdiff.visualize import save_gif, save_strip

        strip = save_strip(recorder.frames, pipe.tokenizer.decode, pipe.tokenizer.mask_id, args.visualize / "unmasking.png")
        gif = save_gif(recorder.frames, pipe.tokenizer.decode, pipe.tokenizer.mask_id, args.visualize / "unmasking.gif")
        print(f"unmasking of sample 0 ({len(recorder.frames)} states): {strip}, {gif}")
    if args.evaluate:
        from maskdiff.evaluation.quality import report_for_samples

        evaluator = None
        if args.evaluator:
            from maskdiff.evaluation.judge import RunEvaluatorLM

            evaluator = RunEvaluatorLM.from_run(args.evaluator, device=args.device)
        report = report_for_samples(out, out.sampler, out.steps, evaluator=evaluator, progress=not args.no_progress,
                                    device=pipe.device)
        print(report.summary())
    return 0


def _sampler_options(args) -> dict:
    """The options of the remasking and threshold samplers, refused with any other sampler."""
    groups = {"remdm-": {"eta": "eta", "t_on": "t_on", "t_off": "t_off", "alpha_on": "alpha_on"},
              "threshold": {"threshold": "threshold", "decode_block": "block_size", "kv_cache": "cache"}}
    out = {}
    for prefix, options in groups.items():
        for flag, kwarg in options.items():
            value = getattr(args, flag)
            if value is None:
                continue
            if not args.sampler.startswith(prefix):
                which = "the remdm-* samplers" if prefix == "remdm-" else "the threshold sampler"
                raise MaskdiffError(f"--{flag.replace('_', '-')} applies to {which}, not to {args.sampler}")
            if flag in ("t_on", "t_off", "alpha_on") and args.sampler != "remdm-loop":
                raise MaskdiffError(f"--{flag.replace('_', '-')} applies to remdm-loop, not to {args.sampler}")
            out[kwarg] = value
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from maskdiff.cli.pretrained import PRETRAINED_HANDLERS
    from maskdiff.cli.text import TEXT_HANDLERS

    handlers = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "demo": _demo, "experiment": cmd_experiment,
                "exponents": cmd_exponents, **TEXT_HANDLERS, "serve": _serve, **PRETRAINED_HANDLERS}
    try:
        return handlers[args.command](args)
    except MaskdiffError as err:
        print(f"maskdiff {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_experiment(args) -> int:
    from maskdiff.experiments import EXPERIMENTS, get_experiment, get_scale, run_experiment

    if args.name not in EXPERIMENTS and args.name != "samplers":
        raise MaskdiffError(f"unknown experiment {args.name!r}; choose one of: {', '.join(EXPERIMENTS)}, samplers")
    if args.name == "samplers":
        from maskdiff.sampler_comparison import get_sampler_scale, run_sampler_experiment

        get_sampler_scale(args.scale)
        run_sampler_experiment(args.scale, args.out, seeds=args.seeds, device=args.device)
        return 0
    get_experiment(args.name), get_scale(args.scale)  # fail on a bad name before any work
    run_experiment(args.name, args.scale, args.out, seeds=args.seeds, device=args.device)
    return 0


def cmd_exponents(args) -> int:
    import maskdiff

    pipe = maskdiff.load(args.run_dir, checkpoint=args.checkpoint, ema=not args.raw_weights, device=args.device)
    if not pipe.objective.learns_schedule:
        raise MaskdiffError(f"{args.run_dir} is a {pipe.kind} run; exponents exist only for --objective genmd4")
    w = pipe.objective.exponents.exponents.detach()
    labels = [repr(pipe.tokenizer.decode([i])) for i in range(w.numel())]
    order = sorted(range(w.numel()), key=lambda i: -float(w[i]))
    print(f"learned GenMD4 exponents of {args.run_dir} (step {pipe.step}, {pipe.weights} weights), largest first:")
    for i in order:
        print(f"  {labels[i]:>6s}  w = {float(w[i]):.4f}")
    if args.plot:
        from maskdiff.visualize import save_bar_chart

        save_bar_chart([labels[i] for i in order], [float(w[i]) for i in order], args.plot,
                       title="GenMD4 exponents w_v (alpha = 1 - t^w)", reference=1.0)
        print(f"wrote {args.plot}")
    return 0


def _serve(args) -> int:
    from maskdiff.cli.serve import cmd_serve

    return cmd_serve(args)


def _demo(args) -> int:
    from maskdiff.cli.demo import run_demo

    return run_demo(args.run_dir, steps=args.steps, progress=not args.no_progress, budget_s=args.budget)


if __name__ == "__main__":
    sys.exit(main())
