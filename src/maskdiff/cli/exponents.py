"""``maskdiff exponents``: a GenMD4 run's learned per-token exponents, listed and optionally plotted."""
from __future__ import annotations

from pathlib import Path

from maskdiff.cli.args import load_run, weights_args
from maskdiff.errors import MaskdiffError


def register(sub) -> None:
    p = sub.add_parser("exponents", help="list (and plot) a GenMD4 run's learned per-token exponents",
                       description="Print the learned exponent w_v of every token of a GenMD4 run (alpha_{t,v} = 1 - t^w_v: a larger "
                                   "w_v keeps v unmasked longer in the forward process, so it is generated earlier), sorted.")
    p.add_argument("run_dir", type=Path, help="a run directory trained with --objective genmd4")
    p.add_argument("--plot", type=Path, help="also draw a bar chart PNG to this file")
    weights_args(p)


def run(args) -> int:
    pipe = load_run(args)
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
