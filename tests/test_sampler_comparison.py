"""`maskdiff experiment samplers` at its test scale: every row runs, the table and verdicts are written, a
second call resumes from the records; the verdict logic on records whose answer is known."""
import json

import pytest

from helpers import assert_clean_error, run_cli
from maskdiff.sampler_comparison import SAMPLER_SCALES, _trend, run_sampler_experiment, sampler_rows


def test_rows_compare_at_equal_calls():
    """Grid samplers at T = budget x L, the same T for ancestral and every ReMDM strategy."""
    scale = SAMPLER_SCALES["cpu"]
    rows = sampler_rows(scale)
    for T in (16, 32, 64, 128):
        assert {r.sampler for r in rows if r.steps == T and r.sampler != "block"} == {
            "ancestral", "cached", "remdm-cap", "remdm-rescale", "remdm-conf", "remdm-loop"}
        for b in scale.block_sizes:  # T calls at most: T L'/L steps in each of the L/L' blocks
            (row,) = [r for r in rows if r.label == f"block L'={b} T={T}"]
            assert row.steps * (scale.length // b) == T and row.kwargs == {"block_size": b}
    assert sum(r.sampler == "threshold" for r in rows) == len(scale.thresholds) + 1
    assert sum(r.sampler == "first-hitting" for r in rows) == 1


def test_trend_verdicts():
    recs = [dict(label=l, seed=s, nll_ar=v + 0.01 * s) for s in range(3) for l, v in (("a", 1.0), ("b", 1.5))]
    recs += [dict(label="c", seed=s, nll_ar=1.0 + (0.2 if s == 1 else -0.2 if s == 2 else 0.0)) for s in range(3)]
    assert _trend(recs, ["nll_ar"], "a", "b", "")["ar"]["verdict"] == "reproduced"
    assert _trend(recs, ["nll_ar"], "b", "a", "")["ar"]["verdict"] == "contradicted"
    assert _trend(recs, ["nll_ar"], "c", "a", "")["ar"]["verdict"] == "not resolved at this scale"


def test_runs_and_resumes(tmp_path):
    logs = []
    summary = run_sampler_experiment("test", tmp_path, device="cpu", log=logs.append)
    rows = summary["rows"]
    assert "held-out text" in rows and "remdm-loop T=32" in rows and "threshold 0.5 dual" in rows
    assert rows["ancestral T=16"]["nfe"] <= 16 and rows["first-hitting"]["nfe"] == 16
    assert rows["threshold 0.5 dual"]["positions"] < rows["threshold 0.5 no cache"]["positions"]
    assert all(r["gen_ppl_ar"][0] > 1 for r in rows.values())
    assert len(summary["trends"]) == 11 and all("verdict" in t["ar"] for t in summary["trends"])
    # block diffusion: its own model; at most T calls, each reading one block of L' = 4 of the L = 16 tokens
    block = rows["block L'=4 T=16"]
    assert block["nfe"] <= 16 and block["positions"] <= (16 + 3) * 4 / 16
    assert "block-4" in summary["validation_bits_per_char"]
    assert json.loads((tmp_path / "results.json").read_text())["experiment"] == "samplers"
    md = (tmp_path / "results.md").read_text()
    assert "| remdm-cap | 32 |" in md and "| block L'=4 | 32 |" in md
    again = run_sampler_experiment("test", tmp_path, device="cpu", log=lambda *a: None)
    assert again["rows"] == summary["rows"]


def test_cli_names_the_scales():
    assert_clean_error(run_cli("experiment", "samplers", "--scale", "gpu"), "unknown scale", "test, cpu")
    assert_clean_error(run_cli("experiment", "sampler"), "unknown experiment", "samplers")
