"""`maskdiff experiment samplers` at its test scale: every row runs, the table and verdicts are written, a
second call resumes from the records; gen-PPL checked against the judge's NLL computed here token by token;
the verdict logic on records whose answer is known."""
import json
import math

import pytest
import torch

import maskdiff
from helpers import assert_clean_error, run_cli
from maskdiff.experiments.samplers import SAMPLER_SCALES, _trend, run_sampler_experiment, sampler_rows

# the 97.5% quantile of Student's t with 2 degrees of freedom: t / sqrt(2 + t^2) = 0.95
T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))


def test_rows_compare_at_equal_calls():
    """Grid samplers at T = budget x L, the same T for ancestral and every ReMDM strategy."""
    scale = SAMPLER_SCALES["cpu"]
    rows = sampler_rows(scale)
    for T in (16, 32, 64, 128):
        assert {r.sampler for r in rows if r.steps == T and r.sampler != "block"} == {
            "ancestral", "cached", "remdm-cap", "remdm-rescale", "remdm-conf", "remdm-loop"} | ({"dilated"} if T <= scale.length else set())
        for b in scale.block_sizes:  # T calls at most: T L'/L steps in each of the L/L' blocks
            (row,) = [r for r in rows if r.label == f"block L'={b} T={T}"]
            assert row.steps * (scale.length // b) == T and row.kwargs == {"block_size": b}
    assert sum(r.sampler == "threshold" for r in rows) == len(scale.thresholds) + 1
    assert sum(r.sampler == "first-hitting" for r in rows) == 1


def test_trend_verdicts():
    """Records paired by seed (whatever their order): the paired difference, its interval in closed form and
    each verdict."""
    recs = [dict(label="a", seed=s, nll_ar=1.0 + 0.01 * s) for s in (2, 0, 1)]
    recs += [dict(label="b", seed=s, nll_ar=1.5) for s in (1, 2, 0)]
    recs += [dict(label="c", seed=s, nll_ar=x) for s, x in enumerate((1.0, 1.2, 0.8))]
    ab = _trend(recs, ["nll_ar"], "a", "b", "")["ar"]
    half = T2 * 0.01 / math.sqrt(3)  # differences -0.5, -0.49, -0.48: mean -0.49, sd 0.01
    assert ab["log_gen_ppl_difference"] == pytest.approx(-0.49) and ab["ci95"] == pytest.approx([-0.49 - half, -0.49 + half])
    assert ab["verdict"] == "reproduced"
    assert _trend(recs, ["nll_ar"], "b", "a", "")["ar"]["verdict"] == "contradicted"
    assert _trend(recs, ["nll_ar"], "c", "a", "")["ar"]["verdict"] == "not resolved at this scale"  # 0, +0.19, -0.22
    assert _trend([recs[0], recs[4]], ["nll_ar"], "a", "b", "")["ar"] == {"verdict": "not run"}  # one paired seed


def _judge_nll_by_hand(lm, tokenizer, texts):
    """Nats per token of ``texts`` under the autoregressive judge, by the chain rule one token at a time:
    log p(x^n | BOS, x^1..x^{n-1}) read off the last position of the prefix alone."""
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.encode(text).tolist()
            for n, token in enumerate(ids):
                prefix = torch.tensor([[lm.bos_id] + ids[:n]])
                total -= float(lm(prefix)[0, -1, token])
            count += len(ids)
    return total / count


@pytest.mark.slow
def test_runs_and_resumes(tmp_path):
    logs = []
    scale = SAMPLER_SCALES["test"]
    summary = run_sampler_experiment("test", tmp_path, device="cpu", log=logs.append)
    rows = summary["rows"]
    assert "held-out text" in rows and "remdm-loop T=32" in rows and "threshold 0.5 dual" in rows
    assert rows["ancestral T=16"]["nfe"] <= 16 and rows["first-hitting"]["nfe"] == 16
    assert rows["threshold 0.5 dual"]["positions"] < rows["threshold 0.5 no cache"]["positions"]
    # gen-PPL is exp of the seeds' mean NLL per judge token, the judge's NLL recomputed here on the same samples
    judge = maskdiff.load(tmp_path / "runs" / "ar", device="cpu")
    for path in sorted((tmp_path / "records").glob("*.json")):
        rec = json.loads(path.read_text())
        assert len(rec["examples"]) == scale.samples  # every sample of the seed is kept at this scale
        assert rec["nll_ar"] == pytest.approx(_judge_nll_by_hand(judge.denoiser, judge.tokenizer, rec["examples"]), rel=1e-5)
    for label, row in rows.items():
        if label == "held-out text":
            continue
        nlls = [json.loads((tmp_path / "records" / f"{label.replace(' ', '_').replace('=', '')}-s{s}.json").read_text())["nll_ar"]
                for s in range(scale.seeds)]
        assert row["gen_ppl_ar"][0] == pytest.approx(math.exp(sum(nlls) / len(nlls)), rel=1e-12)
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


@pytest.mark.slow
def test_cli_names_the_scales():
    assert_clean_error(run_cli("experiment", "samplers", "--scale", "gpu"), "unknown scale", "test, cpu")
    assert_clean_error(run_cli("experiment", "sampler"), "unknown experiment", "samplers")
