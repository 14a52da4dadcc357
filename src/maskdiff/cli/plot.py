"""``maskdiff plot``: the learning curves of one or several runs in one PNG (maskdiff.plotting)."""
from __future__ import annotations

from pathlib import Path

from maskdiff.errors import MaskdiffError


def register(sub) -> None:
    from maskdiff.plotting import METRICS, SMOOTH_STEPS, X_AXES

    p = sub.add_parser("plot", help="learning curves of one or several runs as a PNG",
                       description="Draw the learning curves of one or several runs from their log.jsonl in one PNG: the training "
                                   "NELBO estimate (bits per token, averaged over --smooth steps) and the validation NELBO with its "
                                   "95% interval as a band (runs trained with --eval-every). Works while the runs train.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories made by maskdiff train")
    p.add_argument("--out", type=Path, help="the PNG to write (default: learning_curves.png in the first run)")
    p.add_argument("--x", choices=X_AXES, default="step",
                   help="draw against the step, the tokens seen, or the training time summed over resumes (default: step)")
    p.add_argument("--metric", choices=METRICS, default="both",
                   help="the training loss, the validation NELBO with its interval, or both (default: both)")
    p.add_argument("--smooth", type=int, default=SMOOTH_STEPS, metavar="STEPS",
                   help=f"average the training loss over windows of this many steps (default: {SMOOTH_STEPS}; 1: none)")
    p.add_argument("--title", default="", help="a title above the chart")


def run(args) -> int:
    from maskdiff.plotting import learning_curves
    from maskdiff.runs import read_log, read_run_config

    if args.smooth < 1:
        raise MaskdiffError(f"--smooth must be at least 1 step, got {args.smooth}")
    if args.out is not None and args.out.suffix.lower() != ".png":
        raise MaskdiffError(f"the chart is a PNG; give --out a .png name, not {args.out.name}")
    names = [r.name for r in args.runs]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x: tell them apart by their whole path
        names = [str(r) for r in args.runs]
    runs = {}
    for name, run_dir in zip(names, args.runs):
        config = read_run_config(run_dir)
        runs[name] = (read_log(run_dir), config.train.batch_size * config.data.length)
    out = args.out or args.runs[0] / "learning_curves.png"
    path = learning_curves(runs, out, x=args.x, metric=args.metric, smooth_steps=args.smooth, title=args.title)
    print(f"learning curves of {len(runs)} run(s) against {args.x}: {path}")
    return 0
