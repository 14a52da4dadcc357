"""`maskdiff experiment distill`: the target's verdict and the paired ratios on records whose answer is known,
and the whole experiment at its test scale (every row, the tables, the plots, a second call that resumes
from the records and reuses the runs, a run folder of another configuration or schedule refused)."""
import dataclasses
import math

import pytest

from helpers import assert_clean_error, run_main
from maskdiff.errors import MaskdiffError
from maskdiff.experiments.distill import DISTILL_SCALES, MET, MISSED, UNDECIDED, _config, distill_rows, markdown, \
    run_distill_experiment, summarise
from maskdiff.experiments.reuse import check_reusable, train_to

# the 97.5% quantile of Student's t with 2 degrees of freedom: t / sqrt(2 + t^2) = 0.95
T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
REF = "teacher T=1024"


def _recs(label, nfe, nlls, entropies):
    return [dict(label=label, steps=0, seed=s, nfe=nfe, seconds=0.0, examples=["x"], nll_ar=n, nll_smollm2=n + 1.0,
                 unigram_entropy=h, repeated_4gram_rate=0.0) for s, (n, h) in enumerate(zip(nlls, entropies))]


def test_paired_ratios_and_target_verdicts():
    """Ratios to the reference are exp of the paired mean log difference with its closed-form interval; the
    verdict is met inside every bound, missed outside one, undecided across one; over 32 calls it is '-'."""
    judges = {"ar": "AR", "smollm2": "SmolLM2"}
    recs = _recs(REF, 120.0, [2.0, 2.1, 1.9], [4.0, 4.0, 4.0])
    recs += _recs("student T=32", 31.5, [2.02, 2.13, 1.94], [4.0, 4.01, 3.99])  # differences 0.02, 0.03, 0.04
    recs += _recs("student T=16", 16.0, [2.3, 2.4, 2.2], [4.0, 4.0, 4.0])  # 1.35x: outside
    recs += _recs("teacher T=16", 16.0, [2.0, 2.3, 1.8], [4.0, 4.0, 4.0])  # 0, +0.2, -0.1: across 1.10
    recs += _recs("teacher T=64", 56.0, [2.0, 2.1, 1.9], [4.0, 4.0, 4.0])
    recs += _recs("teacher T=32", 31.5, [2.0, 2.1, 1.9], [4.2, 4.2, 4.2])  # entropy +5%: missed
    rows = summarise(recs, judges, REF)["rows"]
    half = T2 * 0.01 / math.sqrt(3)
    assert rows["student T=32"]["vs_reference_ar"]["ratio"] == pytest.approx(math.exp(0.03))
    assert rows["student T=32"]["vs_reference_ar"]["ci95"] == pytest.approx([math.exp(0.03 - half), math.exp(0.03 + half)])
    assert rows["student T=32"]["entropy_vs_reference"]["change"] == pytest.approx(0.0, abs=1e-12)
    assert [rows[k]["target"] for k in ("student T=32", "student T=16", "teacher T=16", "teacher T=64", "teacher T=32", REF)] == \
        [MET, MISSED, UNDECIDED, "-", MISSED, "-"]
    at32, at16 = summarise(recs, judges, REF)["versus_teacher"]  # each student against the teacher at its T (T=16: 0.3, 0.1, 0.4)
    assert (at32["student"], at32["teacher"], at32["ar"]["verdict"]) == ("student T=32", "teacher T=32", "teacher better")
    assert at16["ar"]["ratio"] == pytest.approx(math.exp(0.8 / 3)) and at16["ar"]["verdict"] == "not resolved"


def test_experiment_runs_resumes_and_refuses_another_run(tmp_path, plays):
    scale = dataclasses.replace(DISTILL_SCALES["test"], corpus=str(plays))
    logs = []
    summary = run_distill_experiment(scale, tmp_path, device="cpu", log=logs.append)
    rows = distill_rows(tmp_path / "runs" / "teacher", tmp_path / "runs" / "student", scale.teacher_grid, scale.distill,
                        scale.dilated_grid)
    labels = [r.label for r in rows]
    assert labels == ["teacher T=4", "teacher T=8", "student T=4", "student T=2", "teacher dilated T=4", "student dilated T=4",
                      "student dilated T=2"]
    assert [r.sampler for r in rows] == ["cached"] * 4 + ["dilated"] * 3
    assert list(summary["rows"]) == ["held-out text", *labels] and summary["reference"] == "teacher T=8"
    assert len(list((tmp_path / "records").glob("*.json"))) == 8 * scale.seeds
    assert summary["rows"]["teacher dilated T=4"]["nfe"] == 4 and summary["rows"]["student dilated T=2"]["nfe"] == 2
    assert [(v["student"], v["teacher"]) for v in summary["versus_teacher"]][-1] == ("student dilated T=4", "teacher dilated T=4")
    assert all(summary["rows"][k]["target"] in (MET, MISSED, UNDECIDED) for k in labels if k != "teacher T=8")
    assert summary["rows"]["student T=2"]["nfe"] <= 2 and summary["rows"]["teacher T=8"]["nfe"] <= 8
    assert (tmp_path / "results.md").read_text() == markdown(summary) and (tmp_path / "gen_ppl_ar.png").stat().st_size > 0
    assert summary["train_seconds"]["student"] > 0 and summary["distill"]["recommended_steps"] == 2
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")}
    again = run_distill_experiment(scale, tmp_path, device="cpu", log=logs.append)
    assert again["rows"] == summary["rows"]  # read back from the records
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")} == stamp  # nothing retrained
    with pytest.raises(MaskdiffError, match="diffusion.objective"):  # the judge's folder is not the teacher's
        train_to(_config(scale, "masked", scale.teacher_steps), tmp_path / "runs" / "judge", scale.teacher_stop, "cpu")
    with pytest.raises(MaskdiffError, match="past this scale"):
        train_to(_config(scale, "masked", scale.teacher_steps), tmp_path / "runs" / "teacher", scale.teacher_stop - 1, "cpu")


def test_a_run_whose_schedule_changed_midway_is_not_reused(tmp_path, plays):
    """Three steps under an 8-step schedule, resumed under a 4-step one (train.steps may change on a resume):
    its config now reads like the 4-step run, its logged learning rates do not (step 3's)."""
    from maskdiff.train import train

    scale = dataclasses.replace(DISTILL_SCALES["test"], corpus=str(plays))
    configs = [_config(scale, "masked", steps) for steps in (8, 4)]
    for cfg in configs:
        cfg.train.warmup_steps, cfg.train.log_every = 1, 1
    train_to(configs[0], tmp_path / "run", 3, "cpu")
    assert check_reusable(configs[0], tmp_path / "run", 4) == 3 and check_reusable(configs[0], tmp_path / "fresh", 4) == 0
    train(configs[1], tmp_path / "run", progress=False)
    with pytest.raises(MaskdiffError, match="another learning-rate schedule"):
        check_reusable(configs[1], tmp_path / "run", 4)


def test_help_lists_the_experiment_and_a_bad_scale_fails_in_one_line():
    proc = run_main("experiment", "--help")
    assert proc.returncode == 0 and "\n  distill " in proc.stdout and "samplers, sudoku, distill" in " ".join(proc.stdout.split())
    assert_clean_error(run_main("experiment", "distill", "--scale", "gpu"), "'gpu'", "test, cpu")
