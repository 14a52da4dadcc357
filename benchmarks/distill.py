"""Few-step generation of existing runs: a teacher at T = 16 ... 1024 steps beside each of its distilled
students (``maskdiff distill``), judged as ``maskdiff experiment distill`` judges its own runs.

    PYTHONPATH=src .venv/bin/python benchmarks/distill.py --teacher RUN --student OUT --evaluator AR_RUN
    PYTHONPATH=src .venv/bin/python benchmarks/distill.py --teacher RUN --teacher-steps 16 32 1024   # a teacher, SmolLM2 alone

The rows, the sampling, the measures (gen-PPL under the AR judge and SmolLM2-135M, unigram entropy,
repeated 4-grams), the paired intervals against the teacher at its largest T and the target's verdict are
the library's (maskdiff.experiments.distill); this script only points them at folders trained elsewhere
and writes the results JSON (machine, commit, config) under benchmarks/results/, with the Markdown table
and one plot per judge beside it. Records of finished (row, seed) pairs are kept in --work: an
interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, machine_info, write_result  # noqa: E402

from maskdiff.experiments.base import judges  # noqa: E402
from maskdiff.experiments.distill import distill_rows, evaluate_rows, held_out_records, markdown, plots, summarise  # noqa: E402

TEACHER_STEPS = (16, 32, 64, 128, 256, 512, 1024)


def main() -> None:
    from maskdiff.distill import DistillSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="the teacher's run folder")
    ap.add_argument("--student", type=Path, help="the folder maskdiff distill wrote (its rounds/T*/ are read; none: the teacher's rows only)")
    ap.add_argument("--evaluator", type=Path, help="an autoregressive run (--objective ar) on the same data (none: SmolLM2 alone)")
    ap.add_argument("--teacher-steps", type=int, nargs="+", default=list(TEACHER_STEPS), help="the teacher's rows (default: 16 ... 1024)")
    ap.add_argument("--dilated-steps", type=int, nargs="*", default=[8, 16, 32],
                    help="the teacher's rows by the dilated sampler, beside each student's (default: 8 16 32; none: leave them out)")
    ap.add_argument("--samples", type=int, default=32, help="samples per row and seed (default: 32)")
    ap.add_argument("--seeds", type=int, default=5, help="sampling seeds (default: 5)")
    ap.add_argument("--no-smollm2", action="store_true", help="judge with the AR run only")
    ap.add_argument("--device", default="cpu", help="where the models run (default: cpu)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/distill_bench"), help="records of finished rows (an interrupted run resumes)")
    ap.add_argument("--out", help="the results JSON (default: benchmarks/results/distill_<device>_<time>.json)")
    args = ap.parse_args()

    record = json.loads((args.student / "distill.json").read_text()) if args.student else {}
    settings = DistillSettings(**record["settings"]) if record else DistillSettings(rounds=0)  # no student: no student rows
    evaluators = judges(args.evaluator, not args.no_smollm2, args.device)
    rows = [r for r in distill_rows(args.teacher, args.student or args.teacher, tuple(args.teacher_steps), settings,
                                                  tuple(args.dilated_steps)) if r.folder.exists()]
    records = held_out_records(args.teacher, evaluators, args.samples, args.seeds, args.work)
    records += evaluate_rows(rows, evaluators, args.samples, args.seeds, args.work, args.device)
    summary = summarise(records, {k: ev.name for k, ev in evaluators.items()}, f"teacher T={max(args.teacher_steps)}")
    summary.update(seeds=args.seeds, samples=args.samples, scale="benchmark")
    payload = {"benchmark": "distill", "machine": machine_info(args.device), "commit": git_commit(),
               "config": {k: str(v) for k, v in vars(args).items()}, "distill": record, **summary, "records": records}
    path = write_result("distill", args.device, payload, args.out)
    text = markdown({**summary, "commit": payload["commit"]})
    path.with_suffix(".md").write_text(text)
    print(text)
    for p in plots(summary, path.parent, path.stem):
        print(p)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
