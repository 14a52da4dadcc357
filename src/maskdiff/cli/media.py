"""The command line's DNA and image extras: ``maskdiff eval --probe`` / ``--fid N`` and image sampling
(``maskdiff sample`` on an image run writes a PNG grid)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch

from maskdiff.errors import MaskdiffError


def extra_evaluations(args, pipe) -> dict:
    from maskdiff.modalities import get_modality

    modality = get_modality(pipe.config)
    out = {}
    if args.probe:
        if not modality.has_species_probe:
            raise MaskdiffError(f"--probe is for DNA runs; this run's modality is {modality.name!r}")
        from maskdiff.evaluation.probe import species_probe

        result = species_probe(pipe, args.corpus or pipe.config.data.corpus)
        print(result.summary())
        out.update(result.to_dict())
    if args.fid:
        if not modality.renders_images:
            raise MaskdiffError(f"--fid is for image runs; this run's modality is {modality.name!r}")
        out.update(image_fid(args, pipe))
    return out


def fid_reference(args, pipe) -> SimpleNamespace:
    """What every FID of a run against one split shares, whatever the samples: the classifier trained
    here (cached in the run directory), its features on the held-out images, and the distance of as many
    real training images as ``args.fid`` samples (the floor)."""
    from maskdiff.data.images import load_images
    from maskdiff.evaluation.fid import classifier_outputs, fid_classifier, frechet_distance

    d, tok = pipe.config.data, pipe.tokenizer
    train = load_images(d.corpus, "train", size=d.image_size, levels=tok.levels)
    held = load_images(args.corpus or d.corpus, args.split, size=d.image_size, levels=tok.levels)
    fmap = fid_classifier(args.run_dir, train.tokens, train.labels, held.tokens, held.labels, tok.levels, tok.height)
    f_held, _ = classifier_outputs(fmap.net, held.tokens, tok.levels, tok.height)
    real = train.tokens[torch.randperm(train.tokens.shape[0], generator=torch.Generator().manual_seed(args.seed))[: args.fid]]
    f_real, _ = classifier_outputs(fmap.net, real, tok.levels, tok.height)
    return SimpleNamespace(fmap=fmap, f_held=f_held, held_images=held.tokens.shape[0],
                           floor=frechet_distance(f_real, f_held))


def image_fid(args, pipe, reference: Optional[SimpleNamespace] = None) -> dict:
    """``maskdiff eval --fid N [--guidance w]``: N samples against the held-out split. ``reference``
    (:func:`fid_reference` for the same run, split, N and seed) saves recomputing it, e.g. over weights."""
    from maskdiff.evaluation.fid import LABEL, classifier_outputs, frechet_distance
    from maskdiff.modalities.image_sampling import class_labels, sample_images

    ref = reference or fid_reference(args, pipe)
    tok = pipe.tokenizer
    n = args.fid
    classes = pipe.config.model.num_classes
    labels = class_labels(n, classes) if classes else None
    samples = sample_images(pipe, n, labels=labels, guidance=args.guidance, steps=args.sample_steps, seed=args.seed,
                            progress=not args.no_progress)
    f_samp, pred = classifier_outputs(ref.fmap.net, samples.tokens, tok.levels, tok.height)
    fid = frechet_distance(f_samp, ref.f_held)
    record = {"fid_ours": fid, "fid_ours_real_train_vs_heldout": ref.floor, "fid_samples": n, "fid_heldout_images": ref.held_images,
              "fid_classifier_accuracy": ref.fmap.accuracy, "guidance": args.guidance, "fid_note": LABEL}
    line = (f"{LABEL}: {fid:.3f} ({n} samples vs {ref.held_images} {args.split} images; real training images score "
            f"{ref.floor:.3f}; classifier {100 * ref.fmap.accuracy:.1f}% accurate on {args.split}")
    if labels is not None:
        agree = float((pred == labels).double().mean())
        record["samples_classified_as_their_label"] = agree
        line += f"; {100 * agree:.1f}% of samples classified as their label, guidance w = {args.guidance:g}"
    print(line + ")")
    return record


def sample_images_command(args, pipe, sampler_kwargs) -> int:
    """``maskdiff sample`` on an image run: draw, print one as ASCII art, save a PNG grid."""
    from maskdiff.data.images import save_grid
    from maskdiff.modalities.image_sampling import class_labels, sample_images

    from maskdiff.modalities import get_modality
    from maskdiff.runs import sample_file

    if not get_modality(pipe.config).renders_images:
        raise MaskdiffError("--label and --guidance are for class-conditional image runs")
    for flag in ("prompt", "template", "length", "block"):
        if getattr(args, flag) is not None:
            raise MaskdiffError(f"--{flag} is for sequences; an image run samples whole images")
    classes = pipe.config.model.num_classes
    labels = class_labels(args.num, classes, args.label) if classes else None
    if args.label and not classes:
        raise MaskdiffError("this run is not class-conditional; --label needs a run trained with --num-classes")
    out = sample_images(pipe, args.num, labels=labels, guidance=args.guidance, steps=args.steps, sampler=args.sampler,
                        seed=args.seed, progress=not (args.no_progress or args.show), **sampler_kwargs)
    tok = pipe.tokenizer
    print(f"--- sample 0{'' if labels is None else f' (class {int(labels[0])})'}\n{tok.decode(out.tokens[0])}")
    how = "unconditional" if labels is None else f"class-conditional, guidance w = {args.guidance:g}"
    print(f"{args.num} images ({how}), {args.sampler} sampler, {args.steps} steps, mean NFE {out.nfe.float().mean():.1f}, {out.seconds:.1f} s")
    path = args.out or sample_file(args.run_dir, args.sampler, args.steps, ".png")
    if path.suffix.lower() != ".png":
        raise MaskdiffError(f"image samples are saved as a PNG grid; give --out a .png name, not {path.name}")
    columns = classes if labels is not None and not args.label else 8
    save_grid(out.tokens, tok.levels, tok.height, tok.width, path, columns=columns)
    print(f"saved a grid of {args.num} images to {path}")
    return 0
