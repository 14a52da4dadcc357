"""The objectives end to end: every variant trains, evaluates and samples through the library and the
CLI; the autoregressive baseline learns a Markov source down to its entropy rate; every experiment
runs at the test scale."""
import json
import math

import pytest
import torch
from PIL import Image

import maskdiff
from maskdiff.checkpoint import list_checkpoints, read_tensors
from maskdiff.denoiser import CausalLM
from maskdiff.experiments import EXPERIMENTS, Trend, run_experiment, verdict
from maskdiff.loss.autoregressive import autoregressive_nll
from maskdiff.networks.transformer import DiT
from maskdiff.train import train

from helpers import MICRO_FLAGS, assert_clean_error, micro_config, run_cli, run_main

VARIANTS = {
    "ar": dict(objective="ar"),
    "genmd4-k2": dict(objective="genmd4", genmd4_samples=2),
    "genmd4-k1": dict(objective="genmd4", genmd4_samples=1),
    "sedd": dict(objective="sedd"),
    "no-carry-over": dict(discrete_steps=50, carry_over=False),
    "no-zero-mask": dict(discrete_steps=50, zero_mask=False),
    "block": dict(objective="block", block_size=4),
}


def _final_tensors(run):
    """The last checkpoint's weights (EMA included) and optimizer state, by name."""
    last = list_checkpoints(run)[-1]
    assert last.name == "step_00000004"
    return {f"{f}:{k}": v for f in ("model", "optimizer") for k, v in read_tensors(last / f"{f}.safetensors").items()}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_evaluates_samples_and_resumes(tmp_path, plays, name):
    """Each variant: 2 steps, an interruption and a resume to 4 steps end with the weights and optimizer state
    of 4 uninterrupted steps, bit for bit; the run then evaluates and samples through the library."""
    cfg = micro_config(steps=4, corpus=plays)
    for k, v in VARIANTS[name].items():
        setattr(cfg.diffusion, k, v)
    if name.startswith("genmd4"):
        cfg.model.time_conditioned = True
    run = tmp_path / name
    first = train(cfg, run, progress=False, stop_after=2, log=lambda *a: None)
    assert first.interrupted and first.step == 2
    done = train(cfg, run, progress=False, log=lambda *a: None)
    assert done.resumed_from == 2 and done.step == 4 and math.isfinite(done.last_loss)
    whole = train(cfg, tmp_path / "whole", progress=False, log=lambda *a: None)
    assert whole.step == 4 and whole.resumed_from is None
    resumed, straight = _final_tensors(run), _final_tensors(tmp_path / "whole")
    assert resumed.keys() == straight.keys() and any(k.startswith("model:ema.") for k in resumed)
    assert [k for k in resumed if not torch.equal(resumed[k], straight[k])] == []
    at_two = read_tensors(list_checkpoints(run)[0] / "model.safetensors")  # the checkpoint of the interruption
    assert list_checkpoints(run)[0].name == "step_00000002"
    assert any(not torch.equal(v, straight[f"model:{k}"]) for k, v in at_two.items())  # steps 3 and 4 changed it
    pipe = maskdiff.load(run)
    assert pipe.kind == cfg.diffusion.objective
    x = torch.randint(0, pipe.tokenizer.vocab_size, (3, 32), generator=torch.Generator().manual_seed(0))
    res = pipe.evaluate(x, None, passes=2)
    assert res.nelbo.shape == (3,) and bool(torch.isfinite(res.nelbo).all()) and bool((res.nelbo > 0).all())
    assert res.bound == (name != "ar")
    out = pipe.sample(2, steps=16, length=20)
    assert out.tokens.shape == (2, 20) and bool((out.tokens < pipe.tokenizer.vocab_size).all())
    if name == "ar":
        assert out.nfe.tolist() == [20, 20]
        # AR likelihood is exact: repeated passes agree to float precision
        torch.testing.assert_close(pipe.evaluate(x, None, passes=1).nelbo, res.nelbo)


@pytest.mark.slow
def test_autoregressive_baseline_learns_a_markov_source_to_its_entropy_rate():
    """A tiny causal DiT on a 3-state Markov chain: its NLL per token approaches the entropy rate from above
    (a leak of future tokens through the attention would push it below)."""
    torch.manual_seed(0)
    P = torch.tensor([[0.8, 0.15, 0.05], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], dtype=torch.float64)
    evals, evecs = torch.linalg.eig(P.T)
    pi = evecs[:, torch.argmin((evals - 1).abs())].real
    pi = pi / pi.sum()
    rate = float(-(pi[:, None] * P * P.log()).sum())  # nats per token after the first
    L, V = 24, 3

    def draw(n, gen):
        x = torch.empty(n, L, dtype=torch.long)
        x[:, 0] = torch.multinomial(pi, n, replacement=True, generator=gen)
        for i in range(1, L):
            x[:, i] = torch.multinomial(P[x[:, i - 1]], 1, generator=gen).squeeze(-1)
        return x

    gen = torch.Generator().manual_seed(1)
    lm = CausalLM(DiT(V, L, width=32, depth=1, heads=2, causal=True), V, max_length=L)
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    for _ in range(250):
        x = draw(64, gen)
        loss = autoregressive_nll(lm, x, V).mean() / L
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = draw(4000, torch.Generator().manual_seed(2))
        nll = autoregressive_nll(lm, x, V).double()
    first = float(-(pi * pi.log()).sum())
    per_token = (nll.mean() - first) / (L - 1)  # the first token's entropy set aside
    se = float(nll.std() / math.sqrt(nll.numel())) / (L - 1)
    assert rate - 4 * se <= per_token <= rate + 0.03, (float(per_token), rate)


@pytest.mark.slow
def test_cli_ar_and_genmd4(tmp_path, plays):
    run = tmp_path / "ar"
    proc = run_cli("train", "--run-dir", run, "--steps", "3", "--objective", "ar", "--corpus", plays, *MICRO_FLAGS)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("eval", run, "--limit", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "BPC = " in proc.stdout and "exact NLL" in proc.stdout
    proc = run_cli("sample", run, "--num", "2", "--length", "16", "--prompt", "the ")
    assert proc.returncode == 0, proc.stderr
    texts = [l for l in proc.stdout.splitlines() if l and not l.startswith(("---", "saved", "2 samples"))]
    assert len(texts) == 2 and all(t.startswith("the ") for t in texts), proc.stdout
    assert "autoregressive sampler, 12 steps, mean NFE 12.0" in proc.stdout  # 4 prompt tokens + 12 drawn
    assert_clean_error(run_cli("eval", run, "--discrete-steps", "10", "--limit", "2", "--no-progress"), "exact likelihood")
    proc = run_cli("zero-shot", run, "--corpora", "shakespeare", "--limit", "2")
    assert proc.returncode == 0, proc.stderr
    assert "| = " in proc.stdout and "<=" not in proc.stdout.split("| corpus")[-1], proc.stdout
    assert_clean_error(run_cli("exponents", run), "exponents exist only")

    gen = tmp_path / "gen"
    proc = run_cli("train", "--run-dir", gen, "--steps", "3", "--objective", "genmd4", "--time-conditioned", "--corpus", plays, *MICRO_FLAGS)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("exponents", gen, "--plot", tmp_path / "w.png")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("w = ") == 27
    assert Image.open(tmp_path / "w.png").size[1] > 27 * 10
    assert_clean_error(run_cli("sample", gen, "--sampler", "first-hitting", "--num", "1"), "own sampler")
    # the autoregressive run as the evaluator LM of generative perplexity
    proc = run_cli("sample", gen, "--num", "2", "--length", "24", "--steps", "8", "--evaluate", "--evaluator", run, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "maskdiff-ar:ar" in proc.stdout
    from maskdiff.evaluation.judge import RunEvaluatorLM

    lm = RunEvaluatorLM.from_run(run)
    sums, counts = lm.nll(["to be or not to be", "a" * 70])  # the second is longer than L = 32: three windows
    assert counts == [18, 70] and all(s > 0 for s in sums)
    pipe = maskdiff.load(run)
    exact = float(pipe.evaluate(pipe.encode("to be or not to be"), None).nelbo[0])
    assert sums[0] == pytest.approx(exact, rel=1e-5)
    assert_clean_error(run_cli("sample", run, "--evaluate", "--evaluator", gen, "--no-progress"), "must be an autoregressive run")


@pytest.mark.parametrize("flags,needle", [
    (["--objective", "diffusion"], "choose one of: masked, genmd4, sedd, ar"),
    (["--no-carry-over"], "discrete_steps"),
    (["--objective", "ar", "--no-zero-mask", "--discrete-steps", "10"], "masked objective only"),
    (["--objective", "genmd4", "--discrete-steps", "10"], "continuous time"),
    (["--objective", "sedd", "--discrete-steps", "10"], "continuous time"),
    (["--objective", "block"], "--block-size N"),
    (["--objective", "block", "--block-size", "5"], "must divide the sequence length 32"),
    (["--block-size", "4"], "settings of the block objective"),
    (["--objective", "block", "--block-size", "4", "--mask-rate-min", "0.9", "--mask-rate-max", "0.5"], "0 <= low < high <= 1"),
    (["--objective", "block", "--block-size", "4", "--time-conditioned"], "not time-conditioned"),
])
def test_bad_objective_flags(tmp_path, flags, needle):
    assert_clean_error(run_main("train", "--run-dir", tmp_path / "r", *flags, *MICRO_FLAGS), needle)
    assert not (tmp_path / "r").exists()


# the 97.5% quantile of Student's t with 2 degrees of freedom, in closed form: its CDF is
# 1/2 + t / (2 sqrt(2 + t^2)), so t / sqrt(2 + t^2) = 0.95
T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))


def _paired_by_hand(a, b):
    """Mean and 95% interval of the per-seed differences a - b of three seeds."""
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 3
    half = T2 * math.sqrt(sum((x - mean) ** 2 for x in d) / 2) / math.sqrt(3)
    return mean, mean - half, mean + half


def _label(lo, hi, margin=None):
    if margin is not None:
        return "reproduced" if -margin < lo and hi < margin else \
            "contradicted" if lo >= margin or hi <= -margin else "not resolved at this budget"
    return "reproduced" if hi < 0 else "contradicted" if lo > 0 else "not resolved at this budget"


@pytest.mark.parametrize("a, b, equal, expected", [
    ([1.0, 1.1, 1.2], [1.5, 1.7, 1.6], False, "reproduced"),  # differences -0.5, -0.6, -0.4
    ([1.5, 1.7, 1.6], [1.0, 1.1, 1.2], False, "contradicted"),
    ([1.0, 1.6, 1.2], [1.1, 1.2, 1.5], False, "not resolved at this budget"),  # -0.1, +0.4, -0.3
    ([1.0, 1.1, 1.2], [1.001, 1.1, 1.199], True, "reproduced"),  # within +-0.02 BPC
    ([1.0, 1.1, 1.2], [1.1, 1.21, 1.29], True, "contradicted"),  # -0.1, -0.11, -0.09: outside the margin
    ([1.0, 1.1, 1.2], [1.0, 1.12, 1.24], True, "not resolved at this budget"),  # 0, -0.02, -0.04: straddles -0.02
])
def test_verdicts(a, b, equal, expected):
    """Records with known per-seed values: the paired difference, its Student-t interval (computed here in
    closed form) and the verdict they imply. Records are paired by seed, not by their order."""
    recs = [{"variant": "b", "seed": s, "evals": {"own": {"bpc": x}}} for s, x in reversed(list(enumerate(b)))] + \
           [{"variant": "a", "seed": s, "evals": {"own": {"bpc": x}}} for s, x in enumerate(a)]
    v = verdict(Trend("a", "b", "", equal=equal), recs)
    mean, lo, hi = _paired_by_hand(a, b)
    assert v["difference_bpc"] == pytest.approx(mean, abs=1e-12) and v["ci95"] == pytest.approx([lo, hi], abs=1e-9)
    assert v["seeds"] == 3 and v["verdict"] == expected == _label(lo, hi, 0.02 if equal else None)


def test_verdict_needs_two_paired_seeds():
    recs = [{"variant": "a", "seed": 0, "evals": {"own": {"bpc": 1.0}}},
            {"variant": "b", "seed": 1, "evals": {"own": {"bpc": 2.0}}}, {"variant": "b", "seed": 0, "evals": {"own": {"bpc": 2.0}}}]
    assert verdict(Trend("a", "b", ""), recs)["verdict"] == "not run" and verdict(Trend("a", "b", ""), recs)["seeds"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_runs_end_to_end(tmp_path, name):
    summary = run_experiment(name, "test", tmp_path, log=lambda *a: None)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["seeds"] == 3 and set(data["variants"]) == {v.name for v in EXPERIMENTS[name].variants}
    table = (tmp_path / "results.md").read_text()
    for v in EXPERIMENTS[name].variants:
        assert f"| {v.name} |" in table
    for t in summary["trends"]:  # each verdict is the one its per-seed figures imply
        sides = [t[k].partition("@") for k in ("better", "worse")]
        keys = ["own" if ev in ("", "None") else f"T{ev}" for _, _, ev in sides]
        evals = [data["variants"][name]["evals"].get(key) for (name, _, _), key in zip(sides, keys)]
        if None in evals:  # a variant without that evaluation (no discrete-time estimate)
            assert t["verdict"] == "not run"
            continue
        mean, lo, hi = _paired_by_hand(evals[0]["per_seed"], evals[1]["per_seed"])
        assert t["difference_bpc"] == pytest.approx(mean, abs=1e-12) and t["ci95"] == pytest.approx([lo, hi], abs=1e-9)
        assert t["verdict"] == _label(lo, hi, t["equivalence_margin"])
    budget = {v.name: v.budget for v in EXPERIMENTS[name].variants}
    per_unit = {v["tokens"] // budget[n] for n, v in data["variants"].items()}
    assert len(per_unit) == 1  # equal token budgets (a variant with budget 2 gets exactly twice)
    # a second call reuses every finished run
    again = run_experiment(name, "test", tmp_path, log=lambda *a: None)
    assert again["variants"] == summary["variants"]
