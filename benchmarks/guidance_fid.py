"""Sample quality of a class-conditional image run against the classifier-free guidance weight w.

For each w it runs what ``maskdiff eval RUN --fid N --guidance w`` runs: N samples (balanced over the
classes, cached sampler, one step per pixel unless --sample-steps), the Frechet distance between the
features of the classifier trained here on the samples and on the held-out split (NOT comparable with
the papers' Inception FID), the same distance for N real training images (the floor at this sample
size), and the share of samples the classifier assigns to the class they were drawn for. w = -1 is the
unconditional model, w = 0 the conditional one; larger w trades diversity for class fidelity, which is
what the table shows. Writes JSON under benchmarks/results/ and prints a Markdown table.

    .venv/bin/python benchmarks/guidance_fid.py runs/digits --weights=-1,0,1,2,4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_run_result  # noqa: E402

import maskdiff  # noqa: E402
from maskdiff.cli.media import fid_reference, image_fid  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a class-conditional image run (e.g. --preset digits)")
    ap.add_argument("--weights", default="-1,0,1,2,4", help="comma-separated guidance weights w")
    ap.add_argument("--num", type=int, default=500, help="samples per weight")
    ap.add_argument("--split", default="test", help="the held-out split the features are compared with")
    ap.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default: one per pixel)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = maskdiff.load(args.run_dir)
    if pipe.config.data.modality != "image" or not pipe.config.model.num_classes:
        raise SystemExit(f"{args.run_dir} is not a class-conditional image run")
    ns = SimpleNamespace(run_dir=args.run_dir, corpus=None, split=args.split, fid=args.num, guidance=0.0,
                         sample_steps=args.sample_steps, seed=args.seed, no_progress=True)
    reference = fid_reference(ns, pipe)  # classifier, held-out features and real-image floor: once for every w
    rows = []
    for w in (float(x) for x in args.weights.split(",")):
        ns.guidance = w
        rows.append(image_fid(ns, pipe, reference))

    print("\n| guidance w | FID-by-our-classifier | real training images | samples classified as their label |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['guidance']:g} | {r['fid_ours']:.2f} | {r['fid_ours_real_train_vs_heldout']:.2f} | "
              f"{100 * r['samples_classified_as_their_label']:.1f}% |")
    write_run_result("guidance_fid", pipe, args, rows)


if __name__ == "__main__":
    main()
