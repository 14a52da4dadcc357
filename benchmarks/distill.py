"""Few-step generation: a teacher at T = 16 ... 1024 steps beside each of its distilled students
(``maskdiff distill``), at equal network calls per sample.

    PYTHONPATH=src .venv/bin/python benchmarks/distill.py --teacher RUN --student OUT --evaluator AR_RUN

Every row (the teacher at each T; each finished round of the student, OUT/rounds/T<steps>, at the steps it
was distilled for) draws ``--samples`` samples of the training length for each of ``--seeds`` sampling seeds
with the caching sampler (the ancestral chain's law on the same uniform grid, calling the network only
when a sample changed), in float32 on the CPU unless --device says otherwise. Per row and seed: network
calls and seconds per sample, generative perplexity under the project's AR judge (``--evaluator``, an
``ar`` run on the same data) and under SmolLM2-135M, unigram entropy and repeated character 4-grams
(maskdiff.evaluation.metrics). Figures are means over seeds with 95% Student-t intervals; each row is
compared with the teacher at 1024 steps on the paired per-seed difference of log gen-PPL (same seed),
as every maskdiff experiment judges a claim (maskdiff.experiments.base). The target of the distillation:
at most 32 calls with gen-PPL within 10% of the teacher's at 1024 steps under both judges and unigram
entropy within 2%. Writes results JSON (machine, commit, config) under benchmarks/results/, a Markdown
table and two plots (gen-PPL against calls per sample, one per judge) beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, machine_info, write_result  # noqa: E402

import maskdiff  # noqa: E402
from maskdiff.experiments.base import ci_text, paired_verdict, t_interval, table  # noqa: E402

TEACHER_STEPS = (16, 32, 64, 128, 256, 512, 1024)
REFERENCE = "teacher T=1024"


def measure(texts, evaluators) -> dict:
    from maskdiff.evaluation.metrics import repeated_ngram_rate, unigram_entropy

    out = {"unigram_entropy": unigram_entropy(texts), "repeated_4gram_rate": repeated_ngram_rate(texts, 4)}
    for key, ev in evaluators.items():
        sums, counts = ev.nll(texts)
        out[f"nll_{key}"] = sum(sums) / sum(counts)
    return out


def rows(teacher: Path, student: Path):
    """(label, run folder, steps) of every row: the teacher's grid, then each finished round of the student."""
    out = [(f"teacher T={T}", teacher, T) for T in TEACHER_STEPS]
    rounds = sorted((student / "rounds").glob("T*"), key=lambda p: -int(p.name[1:]))
    return out + [(f"student T={p.name[1:]}", p, int(p.name[1:])) for p in rounds]


def summarise(records, keys):
    summary = {}
    for label in dict.fromkeys(r["label"] for r in records):
        rs = sorted((r for r in records if r["label"] == label), key=lambda r: r["seed"])
        e = {"steps": rs[0]["steps"], "seeds": len(rs), "nfe": sum(r["nfe"] for r in rs) / len(rs),
             "seconds_per_sample": sum(r["seconds"] for r in rs) / len(rs),
             "unigram_entropy": t_interval([r["unigram_entropy"] for r in rs]),
             "repeated_4gram_rate": t_interval([r["repeated_4gram_rate"] for r in rs]), "example": rs[0]["examples"][0]}
        for key in keys:
            m, lo, hi = t_interval([r[f"nll_{key}"] for r in rs])
            e[f"gen_ppl_{key}"] = [math.exp(m), math.exp(lo) if lo == lo else lo, math.exp(hi) if hi == hi else hi]
            ref = {r["seed"]: r[f"nll_{key}"] for r in records if r["label"] == REFERENCE}
            p = paired_verdict({r["seed"]: r[f"nll_{key}"] for r in rs}, ref, "not resolved")
            e[f"vs_reference_{key}"] = {"ratio": math.exp(p.mean) if p.seeds else None,
                                       "ratio_ci95": [math.exp(p.low), math.exp(p.high)] if p.seeds > 1 else None}
        summary[label] = e
    ref = summary.get(REFERENCE)
    for e in summary.values():
        if ref is not None:
            e["entropy_vs_reference"] = e["unigram_entropy"][0] / ref["unigram_entropy"][0] - 1
            e["meets_target"] = (0 < e["nfe"] <= 32 and all(e[f"gen_ppl_{k}"][0] <= 1.10 * ref[f"gen_ppl_{k}"][0] for k in keys)
                                 and abs(e["entropy_vs_reference"]) <= 0.02)
    return summary


def markdown(summary, names) -> str:
    head = ["row", "calls / sample", "s / sample", *(f"gen-PPL {n} (95% CI)" for n in names.values()),
            *(f"x T=1024, {n} (paired 95% CI)" for n in names.values()), "unigram entropy (bits)", "vs T=1024",
            "repeated 4-grams", "target met"]
    body = []
    for label, e in summary.items():
        ppl = [f"{e['gen_ppl_' + k][0]:.2f} ({ci_text(e['gen_ppl_' + k][1:], '.2f')})" for k in names]
        rel = [("-" if e[f"vs_reference_{k}"]["ratio_ci95"] is None or label == REFERENCE else
                f"{e[f'vs_reference_{k}']['ratio']:.3f} ({ci_text(e[f'vs_reference_{k}']['ratio_ci95'], '.3f')})") for k in names]
        body.append([label, f"{e['nfe']:.1f}", f"{e['seconds_per_sample']:.3f}", *ppl, *rel, f"{e['unigram_entropy'][0]:.3f}",
                     f"{100 * e.get('entropy_vs_reference', 0):+.1f}%", f"{e['repeated_4gram_rate'][0]:.3f}",
                     "yes" if e.get("meets_target") else "no"])
    return "\n".join(table(head, body)) + "\n"


def plot(summary, key: str, name: str, path: Path) -> Path:
    from maskdiff.visualize import save_line_chart

    series = {}
    for who in ("teacher", "student"):
        pts = sorted((math.log2(e["nfe"]), e[f"gen_ppl_{key}"][0]) for label, e in summary.items() if label.startswith(who) and e["nfe"] > 0)
        if pts:
            series[f"{who} (cached sampler{', distilled rounds' if who == 'student' else ''})"] = pts
    return save_line_chart(series, path, title=f"gen-PPL under {name} against network calls per sample",
                           xlabel="log2 network calls per sample", ylabel=f"gen-PPL ({name})")


def held_out(args, evaluators, records) -> None:
    """Context rows: real validation text of the same length (``--samples`` rows per seed), judged alike."""
    import torch

    from maskdiff.modalities import eval_chunks

    pipe = maskdiff.load(args.teacher)
    tokens, _ = eval_chunks(pipe.config, pipe.tokenizer, "validation")
    order = torch.randperm(tokens.shape[0] - 1, generator=torch.Generator().manual_seed(0))
    for seed in range(args.seeds):
        path = args.work / f"held-out-s{seed}.json"
        if not path.exists():
            texts = pipe.tokenizer.decode_batch(tokens[order[seed * args.samples:(seed + 1) * args.samples]])
            path.write_text(json.dumps(dict(label="held-out text", steps=0, seed=seed, nfe=0.0, seconds=0.0, examples=texts[:2],
                                            **measure(texts, evaluators)), indent=1))
        records.append(json.loads(path.read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="the teacher's run folder")
    ap.add_argument("--student", type=Path, required=True, help="the folder maskdiff distill wrote (its rounds/T*/ are read)")
    ap.add_argument("--evaluator", type=Path, required=True, help="an autoregressive run (--objective ar) on the same data")
    ap.add_argument("--samples", type=int, default=16, help="samples per row and seed (default: 16)")
    ap.add_argument("--seeds", type=int, default=3, help="sampling seeds (default: 3)")
    ap.add_argument("--no-smollm2", action="store_true", help="judge with the AR run only")
    ap.add_argument("--device", default="cpu", help="where the models run (default: cpu)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/distill_bench"), help="records of finished rows (an interrupted run resumes)")
    ap.add_argument("--out", help="the results JSON (default: benchmarks/results/distill_<device>_<time>.json)")
    args = ap.parse_args()

    from maskdiff.evaluation.judge import EvaluatorLM, RunEvaluatorLM
    from maskdiff.sampling.request import SampleRequest

    evaluators = {"ar": RunEvaluatorLM.from_run(args.evaluator, device=args.device)}
    if not args.no_smollm2:
        evaluators["smollm2"] = EvaluatorLM.smollm2()
    names = {k: ev.name for k, ev in evaluators.items()}
    args.work.mkdir(parents=True, exist_ok=True)
    records = []
    held_out(args, evaluators, records)
    for label, folder, T in rows(args.teacher, args.student):
        pipe = maskdiff.load(folder, device=args.device)
        for seed in range(args.seeds):
            path = args.work / f"{label.replace(' ', '_').replace('=', '')}-s{seed}.json"
            if path.exists():
                records.append(json.loads(path.read_text()))
                continue
            s = pipe.draw(SampleRequest(num=args.samples, sampler="cached", steps=T, seed=1000 + seed))
            texts = pipe.tokenizer.decode_batch(s.tokens)
            rec = dict(label=label, steps=T, seed=seed, nfe=float(s.nfe.float().mean()), seconds=s.seconds / args.samples,
                       examples=texts[:2], **measure(texts, evaluators))
            path.write_text(json.dumps(rec, indent=1))
            records.append(rec)
        print(f"{label}: calls {records[-1]['nfe']:.1f}, " + ", ".join(f"{k} {v:.3f}" for k, v in records[-1].items() if k.startswith("nll_")),
              flush=True)
    summary = summarise(records, list(evaluators))
    text = markdown(summary, names)
    print(text)
    payload = {"benchmark": "distill", "machine": machine_info(args.device), "commit": git_commit(),
               "config": {k: str(v) for k, v in vars(args).items()}, "evaluators": names,
               "distill": json.loads((args.student / "distill.json").read_text()), "rows": summary, "records": records}
    path = write_result("distill", args.device, payload, args.out)
    path.with_suffix(".md").write_text(text)
    for key, name in names.items():
        print(plot(summary, key, name, path.with_name(f"{path.stem}_{key}.png")))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
