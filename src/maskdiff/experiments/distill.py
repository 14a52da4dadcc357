"""Few-step students against their teacher: ``maskdiff experiment distill``.

The teacher (the ``tiny`` preset: character-level Shakespeare, L = 128) and the project's autoregressive
judge (the same preset with ``--objective ar``) are trained here, the teacher is distilled by SDTT
(``maskdiff.distill``: each round halves its sampling steps), and every row is sampled with several
sampling seeds: the teacher at each T of the scale's grid, and each round's student at the T it was
distilled for, all through the caching sampler (the ancestral chain's law on the uniform grid, a
network call only when a sample changed: the table gives the calls per sample); then the teacher at each
T of the scale's few-step grid and each student at its T through the dilated sampler (sampling/dilated.py:
the same counts per step, the positions of a step spread over the sequence). Quality is generative
perplexity under the AR judge and under SmolLM2-135M (``maskdiff.evaluation.judge``), beside unigram
entropy and repeated character 4-grams (gen-PPL alone rewards dull, repetitive text).

Each row is compared with the teacher at its largest T (the reference, 1024 steps at scale cpu) on the
paired per-seed differences (same sampling seed): the ratio of gen-PPL per judge and the relative
change of unigram entropy, each with a 95% Student-t interval over seeds (``experiments.base``). The
target of the distillation, for a row of at most ``TARGET_CALLS`` calls per sample: gen-PPL within 10%
of the reference under both judges and unigram entropy within 2%. Its verdict is ``met`` when every
interval lies inside those bounds, ``missed`` when one lies entirely outside, ``undecided`` otherwise.
Each student is also compared with the teacher at the same T: does distillation help at all?

Records (one per row and seed) are kept under OUT/records and the runs under OUT/runs: an interrupted
experiment resumes, a finished one rewrites its tables from the records. A run folder made elsewhere
with the same configuration can be placed (or linked) at OUT/runs/teacher, OUT/runs/judge and
OUT/runs/student: it is reused when its config, the learning rate of every logged step and its step
match the scale's, and refused otherwise (``experiments.reuse``); a student folder is reused when its
distill.json names the same teacher folder and settings (``maskdiff.distill``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from maskdiff.distill import DistillSettings
from maskdiff.experiments.base import (ci_text, get_named, judges, measure_texts, results_folder, t_interval, table, write_json,
                                      write_results)
from maskdiff.experiments.provenance import provenance, short_commit
from maskdiff.experiments.reuse import logged_seconds, train_to

TARGET_CALLS = 32
"""The target's budget: network calls per sample."""
TARGET_PPL_RATIO = 1.10
"""The target: gen-PPL at most this multiple of the reference's, under every judge."""
TARGET_ENTROPY = 0.02
"""The target: unigram entropy within this relative distance of the reference's."""
MET, MISSED, UNDECIDED = "met", "missed", "undecided"
DILATED = "dilated"
"""The few-step sampler of the extra rows (sampling/dilated.py)."""
HELD_OUT = "held-out text"


@dataclass
class DistillScale:
    """The size of the distillation experiment: the teacher and the judge (the ``tiny`` preset, resized
    where a field is non-zero), the distillation, and the samples that judge every row."""

    teacher_steps: int
    """Length of the teacher's learning-rate schedule (train.steps)."""
    teacher_stop: int
    """Steps the teacher is trained (at most ``teacher_steps``: a schedule cut short)."""
    judge_steps: int
    """Length of the AR judge's learning-rate schedule."""
    judge_stop: int
    """Steps the AR judge is trained (at most ``judge_steps``)."""
    distill: DistillSettings
    """How the teacher is distilled (its rounds give the student rows)."""
    teacher_grid: Tuple[int, ...]
    """The teacher's sampling steps T, one row each; the largest is the reference."""
    dilated_grid: Tuple[int, ...]
    """The teacher's steps T by the dilated sampler, one row each (each round's student gets one at its T too)."""
    samples: int
    """Samples per row and seed."""
    seeds: int
    """Sampling seeds (every row draws with the same seeds: the pairing)."""
    smollm2: bool
    """Also judge with SmolLM2-135M (about 30 s to load)."""
    width: int = 0
    """Transformer width (0: the preset's)."""
    depth: int = 0
    """Transformer blocks (0: the preset's)."""
    heads: int = 0
    """Attention heads (0: the preset's)."""
    length: int = 0
    """Sequence length L (0: the preset's)."""
    batch_size: int = 0
    """Sequences per training step of the teacher and the judge (0: the preset's)."""
    corpus: str = ""
    """The corpus of every model (a name or a text file; '': the preset's Shakespeare)."""


DISTILL_SCALES: Dict[str, DistillScale] = {
    # seconds, for the test suite only: numbers mean nothing
    "test": DistillScale(teacher_steps=4, teacher_stop=3, judge_steps=3, judge_stop=3, teacher_grid=(4, 8), dilated_grid=(4,), samples=2, seeds=2,
                         distill=DistillSettings(rounds=2, steps_per_round=2, start_steps=8, batch_size=2, warmup_steps=1,
                                                 checkpoint_every=2),
                         smollm2=False, width=32, depth=1, heads=2, length=16, batch_size=4),
    # the tiny preset for 900 steps, the AR judge 462 steps of a 1500-step schedule, two rounds 64 -> 32 -> 16 steps
    # of 900 steps each, 14 rows x 5 seeds: 45 minutes on one thread of an AMD EPYC (docs/results.md, "distill")
    "cpu": DistillScale(teacher_steps=900, teacher_stop=900, judge_steps=1500, judge_stop=462,
                        teacher_grid=(16, 32, 64, 128, 256, 512, 1024), dilated_grid=(8, 16, 32), samples=32, seeds=5,
                        smollm2=True,
                        distill=DistillSettings(rounds=2, steps_per_round=900, start_steps=64, batch_size=16, lr=2e-4,
                                                warmup_steps=50, ema_decay=0.995, checkpoint_every=100)),
}


def get_distill_scale(name: str) -> DistillScale:
    """The scale ``name`` of the distillation experiment, or a MaskdiffError naming the valid ones."""
    return get_named(DISTILL_SCALES, name, "scale of the distill experiment")


@dataclass
class Row:
    """One row of the table: a model folder sampled with T steps."""

    label: str
    """Its name in the table and in ``records/``."""
    folder: Path
    """The run folder sampled (the teacher, or a round's student)."""
    steps: int
    """The sampling grid's T."""
    sampler: str = "cached"
    """The sampler: 'cached' (the ancestral chain's law) or 'dilated' (sampling/dilated.py)."""


def distill_rows(teacher: Path, student: Path, grid: Tuple[int, ...], settings: DistillSettings,
                 dilated_grid: Tuple[int, ...] = ()) -> List[Row]:
    """The teacher at every T of ``grid``, then each round's student (OUT/rounds/T<steps>) at its own T, all by
    the caching sampler; then, by the dilated sampler, the teacher at every T of ``dilated_grid`` and each
    round's student at its own T (labels 'teacher dilated T=16', 'student dilated T=16')."""
    from maskdiff.distill.rounds import ROUNDS_DIR

    students = [(settings.student_steps(r), Path(student) / ROUNDS_DIR / f"T{settings.student_steps(r)}") for r in range(settings.rounds)]
    rows = [Row(f"teacher T={T}", Path(teacher), T) for T in sorted(grid)]
    rows += [Row(f"student T={T}", folder, T) for T, folder in students]
    if dilated_grid:
        rows += [Row(f"teacher {DILATED} T={T}", Path(teacher), T, DILATED) for T in sorted(dilated_grid)]
        rows += [Row(f"student {DILATED} T={T}", folder, T, DILATED) for T, folder in students]
    return rows


def _record_path(records: Path, label: str, seed: int) -> Path:
    return records / f"{label.replace(' ', '_').replace('=', '')}-s{seed}.json"


def held_out_records(teacher: Path, evaluators: dict, samples: int, seeds: int, records: Path) -> List[dict]:
    """Context rows: ``samples`` validation sequences of the training length per seed, judged alike."""
    import torch

    import maskdiff
    from maskdiff.modalities import eval_chunks

    records.mkdir(parents=True, exist_ok=True)
    out, pipe = [], None
    for seed in range(seeds):
        path = _record_path(records, HELD_OUT, seed)
        if not path.exists():
            if pipe is None:
                pipe = maskdiff.load(teacher)
                tokens, _ = eval_chunks(pipe.config, pipe.tokenizer, "validation")
                order = torch.randperm(tokens.shape[0] - 1, generator=torch.Generator().manual_seed(0))
            texts = pipe.tokenizer.decode_batch(tokens[order[seed * samples:(seed + 1) * samples]])
            write_json(path, dict(label=HELD_OUT, steps=0, seed=seed, nfe=0.0, seconds=0.0, examples=texts[:2],
                                  **measure_texts(texts, evaluators)))
        out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def evaluate_rows(rows: List[Row], evaluators: dict, samples: int, seeds: int, records: Path, device: str = "cpu",
                  log=print) -> List[dict]:
    """Every row sampled for every seed (seed s draws with generator seed 1000 + s in every row) and
    measured, seed by seed (a run stopped early leaves every row with the same seeds); a (row, seed)
    whose record exists is read back instead (an interrupted run resumes)."""
    import maskdiff
    from maskdiff.sampling.request import SampleRequest

    records.mkdir(parents=True, exist_ok=True)
    out, pipes = [], {}
    for seed in range(seeds):
        for row in rows:
            path = _record_path(records, row.label, seed)
            if not path.exists():
                pipe = pipes.get(row.folder) or pipes.setdefault(row.folder, maskdiff.load(row.folder, device=device))
                s = pipe.draw(SampleRequest(num=samples, sampler=row.sampler, steps=row.steps, seed=1000 + seed))
                texts = pipe.tokenizer.decode_batch(s.tokens.cpu())
                write_json(path, dict(label=row.label, sampler=row.sampler, steps=row.steps, seed=seed, nfe=float(s.nfe.float().mean()),
                                      seconds=s.seconds / samples, examples=texts[:2], **measure_texts(texts, evaluators)))
                log(f"  {row.label}, seed {seed}: calls {s.nfe.float().mean():.1f}, " +
                    ", ".join(f"{k} {v:.3f}" for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k.startswith("nll_")))
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def _paired(a: Dict[int, float], b: Dict[int, float]) -> Optional[Tuple[float, float, float]]:
    """(mean, low, high) of the per-seed differences a - b over the seeds both have; None under 2 seeds."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    return t_interval(diffs) if len(diffs) >= 2 else None


def target_verdict(entry: dict, judges) -> str:
    """``met``, ``missed`` or ``undecided`` for a row of at most TARGET_CALLS calls, ``-`` for the others
    (``entry``: a summary row with its ratios to the reference and their intervals)."""
    if not 0 < entry["nfe"] <= TARGET_CALLS or "entropy_vs_reference" not in entry:
        return "-"
    ppl = [entry[f"vs_reference_{k}"]["ci95"] for k in judges]
    ent = entry["entropy_vs_reference"]["ci95"]
    if ent is None or any(ci is None for ci in ppl):
        return UNDECIDED
    if all(hi <= TARGET_PPL_RATIO for _, hi in ppl) and -TARGET_ENTROPY <= ent[0] and ent[1] <= TARGET_ENTROPY:
        return MET
    if any(lo > TARGET_PPL_RATIO for lo, _ in ppl) or ent[0] > TARGET_ENTROPY or ent[1] < -TARGET_ENTROPY:
        return MISSED
    return UNDECIDED


def summarise(records: List[dict], judges: Dict[str, str], reference: str) -> dict:
    """Per row: means over seeds with 95% intervals (gen-PPL as exp of the mean NLL and of its bounds),
    the paired ratios to ``reference`` and the target's verdict; each student against the teacher at its T."""
    by_label: Dict[str, dict] = {}
    per_seed = {label: {r["seed"]: r for r in records if r["label"] == label} for label in dict.fromkeys(r["label"] for r in records)}
    ref = per_seed.get(reference, {})
    for label, rs in per_seed.items():
        recs = [rs[s] for s in sorted(rs)]
        e = {"steps": recs[0]["steps"], "seeds": len(recs), "nfe": sum(r["nfe"] for r in recs) / len(recs),
             "seconds_per_sample": sum(r["seconds"] for r in recs) / len(recs),
             "unigram_entropy": t_interval([r["unigram_entropy"] for r in recs]),
             "repeated_4gram_rate": t_interval([r["repeated_4gram_rate"] for r in recs]), "example": recs[0]["examples"][0]}
        for k in judges:
            m, lo, hi = t_interval([r[f"nll_{k}"] for r in recs])
            e[f"gen_ppl_{k}"] = [math.exp(m), math.exp(lo) if lo == lo else lo, math.exp(hi) if hi == hi else hi]
            if ref and label != reference:
                p = _paired({s: r[f"nll_{k}"] for s, r in rs.items()}, {s: r[f"nll_{k}"] for s, r in ref.items()})
                e[f"vs_reference_{k}"] = {"ratio": math.exp(p[0]), "ci95": [math.exp(p[1]), math.exp(p[2])]} if p else \
                    {"ratio": None, "ci95": None}
        if ref and label != reference:
            base = sum(r["unigram_entropy"] for r in ref.values()) / len(ref)
            p = _paired({s: r["unigram_entropy"] / base for s, r in rs.items()}, {s: r["unigram_entropy"] / base for s, r in ref.items()})
            e["entropy_vs_reference"] = {"change": p[0], "ci95": [p[1], p[2]]} if p else {"change": None, "ci95": None}
        e["target"] = target_verdict(e, judges) if label != HELD_OUT else "-"
        by_label[label] = e
    versus = []
    for label, rs in per_seed.items():
        twin = label.replace("student", "teacher")
        if label.startswith("student") and twin in per_seed:
            v = {"student": label, "teacher": twin}
            for k in judges:
                p = _paired({s: r[f"nll_{k}"] for s, r in rs.items()}, {s: r[f"nll_{k}"] for s, r in per_seed[twin].items()})
                v[k] = {"verdict": "not run"} if p is None else {
                    "ratio": math.exp(p[0]), "ci95": [math.exp(p[1]), math.exp(p[2])],
                    "verdict": "student better" if p[2] < 0 else "teacher better" if p[1] > 0 else "not resolved"}
            versus.append(v)
    return {"rows": by_label, "versus_teacher": versus, "judges": judges, "reference": reference}


def _ratio_cell(d: Optional[dict]) -> str:
    if not d or d.get("ci95") is None:
        return "-"
    return f"{d['ratio']:.3f} ({ci_text(d['ci95'], '.3f')})"


def markdown(summary: dict) -> str:
    """The rows with calls, seconds, gen-PPL per judge, the ratios to the reference, entropy, repeats and the
    target's verdict; then each student against the teacher at the same T."""
    judges, ref = summary["judges"], summary["reference"]
    head = f"### distill (scale {summary.get('scale', '-')}, {summary.get('seeds', '-')} sampling seeds x " \
           f"{summary.get('samples', '-')} samples, commit {short_commit(summary) if 'commit' in summary else '-'})"
    rows = []
    for label, e in summary["rows"].items():
        ent = e.get("entropy_vs_reference") or {}
        rows.append([label, f"{e['nfe']:.1f}", f"{e['seconds_per_sample']:.3f}",
                     *(f"{e['gen_ppl_' + k][0]:.2f} ({ci_text(e['gen_ppl_' + k][1:], '.2f')})" for k in judges),
                     *(_ratio_cell(e.get(f"vs_reference_{k}")) for k in judges),
                     f"{e['unigram_entropy'][0]:.3f}",
                     "-" if ent.get("ci95") is None else f"{100 * ent['change']:+.2f}% ({ci_text([100 * x for x in ent['ci95']], '+.2f')})",
                     f"{e['repeated_4gram_rate'][0]:.3f}", e["target"]])
    lines = [head, ""] + table(["row", "calls / sample", "s / sample", *(f"gen-PPL {n} (95% CI)" for n in judges.values()),
                                *(f"x {ref}, {n} (paired 95% CI)" for n in judges.values()), "unigram entropy (bits)",
                                f"entropy vs {ref} (paired 95% CI)", "repeated 4-grams",
                                f"target (<= {TARGET_CALLS} calls, gen-PPL <= {TARGET_PPL_RATIO:.2f}x, entropy +-{100 * TARGET_ENTROPY:.0f}%)"],
                               rows)
    if summary["versus_teacher"]:
        rows = [[f"{v['student']} vs {v['teacher']}",
                 *(v[k]["verdict"] if "ci95" not in v[k] else f"{_ratio_cell(v[k])}: {v[k]['verdict']}" for k in judges)]
                for v in summary["versus_teacher"]]
        lines += [""] + table(["distillation at equal T", *(f"gen-PPL ratio, {n} (paired 95% CI): verdict" for n in judges.values())],
                              rows)
    return "\n".join(lines) + "\n"


def plots(summary: dict, folder: Path, stem: str) -> List[Path]:
    """One PNG per judge: gen-PPL (with its interval) against log2 calls per sample, teacher and student."""
    from maskdiff.visualize import save_line_chart

    paths = []
    for key, name in summary["judges"].items():
        series, bands = {}, {}
        for who, dilated, legend in (("teacher", False, "teacher (cached sampler)"), ("student", False, "student (SDTT rounds)"),
                                     ("teacher", True, "teacher (dilated sampler)"), ("student", True, "student (dilated sampler)")):
            es = sorted((e for label, e in summary["rows"].items()
                         if label.startswith(who) and (DILATED in label) == dilated and e["nfe"] > 0), key=lambda e: e["nfe"])
            if es:
                series[legend] = [(math.log2(e["nfe"]), e[f"gen_ppl_{key}"][0]) for e in es]
                if all(e[f"gen_ppl_{key}"][1] == e[f"gen_ppl_{key}"][1] for e in es):
                    bands[legend] = [(math.log2(e["nfe"]), *e[f"gen_ppl_{key}"][1:]) for e in es]
        ref = summary["rows"].get(summary["reference"])
        hlines = {f"{TARGET_PPL_RATIO:.2f} x {summary['reference']}": TARGET_PPL_RATIO * ref[f"gen_ppl_{key}"][0]} if ref else {}
        paths.append(save_line_chart(series, folder / f"{stem}_{key}.png", hlines=hlines, bands=bands,
                                     title=f"gen-PPL under {name} against network calls per sample",
                                     xlabel="log2 network calls per sample", ylabel=f"gen-PPL ({name})"))
    return paths


def _config(scale: DistillScale, objective: str, steps: int):
    """The tiny preset (resized where the scale says) with ``objective`` and a ``steps``-step schedule, seed 0."""
    from maskdiff.presets import tiny

    cfg = tiny()
    cfg.diffusion.objective = objective
    cfg.train.steps, cfg.train.threads = steps, 1
    for name, section in (("width", "model"), ("depth", "model"), ("heads", "model"), ("length", "data"), ("batch_size", "train")):
        if getattr(scale, name):
            setattr(getattr(cfg, section), name, getattr(scale, name))
    if scale.corpus:
        cfg.data.corpus = scale.corpus
    if scale.width:
        cfg.model.cond_dim = min(cfg.model.cond_dim, scale.width)
    return cfg


def run_distill_experiment(scale_name: Union[str, DistillScale] = "cpu", out=None, *, seeds: Optional[int] = None, log=print,
                           device: str = "auto") -> dict:
    """Train the teacher and the judge (or reuse them), distil, sample every row for every seed, write
    results.json/.md and one plot per judge. ``scale_name``: a name of DISTILL_SCALES, or a DistillScale."""
    from maskdiff.distill import distill
    from maskdiff.distributed import pick_device

    scale = scale_name if isinstance(scale_name, DistillScale) else get_distill_scale(scale_name)
    scale_name = scale_name if isinstance(scale_name, str) else "custom"
    out, n_seeds = results_folder(out, f"distill-{scale_name}", seeds, scale.seeds)
    dev = str(pick_device(device))
    runs = out / "runs"
    rows = distill_rows(runs / "teacher", runs / "student", scale.teacher_grid, scale.distill, scale.dilated_grid)
    log(f"experiment distill at scale {scale_name}: {len(rows)} rows x {n_seeds} seeds x {scale.samples} samples -> {out}")
    train_to(_config(scale, "masked", scale.teacher_steps), runs / "teacher", scale.teacher_stop, dev)
    train_to(_config(scale, "ar", scale.judge_steps), runs / "judge", scale.judge_stop, dev)
    distill(runs / "teacher", runs / "student", scale.distill, device=dev, progress=False, log=log)
    evaluators = judges(runs / "judge", scale.smollm2, dev)
    records = held_out_records(runs / "teacher", evaluators, scale.samples, n_seeds, out / "records")
    records += evaluate_rows(rows, evaluators, scale.samples, n_seeds, out / "records", dev, log)
    summary = summarise(records, {k: ev.name for k, ev in evaluators.items()}, f"teacher T={max(scale.teacher_grid)}")
    summary.update(experiment="distill", scale=scale_name, scale_config=asdict(scale), seeds=n_seeds, samples=scale.samples,
                   **provenance(dev), train_seconds={name: logged_seconds(runs / name) for name in ("teacher", "judge", "student")},
                   distill=json.loads((runs / "student" / "distill.json").read_text(encoding="utf-8")))
    summary["plots"] = [str(p) for p in plots(summary, out, "gen_ppl")]
    write_results(out, summary, markdown, log)
    return summary
