"""Ancestral and caching samplers against exact laws on the V = 3, L = 3 toy (Dirichlet(0.3) weights).

The law of the T-step reverse chain is enumerated by maskdiff.exact.chain_law (no Monte Carlo); samples
are compared with it by a chi-square test with a fixed seed (cells with small expected counts pooled).
Facts and notation: docs/math.md#subs and docs/math.md#samplers.
"""
import pytest
import torch
from scipy.stats import chisquare

import maskdiff.process
from maskdiff import MaskdiffError, get_schedule
from maskdiff.exact import chain_law, empirical_law
from maskdiff.process import sample_categorical
from maskdiff.sampling import ancestral_sample, cached_sample

V, L = 3, 3
B = 20000
P_MIN = 1e-3
SAMPLERS = {"ancestral": ancestral_sample, "cached": cached_sample}


def _pvalue(tokens, law, min_expected=5.0):
    """Chi-square p-value of the sampled sequences against ``law`` (V^L,), the smallest cells pooled
    until their expected count reaches ``min_expected``. A draw of a probability-0 sequence fails."""
    counts = empirical_law(tokens, V).double()
    assert counts[law == 0].sum() == 0, "a sequence of probability 0 was drawn"
    keep = law > 0
    counts, expected = counts[keep], law[keep] * counts.sum() / law[keep].sum()
    order = torch.argsort(expected)
    pooled = int((torch.cumsum(expected[order], 0) < min_expected).sum()) + 1  # the smallest cells, merged
    small, big = order[:pooled], order[pooled:]
    obs = torch.cat([counts[big], counts[small].sum()[None]])
    exp = torch.cat([expected[big], expected[small].sum()[None]])
    return chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue


@pytest.mark.parametrize("sampler", ["ancestral", "cached"])
@pytest.mark.parametrize(
    "schedule,grid", [("linear", "uniform"), ("cosine", "uniform"), ("cosine", "cosine"), ("geometric", "uniform")]
)
def test_sampler_matches_chain_law(toy, sampler, schedule, grid):
    """T = 4 ancestral / cached draws follow the exact law of the 4-step reverse chain (MD4 Alg. 2, MDLM eq. 7).

    (linear schedule on the cosine grid is the cosine schedule on the uniform grid: the same alphas.)
    """
    _, p, d = toy
    sched = get_schedule(schedule)
    law = chain_law(d, sched, L, 4, grid)
    assert abs(float(law.sum()) - 1.0) < 1e-12
    out = SAMPLERS[sampler](d, sched, (B, L), steps=4, generator=torch.Generator().manual_seed(0), grid=grid)
    assert out.tokens.shape == (B, L) and bool((out.tokens < V).all())
    assert _pvalue(out.tokens, law) > P_MIN
    # the test has power: 4 steps are far from p (factorization error), and chi-square sees it
    assert _pvalue(out.tokens, p) < 1e-6


def test_ancestral_time_dependent_matches_chain_law(toy, time_dependent_denoiser):
    """With a time-conditioned mu, ancestral draws follow the chain that evaluates mu at each step's t (MD4 Alg. 2)."""
    sched = get_schedule("cosine")
    law = chain_law(time_dependent_denoiser, sched, L, 4, "cosine")
    out = ancestral_sample(time_dependent_denoiser, sched, (B, L), steps=4, generator=torch.Generator().manual_seed(1),
                           grid="cosine")
    assert _pvalue(out.tokens, law) > P_MIN


@pytest.mark.slow
def test_many_steps_approach_p(toy):
    """The T-step chain approaches p as T grows (docs/math.md#samplers: O(L^2/T) factorization error); its samples follow it."""
    _, p, d = toy
    lin = get_schedule("linear")
    tv = {grid: 0.5 * float((chain_law(d, lin, L, 200, grid) - p).abs().sum()) for grid in ("uniform", "cosine")}
    assert all(v < 0.01 for v in tv.values()), tv
    tv_4 = 0.5 * float((chain_law(d, lin, L, 4) - p).abs().sum())
    assert tv_4 > 0.05  # the same check fails with few steps
    out = ancestral_sample(d, lin, (B, L), steps=200, generator=torch.Generator().manual_seed(2))
    assert _pvalue(out.tokens, chain_law(d, lin, L, 200)) > P_MIN
    # at T = 1000 the chain's distance to p is below what 20000 draws can see
    out = cached_sample(d, lin, (B, L), steps=1000, generator=torch.Generator().manual_seed(3))
    assert _pvalue(out.tokens, p) > P_MIN


def test_cached_sampler_nfe(toy):
    """Per-sample caching (MDLM Sec. 3.2 "ddpm_cache"): at batch 16, T = 1024, each sample makes one call per change, at most L."""
    _, _, d = toy
    lin = get_schedule("linear")
    states = []
    out = cached_sample(d, lin, (16, L), steps=1024, generator=torch.Generator().manual_seed(4),
                        callback=lambda x: states.append(x.clone()))
    assert bool((out.tokens < V).all())
    assert bool((out.nfe >= 1).all()) and bool((out.nfe <= L).all()) and bool((out.nfe < 1024).all())
    # exact count: the first call, plus one after each step that changed the sample and left a mask
    history = torch.stack([torch.full((16, L), V)] + states)  # (steps + 1, 16, L)
    changed = (history[1:] != history[:-1]).any(-1) & (history[1:] == V).any(-1)  # (steps, 16)
    assert torch.equal(out.nfe, 1 + changed.sum(0))
    ancestral = ancestral_sample(d, lin, (16, L), steps=1024, generator=torch.Generator().manual_seed(4))
    assert bool((ancestral.nfe > L).all())  # without the cache every step with a mask calls the network


def test_cached_refuses_time_conditioned(time_dependent_denoiser):
    """The caching sampler needs a time-independent mu and says so (MDLM Sec. 3.2); the error names the way out."""
    with pytest.raises(MaskdiffError, match="time"):
        cached_sample(time_dependent_denoiser, get_schedule("linear"), (2, L), steps=4,
                      generator=torch.Generator().manual_seed(0))


def test_categorical_and_reverse_step_draw_float64_noise(toy, monkeypatch):
    """Categorical draws use float64 uniforms: float32 Gumbel noise caps near 16.6 (docs/math.md#samplers, Zheng et al. 2024)."""
    _, _, d = toy
    dtypes = []
    real_rand = torch.rand

    def recording_rand(*args, **kwargs):
        dtypes.append(kwargs.get("dtype"))
        return real_rand(*args, **kwargs)

    monkeypatch.setattr(torch, "rand", recording_rand)
    log_probs = torch.tensor([[0.0, -40.0], [-0.1, -2.0]], dtype=torch.float64)
    sample_categorical(log_probs, torch.Generator().manual_seed(0))
    assert dtypes == [torch.float64], dtypes
    dtypes.clear()
    ancestral_sample(d, get_schedule("linear"), (8, L), steps=16, generator=torch.Generator().manual_seed(0))
    assert dtypes and all(dt == torch.float64 for dt in dtypes), dtypes
    monkeypatch.undo()
    # and the draw has the right law
    log_p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log().expand(60000, 3)
    draws = maskdiff.process.sample_categorical(log_p, torch.Generator().manual_seed(1))
    assert chisquare(torch.bincount(draws, minlength=3).numpy(), [30000, 18000, 12000]).pvalue > P_MIN


@pytest.mark.parametrize("sampler", ["ancestral", "cached"])
def test_samplers_honour_x_init(toy, sampler):
    """Positions not masked in x_init never change, at any step (docs/math.md#samplers: prefix conditioning and infilling)."""
    _, _, d = toy
    g = torch.Generator().manual_seed(5)
    x_init = torch.randint(0, V, (64, L), generator=g)
    x_init[torch.rand(64, L, generator=g) < 0.5] = V
    fixed = x_init != V
    original = x_init.clone()
    seen = []

    def check(x):
        seen.append(True)
        assert torch.equal(x[fixed], x_init[fixed])

    out = SAMPLERS[sampler](d, get_schedule("linear"), (64, L), steps=8, generator=g, x_init=x_init, callback=check)
    assert seen
    assert torch.equal(out.tokens[fixed], x_init[fixed])
    assert bool((out.tokens < V).all())
    assert torch.equal(x_init, original)  # x_init itself is not modified in place
    done = fixed.all(-1)
    assert bool(done.any()) and bool((out.nfe[done] == 0).all())  # a fully given row needs no call


def test_samplers_reproducible_with_generator(toy):
    """Explicit randomness: the same generator seed gives the same samples."""
    _, _, d = toy
    lin = get_schedule("linear")
    for sampler in SAMPLERS.values():
        a = sampler(d, lin, (32, L), steps=8, generator=torch.Generator().manual_seed(7)).tokens
        b = sampler(d, lin, (32, L), steps=8, generator=torch.Generator().manual_seed(7)).tokens
        assert torch.equal(a, b)
