"""``maskdiff sample``: draw samples, print them and save them (image runs: a PNG grid, see media.py)."""
from __future__ import annotations

from pathlib import Path

from maskdiff.cli.args import load_run, nonneg_int, positive_int, weights_args
from maskdiff.errors import MaskdiffError
from maskdiff.runs import sample_file

DESCRIPTION = ("Draw samples and print them; they are also saved under RUN_DIR/samples/. A model samples with its own "
               "sampler when it has one (GenMD4, autoregressive, block diffusion: block by block with a key-value cache of the "
               "finished blocks, any --length, stopping at the end-of-text token), otherwise with any of these. Samplers: {}.")


def description() -> str:
    """The command's description, its samplers listed from the registry (name: what it draws)."""
    from maskdiff.sampling.registry import REGISTRY

    return DESCRIPTION.format("; ".join(f"{n} ({e.law})" for n, e in REGISTRY.items()))


def register(sub) -> None:
    from maskdiff.sampling.registry import REGISTRY

    p = sub.add_parser("sample", help="draw samples (prompts, infilling, longer than L)", description=description())
    p.add_argument("run_dir", type=Path, help="a run directory made by maskdiff train, or a model folder (maskdiff export / convert)")
    p.add_argument("--num", type=positive_int, help="number of samples (default: 4)")
    p.add_argument("--length", type=positive_int, help="tokens per sample (default: the training length L; longer is generated semi-autoregressively)")
    p.add_argument("--block", type=positive_int, help="semi-autoregressive block size for lengths beyond L (default: L/4)")
    p.add_argument("--steps", type=positive_int, help="reverse steps T (default: the steps a distilled run was made for, else 256; first-hitting needs no grid)")
    p.add_argument("--sampler", help=f"one of: {', '.join(REGISTRY)} (default: the model's own sampler; else cached for a "
                   "time-independent network, ancestral for a time-conditioned one). Each sampler's options are the flags below")
    add_sampler_flags(p)
    p.add_argument("--prompt", help="a fixed prefix; the sampler fills what follows")
    p.add_argument("--template", help="text with [N] spans of N characters to fill, e.g. 'to be or [12] to be'")
    p.add_argument("--prompts-file", type=Path, metavar="JSONL", help="many prompts per call: one JSON object per line with a "
                   "\"prompt\" or a \"template\" and optionally \"length\" and \"seed\"; writes JSON lines (the input fields "
                   "plus text, tokens, network_calls, seconds, eos) to --out (default: RUN_DIR/samples/<time>.jsonl). Each row "
                   "has its own seed (derived from --seed and its line's place unless it gives one)")
    p.add_argument("--batch-size", type=positive_int, help="with --prompts-file: rows drawn together (network calls "
                   "batched); it changes the speed, not the samples (default: 8)")
    eos = p.add_mutually_exclusive_group()
    eos.add_argument("--stop-at-eos", dest="stop_at_eos", action="store_const", const=True, default=None,
                     help="cut each text before its first generated end-of-text token (default: on with a prompt, a template "
                     "or --prompts-file when the tokenizer has one, e.g. GPT-2's <|endoftext|> or BERT's [SEP]; off otherwise)")
    eos.add_argument("--no-stop-at-eos", dest="stop_at_eos", action="store_const", const=False, help="keep the whole texts")
    p.add_argument("--show", action="store_true", help="draw the first sample live in the terminal as it is unmasked")
    p.add_argument("--visualize", type=Path, metavar="DIR", help="save a PNG strip and an animated GIF of the first sample's unmasking in DIR")
    p.add_argument("--evaluate", action="store_true", help="report generative perplexity (SmolLM2-135M unless --judge or --evaluator), unigram entropy, repeated 4-grams, NFE and time per sample")
    p.add_argument("--judge", type=Path, metavar="FOLDER", help="with --evaluate: score the samples with this local Hugging Face causal LM folder (config, weights and tokenizer, e.g. GPT-2 Large saved with save_pretrained) instead of SmolLM2-135M")
    p.add_argument("--evaluator", type=Path, metavar="RUN_DIR", help="with --evaluate: score the samples with this maskdiff autoregressive run (trained with --objective ar) instead of SmolLM2-135M")
    p.add_argument("--out", type=Path, help="file to write the samples to (default: RUN_DIR/samples/<time>.txt, or .png for images)")
    p.add_argument("--label", type=nonneg_int, action="append", metavar="CLASS", help="image runs of a class-conditional model: the class of the samples (repeatable, cycled; default: every class in turn)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight w: log mu = (1 + w) log mu(.|c) - w log mu(.|no class); 0 (default): the conditional model, -1: the unconditional one")
    weights_args(p)
    add_runtime_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_runtime_flags(p) -> None:
    """--precision and --compile: how the network runs (maskdiff.network_runtime), for sample and serve."""
    from maskdiff.network_runtime import PRECISIONS

    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="arithmetic of the network call: fp32 (default) or bf16 (bfloat16 autocast of the network only; the "
                   "sampler's probabilities and draws stay float32); the names training's --precision takes. bf16 is for GPUs: on the CPU it runs, usually slower")
    p.add_argument("--compile", action="store_true", help="torch.compile the network's forward (its transformer blocks); each "
                   "new shape compiles at its first call, which the first samples' seconds include. On the CPU it needs a C++ "
                   "compiler (g++ or clang)")


def runtime_note(args) -> str:
    """', bf16, compiled' (what of --precision and --compile differs from the default), for summaries."""
    return "".join(([f", {args.precision}"] if args.precision != "fp32" else []) + ([", compiled"] if args.compile else []))


def add_sampler_flags(p) -> None:
    """One flag per sampler option of the registry (maskdiff.sampling.registry): its type, choices and help
    come from the entries that take it; a flag left out is None, so the sampler's own default applies."""
    from maskdiff.sampling.registry import MASKED_SAMPLERS, REGISTRY, cli_options

    for flag, (option, owners) in cli_options().items():
        helps = list(dict.fromkeys(REGISTRY[n].option(option.name).help for n in owners if REGISTRY[n].option(option.name)))
        who = "" if set(owners) >= set(MASKED_SAMPLERS) else f" [{', '.join(owners)}]"
        default = "" if option.kind is bool or option.default is None or len(helps) > 1 else f" (default: {option.default})"
        off = "switch off: " if option.kind is bool and option.default is True else ""
        p.add_argument(flag, **option.argparse_kwargs((off + "; ".join(helps) + default + who).replace("%", "%%")))


def sampler_options(args, sampler: str) -> dict:
    """The keyword arguments of ``sampler`` from the sampler flags given; a flag the sampler does not take is
    refused, naming the samplers that do."""
    from maskdiff.sampling.registry import sampler_kwargs

    return sampler_kwargs(sampler, vars(args))


def run(args) -> int:
    from maskdiff.modalities import get_modality
    from maskdiff.sampling.registry import REGISTRY, get_entry

    if args.sampler is not None:
        get_entry(args.sampler, tuple(REGISTRY))  # fail on a bad name before loading anything
    for flag in ("evaluator", "judge"):
        if getattr(args, flag) and not args.evaluate:
            raise MaskdiffError(f"--{flag} chooses the LM of --evaluate; add --evaluate")
    if args.evaluator and args.judge:
        raise MaskdiffError("--judge (a Hugging Face causal LM folder) and --evaluator (a maskdiff AR run) both choose the LM of --evaluate; give one")
    if args.judge:
        from maskdiff.evaluation.judge import check_judge_folder

        check_judge_folder(args.judge)  # before sampling
    if args.prompts_file is not None:
        _refuse_with_prompts_file(args)
        from maskdiff.cli.prompts_file import read_prompts

        read_prompts(args.prompts_file)  # a bad line fails before the model is loaded
    elif args.batch_size is not None:
        raise MaskdiffError("--batch-size goes with --prompts-file (rows drawn together); leave it out or add --prompts-file")
    args.num = 4 if args.num is None else args.num
    args.batch_size = 8 if args.batch_size is None else args.batch_size
    pipe = load_run(args)
    pipe.set_runtime(args.precision, args.compile)
    args.steps = args.steps or pipe.default_steps
    args.sampler = args.sampler or pipe.target().default_sampler
    kwargs = sampler_options(args, args.sampler)
    if args.prompts_file is not None:
        from maskdiff.cli.prompts_file import run_prompts_file

        return run_prompts_file(args, pipe, kwargs)
    recorder = _add_callbacks(args, pipe, kwargs)
    if get_modality(pipe.config).renders_images or args.label or args.guidance:
        from maskdiff.cli.media import sample_images_command

        return sample_images_command(args, pipe, kwargs)
    out = pipe.sample(args.num, length=args.length, steps=args.steps, sampler=args.sampler, seed=args.seed,
                      prompt=args.prompt, template=args.template, block=args.block, stop_at_eos=_stop_at_eos(args, pipe),
                      progress=not (args.no_progress or args.show), **kwargs)
    for i, text in enumerate(out.texts):
        print(f"--- sample {i} ({int(out.nfe[i])} network calls)\n{text}")
    print(f"{args.num} samples, {out.sampler} sampler, {out.steps} steps, mean NFE {out.nfe.float().mean():.1f}, {out.seconds:.1f} s"
          f"{runtime_note(args)}")
    path = args.out or sample_file(args.run_dir, out.sampler, out.steps, ".txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(out.texts) + "\n", encoding="utf-8")
    print(f"saved to {path}")
    if recorder is not None:
        from maskdiff.visualize import save_gif, save_strip

        strip = save_strip(recorder.frames, pipe.tokenizer.decode, pipe.tokenizer.mask_id, args.visualize / "unmasking.png")
        gif = save_gif(recorder.frames, pipe.tokenizer.decode, pipe.tokenizer.mask_id, args.visualize / "unmasking.gif")
        print(f"unmasking of sample 0 ({len(recorder.frames)} states): {strip}, {gif}")
    if args.evaluate:
        _evaluate(args, pipe, out)
    return 0


def _refuse_with_prompts_file(args) -> None:
    """--prompts-file gives the rows: the flags of one shared prompt, or of pictures and evaluation, do not apply."""
    given = [f for f, v in (("--prompt", args.prompt), ("--template", args.template), ("--num", args.num), ("--label", args.label),
                            ("--guidance", args.guidance), ("--show", args.show), ("--visualize", args.visualize),
                            ("--evaluate", args.evaluate)) if v]
    if given:
        raise MaskdiffError(f"--prompts-file gives the rows (one per line); leave out {', '.join(given)}")


def _stop_at_eos(args, pipe) -> bool:
    """--stop-at-eos as given, else on for a prompt or template when the tokenizer has an end-of-text token."""
    has_eos = getattr(pipe.tokenizer, "eos_id", None) is not None
    if args.stop_at_eos and not has_eos:
        raise MaskdiffError("this run's tokenizer has no end-of-text token to stop at (GPT-2 BPE, BERT WordPiece and Hugging Face "
                            "tokenizers with an EOS or SEP token have one); leave out --stop-at-eos")
    if args.stop_at_eos is not None:
        return args.stop_at_eos
    return has_eos and (args.prompt is not None or args.template is not None)


def _add_callbacks(args, pipe, kwargs: dict):
    """--visualize and --show: a per-step callback in ``kwargs``; returns the frame recorder of --visualize, or None."""
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
    return recorder


def _evaluate(args, pipe, out) -> None:
    """--evaluate: generative perplexity (SmolLM2-135M, --judge's causal LM or --evaluator's AR run), entropy, repeats, NFE, time."""
    from maskdiff.evaluation.quality import report_for_samples

    evaluator = None
    if args.judge:
        from maskdiff.evaluation.judge import EvaluatorLM

        evaluator = EvaluatorLM.from_pretrained(args.judge)
        evaluator.model.to(pipe.device)
    elif args.evaluator:
        from maskdiff.evaluation.judge import RunEvaluatorLM

        evaluator = RunEvaluatorLM.from_run(args.evaluator, device=args.device)
    report = report_for_samples(out, out.sampler, out.steps, evaluator=evaluator, progress=not args.no_progress,
                                device=pipe.device)
    print(report.summary())
