"""``maskdiff sample``: draw samples, print them and save them (image runs: a PNG grid, see media.py)."""
from __future__ import annotations

from pathlib import Path

from maskdiff.cli.args import load_run, nonneg_int, positive_float, positive_int, weights_args
from maskdiff.errors import MaskdiffError
from maskdiff.runs import sample_file

DESCRIPTION = ("Draw samples and print them; they are also saved under RUN_DIR/samples/. Samplers: ancestral (the T-step chain), "
               "cached (the same law, reuses the network output while a sample is unchanged: at most min(T, L) calls), mean "
               "(MD4's two-stage draw, same law), greedy (argmax values, biased), first-hitting (exact, no grid, exactly L calls), "
               "confidence (MaskGIT / LLaDA, biased), remdm-cap / remdm-rescale / remdm-conf / remdm-loop (ReMDM's remasking: "
               "tokens may be masked again and redrawn; same forward marginals; --eta, --t-on, --t-off, --alpha-on), threshold (Fast-dLLM's "
               "parallel decoding: fills every position whose confidence exceeds --threshold, at least one per call; "
               "--decode-block, --kv-cache). Block diffusion runs (--objective block) sample with their own sampler: block by "
               "block, --steps ancestral steps per block, with a key-value cache of the finished blocks, any --length, stopping "
               "at the end-of-text token where the tokenizer has one.")


def register(sub) -> None:
    from maskdiff.sampling import SAMPLERS

    p = sub.add_parser("sample", help="draw samples (prompts, infilling, longer than L)", description=DESCRIPTION)
    p.add_argument("run_dir", type=Path, help="a run directory made by maskdiff train, or a model folder (maskdiff export / convert)")
    p.add_argument("--num", type=positive_int, default=4, help="number of samples (default: 4)")
    p.add_argument("--length", type=positive_int, help="tokens per sample (default: the training length L; longer is generated semi-autoregressively)")
    p.add_argument("--block", type=positive_int, help="semi-autoregressive block size for lengths beyond L (default: L/4)")
    p.add_argument("--steps", type=positive_int, default=256, help="reverse steps T (default: 256; first-hitting needs no grid)")
    p.add_argument("--sampler", default="cached", help=f"one of: {', '.join(SAMPLERS)} (default: cached)")
    p.add_argument("--grid", default="uniform", choices=["uniform", "cosine"], help="time grid: uniform t_k = k/T or MD4's cosine grid")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="divide log mu by this before drawing (biased unless 1)")
    p.add_argument("--top-p", type=positive_float, default=1.0, help="nucleus truncation of mu (biased unless 1)")
    p.add_argument("--eta", type=float, help="remdm-* samplers: eta_cap (remdm-cap), the held phase's sigma (remdm-loop, at most (1 - alpha_on)/alpha_on), eta_rescale (remdm-rescale) or the scale of sigma_max shared by confidence (remdm-conf), in [0, 1] (defaults: 0.02, 0.02, 1.0, 0.02)")
    p.add_argument("--t-on", type=float, help="remdm-loop: the time where the remasking loop starts (alpha is held at alpha_on; default 0.55)")
    p.add_argument("--alpha-on", type=float, help="remdm-loop: alpha held between t_on and t_off, in (0, 1) (default 0.9, ReMDM's)")
    p.add_argument("--t-off", type=float, help="remdm-loop: the time where the loop ends and plain unmasking resumes (default 0.05)")
    p.add_argument("--threshold", type=float, help="threshold sampler: fill every masked position whose confidence exceeds this, in [0, 1] (default 0.9; 1: one position per call, 0: a whole block per call)")
    p.add_argument("--decode-block", type=positive_int, help="threshold sampler: decode in blocks of this many positions, left to right (default: the whole sample)")
    p.add_argument("--kv-cache", choices=["none", "prefix", "dual"], help="threshold sampler: Fast-dLLM's approximate key/value cache within a block (default: none)")
    p.add_argument("--prompt", help="a fixed prefix; the sampler fills what follows")
    p.add_argument("--template", help="text with [N] spans of N characters to fill, e.g. 'to be or [12] to be'")
    p.add_argument("--show", action="store_true", help="draw the first sample live in the terminal as it is unmasked")
    p.add_argument("--visualize", type=Path, metavar="DIR", help="save a PNG strip and an animated GIF of the first sample's unmasking in DIR")
    p.add_argument("--evaluate", action="store_true", help="report generative perplexity (SmolLM2-135M), unigram entropy, repeated 4-grams, NFE and time per sample")
    p.add_argument("--evaluator", type=Path, help="with --evaluate: score the samples with this autoregressive run (trained with --objective ar) instead of SmolLM2-135M")
    p.add_argument("--out", type=Path, help="file to write the samples to (default: RUN_DIR/samples/<time>.txt, or .png for images)")
    p.add_argument("--label", type=nonneg_int, action="append", metavar="CLASS", help="image runs of a class-conditional model: the class of the samples (repeatable, cycled; default: every class in turn)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight w: log mu = (1 + w) log mu(.|c) - w log mu(.|no class); 0 (default): the conditional model, -1: the unconditional one")
    p.add_argument("--no-kv-cache", action="store_true", help="block diffusion runs: recompute the finished blocks at every network call instead of caching their keys and values (the same samples, slower; a check)")
    weights_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------------------------------
# SAMPLER OPTIONS: the command line's whole knowledge of which sampler takes which option lives in this
# one function (the samplers without a time grid, the remdm- prefix, remdm-loop's window, the threshold
# sampler's options). A sampler registry whose entries declare their options replaces it here.
# ---------------------------------------------------------------------------------------------------
def sampler_options(args) -> dict:
    """The keyword arguments of ``args.sampler`` from the flags, each refused with a sampler that does not
    take it: temperature and top-p (every sampler), --grid (not first-hitting or threshold), --eta (remdm-*),
    --t-on / --t-off (remdm-loop), --threshold / --decode-block / --kv-cache (threshold), --no-kv-cache
    (the block diffusion sampler)."""
    kwargs = {}
    if args.temperature != 1.0 or args.top_p != 1.0:
        kwargs.update(temperature=args.temperature, top_p=args.top_p)
    if args.grid != "uniform":
        if args.sampler in ("first-hitting", "threshold"):
            raise MaskdiffError(f"the {args.sampler} sampler has no time grid; leave out --grid")
        kwargs["grid"] = args.grid
    groups = {"remdm-": {"eta": "eta", "t_on": "t_on", "t_off": "t_off", "alpha_on": "alpha_on"},
              "threshold": {"threshold": "threshold", "decode_block": "block_size", "kv_cache": "cache"}}
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
            kwargs[kwarg] = value
    if args.no_kv_cache:
        kwargs["kv_cache"] = False
    return kwargs


def run(args) -> int:
    from maskdiff.modalities import get_modality
    from maskdiff.sampling import get_sampler

    get_sampler(args.sampler)  # fail on a bad name before loading anything
    if args.evaluator and not args.evaluate:
        raise MaskdiffError("--evaluator chooses the LM of --evaluate; add --evaluate")
    pipe = load_run(args)
    kwargs = sampler_options(args)
    recorder = _add_callbacks(args, pipe, kwargs)
    if get_modality(pipe.config).renders_images or args.label or args.guidance:
        from maskdiff.cli.media import sample_images_command

        return sample_images_command(args, pipe, kwargs)
    out = pipe.sample(args.num, length=args.length, steps=args.steps, sampler=args.sampler, seed=args.seed,
                      prompt=args.prompt, template=args.template, block=args.block,
                      progress=not (args.no_progress or args.show), **kwargs)
    for i, text in enumerate(out.texts):
        print(f"--- sample {i} ({int(out.nfe[i])} network calls)\n{text}")
    print(f"{args.num} samples, {out.sampler} sampler, {out.steps} steps, mean NFE {out.nfe.float().mean():.1f}, {out.seconds:.1f} s")
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
    """--evaluate: generative perplexity (SmolLM2-135M or --evaluator's AR run), entropy, repeats, NFE, time."""
    from maskdiff.evaluation.quality import report_for_samples

    evaluator = None
    if args.evaluator:
        from maskdiff.evaluation.judge import RunEvaluatorLM

        evaluator = RunEvaluatorLM.from_run(args.evaluator, device=args.device)
    report = report_for_samples(out, out.sampler, out.steps, evaluator=evaluator, progress=not args.no_progress,
                                device=pipe.device)
    print(report.summary())
