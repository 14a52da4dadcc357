"""Shared fixtures: the exact toy problem of the exactness tests (docs/math.md; exact statements on enumerable problems).

V = 3 real tokens, L = 3, Dirichlet(0.3) weights over all 27 sequences: strong dependencies between
positions, so a test that ignores them fails (a product distribution would make every test pass).
"""
import pytest
import torch

from maskdiff.denoiser import FunctionDenoiser, carry_over
from maskdiff.exact import toy_distribution, true_denoiser

V, L = 3, 3


@pytest.fixture(scope="session")
def toy():
    """(sequences (27, 3), p (27,) float64, the exact conditional mu as a time-independent denoiser)."""
    seqs, p = toy_distribution(V, L, 0.3, seed=0)
    return seqs, p, true_denoiser(seqs, p, V)


@pytest.fixture(scope="session")
def wrong_denoiser():
    """A time-independent denoiser that is not the true conditional: the exact one of another toy (seed 1)."""
    seqs, q = toy_distribution(V, L, 0.3, seed=1)
    return true_denoiser(seqs, q, V)


@pytest.fixture(scope="session")
def time_dependent_denoiser(toy):
    """mu(x_t, t) = (1 - t) mu_true + t Uniform(V): depends on t itself, not on alpha_t (time-conditioned)."""
    return mixed_denoiser(toy[2], lambda t: t)


@pytest.fixture(scope="session")
def make_mixed_denoiser():
    """The factory :func:`mixed_denoiser`, for tests that pick their own lam(t)."""
    return mixed_denoiser


def mixed_denoiser(exact, weight_of_t):
    """(1 - lam(t)) mu_exact + lam(t) Uniform(V), with carry-over at unmasked positions; time-conditioned."""

    def fn(x_t, t):
        lam = weight_of_t(t.to(torch.float64)).reshape(-1, 1, 1)
        mu = (1.0 - lam) * exact(x_t, t).exp() + lam / V
        return carry_over(torch.log(mu), x_t, V)

    return FunctionDenoiser(fn, V, time_independent=False)


@pytest.fixture(scope="session")
def plays(tmp_path_factory):
    """Three works of the Shakespeare package (Macbeth, the Sonnets, Julius Caesar: 315,000 characters) as
    one text file, split 90/5/5 by maskdiff: the corpus of small runs, which need not encode the whole
    Shakespeare train split (4 million characters) on every start."""
    from maskdiff.data.corpora import shakespeare_dir

    root = shakespeare_dir()
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    text = "".join((root / f"{name}.txt").read_text(encoding="utf-8") for name in ("macbeth_gut", "sonnets_gut", "julius_caesar_gut"))
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def served_run(tmp_path_factory, plays):
    """A micro text run (1 block of width 32, L = 32, text8 characters of three Shakespeare works) trained
    for a few steps: the model that the maskdiff serve tests serve."""
    from helpers import micro_config
    from maskdiff.train import train

    run = tmp_path_factory.mktemp("serve") / "run"
    train(micro_config(steps=8, corpus=plays), run, progress=False)
    return run
