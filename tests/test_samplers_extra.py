"""The wider sampler set on exact toy laws (V = 3, L = 3, Dirichlet(0.3) weights): chi-square tests
against the exact law of each chain (maskdiff.exact.chain_law) or against p itself where exact."""
import pytest
import torch
from scipy.stats import chisquare

import maskdiff
from maskdiff import MaskdiffError
from maskdiff.exact import (chain_law, conditional_toy, empirical_law, toy_distribution, true_denoiser,
                            true_genmd4_denoiser)
from maskdiff.schedules import PerTokenPolynomial
from maskdiff.sampling import (GuidedDenoiser, ancestral_sample, cached_sample, confidence_sample, first_hitting_sample,
                               genmd4_sample, greedy_sample, mean_sample, prompt_state, semi_autoregressive_sample)
from maskdiff.sampling.transforms import adjust_log_probs

N = 20000
P_MIN = 1e-3


@pytest.fixture(scope="module")
def toy():
    seqs, p = toy_distribution(3, 3, 0.3, seed=0)
    return seqs, p, true_denoiser(seqs, p, 3)


def _pvalue(tokens, law):
    counts = empirical_law(tokens, 3).double()
    expected = law * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a sequence of probability 0 was drawn"
    return chisquare(counts[keep].numpy(), expected[keep].numpy() * counts[keep].sum().item() / expected[keep].sum().item()).pvalue


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "loglinear", "geometric"])
def test_first_hitting_is_exact(toy, schedule, batch):
    """First-hitting sampling draws exactly from p (Zheng et al. 2024), with exactly L calls when alpha_0 = 1."""
    seqs, p, d = toy
    g = torch.Generator().manual_seed(1)
    sched = maskdiff.get_schedule(schedule)
    rows = [first_hitting_sample(d, sched, (batch, 3), generator=g) for _ in range(N // batch if batch == 16 else 3000)]
    tokens = torch.cat([r.tokens for r in rows])
    assert _pvalue(tokens, p) > P_MIN
    nfe = torch.cat([r.nfe for r in rows])
    if schedule in ("linear", "cosine", "loglinear"):
        assert torch.all(nfe == 3)
    else:
        assert torch.all(nfe <= 3)


def test_first_hitting_nfe_at_length_64():
    """A batch of 8 samples of length 64 costs exactly 64 calls each."""
    d = maskdiff.exact.FunctionDenoiser(lambda x, t: torch.log_softmax(torch.zeros(x.shape + (5,)), -1), 5, True)
    out = first_hitting_sample(d, maskdiff.get_schedule("linear"), (8, 64), generator=torch.Generator().manual_seed(0))
    assert torch.all(out.nfe == 64) and torch.all(out.tokens < 5)


def test_mean_matches_ancestral_chain(toy):
    """MD4's mean sampler has the ancestral chain's law (T = 4, uniform and cosine grids)."""
    _, _, d = toy
    for grid in ["uniform", "cosine"]:
        sched = maskdiff.get_schedule("cosine")
        out = mean_sample(d, sched, (N, 3), steps=4, grid=grid, generator=torch.Generator().manual_seed(2))
        assert _pvalue(out.tokens, chain_law(d, sched, 3, 4, grid)) > P_MIN


def test_top_p_one_temperature_one_is_ancestral(toy):
    """top-p = 1 and temperature = 1 leave mu unchanged: the same draws as plain ancestral sampling."""
    _, _, d = toy
    sched = maskdiff.get_schedule("linear")
    a = ancestral_sample(d, sched, (500, 3), steps=4, generator=torch.Generator().manual_seed(3))
    b = ancestral_sample(d, sched, (500, 3), steps=4, generator=torch.Generator().manual_seed(3), top_p=1.0, temperature=1.0)
    assert torch.equal(a.tokens, b.tokens)
    c = ancestral_sample(d, sched, (N, 3), steps=4, generator=torch.Generator().manual_seed(3), top_p=0.7)
    assert _pvalue(c.tokens, chain_law(d, sched, 3, 4)) < 1e-6  # and truncation does change the law


def test_top_p_and_temperature_transform():
    log_mu = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    out = adjust_log_probs(log_mu, top_p=0.8).exp()
    assert torch.allclose(out, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    out = adjust_log_probs(log_mu, top_p=0.1).exp()
    assert torch.allclose(out, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    cold = adjust_log_probs(log_mu, temperature=0.5).exp()
    assert torch.allclose(cold, torch.tensor([[0.25, 0.09, 0.0225, 0.0025]]) / 0.365)
    with pytest.raises(MaskdiffError, match="temperature"):
        adjust_log_probs(log_mu, temperature=0.0)
    with pytest.raises(MaskdiffError, match="top_p"):
        adjust_log_probs(log_mu, top_p=1.5)


def test_greedy_and_confidence_take_argmax(toy):
    """greedy fills with argmax mu: in one step from all masks, every sample is the argmax of the marginals;
    confidence decoding with argmax candidates and no noise is deterministic."""
    _, _, d = toy
    sched = maskdiff.get_schedule("linear")
    out = greedy_sample(d, sched, (200, 3), steps=1, generator=torch.Generator().manual_seed(4))
    marg_argmax = d(torch.full((1, 3), 3), torch.ones(1))[0].argmax(-1)
    assert torch.all(out.tokens == marg_argmax)
    out = greedy_sample(d, sched, (2000, 3), steps=4, generator=torch.Generator().manual_seed(4))
    assert len({tuple(r) for r in out.tokens.tolist()}) < 27  # argmax collapses the support
    conf = confidence_sample(d, sched, (50, 3), steps=3, choose="argmax", generator=torch.Generator().manual_seed(4))
    assert (conf.tokens < 3).all() and torch.all(conf.nfe == 3)
    assert len({tuple(r) for r in conf.tokens.tolist()}) == 1  # argmax with no noise: one output


def test_confidence_sampler_unmasks_schedule_counts(toy):
    """Each step unmasks the expected number of tokens; the most confident ones go first."""
    _, _, d = toy
    out = confidence_sample(d, maskdiff.get_schedule("linear"), (100, 3), steps=1, generator=torch.Generator().manual_seed(0))
    assert (out.tokens < 3).all() and torch.all(out.nfe == 1)
    with pytest.raises(MaskdiffError, match="sample, argmax"):
        confidence_sample(d, maskdiff.get_schedule("linear"), (1, 3), steps=2, choose="best")


def test_genmd4_sampler_matches_its_chain_and_approaches_p(toy):
    """GenMD4 sampling with the true time-dependent posterior: exact T-step law, and -> p as T grows."""
    seqs, p, _ = toy
    sched = PerTokenPolynomial(torch.tensor([0.5, 1.0, 3.0]))
    d = true_genmd4_denoiser(seqs, p, 3, sched)
    out = genmd4_sample(d, sched, (N, 3), steps=8, generator=torch.Generator().manual_seed(5))
    assert _pvalue(out.tokens, chain_law(d, sched, 3, 8)) > P_MIN
    tv = [float((chain_law(d, sched, 3, T) - p).abs().sum() / 2) for T in (4, 64, 1024)]
    assert tv[0] > tv[1] > tv[2] and tv[2] < 1e-3
    # with all exponents 1 it is MD4's linear schedule
    ones = PerTokenPolynomial(torch.ones(3))
    base = true_denoiser(seqs, p, 3)
    assert torch.allclose(chain_law(true_genmd4_denoiser(seqs, p, 3, ones), ones, 3, 4), chain_law(base, maskdiff.get_schedule("linear"), 3, 4))


def test_guidance_zero_is_the_conditional_model():
    """Classifier-free guidance with w = 0 samples the conditional model p(x | c); w > 0 sharpens it."""
    seqs, pc, cd = conditional_toy()
    sched = maskdiff.get_schedule("linear")
    labels = torch.ones(N, dtype=torch.long)
    out = ancestral_sample(GuidedDenoiser(cd, 0.0, 2), sched, (N, 3), steps=8, cond=labels, generator=torch.Generator().manual_seed(6))
    assert _pvalue(out.tokens, chain_law(cd, sched, 3, 8, cond=1)) > P_MIN
    law_w = chain_law(GuidedDenoiser(cd, 3.0, 2), sched, 3, 8, cond=1)
    law_0 = chain_law(cd, sched, 3, 8, cond=1)
    entropy = lambda q: float(-(q * q.clamp(min=1e-300).log()).sum())
    assert entropy(law_w) < entropy(law_0)
    # guided output is a distribution and keeps carry-over
    g = GuidedDenoiser(cd, 3.0, 2)(torch.tensor([[0, 3, 3]]), torch.ones(1), cond=torch.tensor([1]))
    assert torch.allclose(g.exp().sum(-1), torch.ones(1, 3, dtype=g.dtype)) and g[0, 0].argmax() == 0


@pytest.mark.parametrize("sampler", [ancestral_sample, cached_sample, mean_sample, first_hitting_sample, confidence_sample])
def test_infilling_never_changes_fixed_positions(toy, sampler):
    _, _, d = toy
    x_init = torch.tensor([[2, 3, 0], [3, 1, 3], [3, 3, 2]]).repeat(50, 1)
    out = sampler(d, maskdiff.get_schedule("linear"), x_init.shape, steps=8, x_init=x_init, generator=torch.Generator().manual_seed(7))
    fixed = x_init != 3
    assert torch.equal(out.tokens[fixed], x_init[fixed]) and (out.tokens < 3).all()


def test_infilling_law_is_the_conditional(toy):
    """Prefix-conditioned first-hitting samples follow p(x_2, x_3 | x_1) exactly."""
    seqs, p, d = toy
    x_init = prompt_state(torch.tensor([1]), 3, 3, batch=N)
    out = first_hitting_sample(d, maskdiff.get_schedule("linear"), (N, 3), x_init=x_init, generator=torch.Generator().manual_seed(8))
    cond = torch.where(seqs[:, 0] == 1, p, torch.zeros_like(p))
    assert _pvalue(out.tokens, cond / cond.sum()) > P_MIN


@pytest.mark.parametrize("factor", [2, 4])
def test_semi_autoregressive_length_and_context(toy, factor):
    """Semi-AR output is factor * L long; each block was sampled with the previous tokens as fixed context."""
    _, _, d = toy
    L, block = 3, 1
    out = semi_autoregressive_sample(cached_sample, d, maskdiff.get_schedule("linear"), batch=4, total_length=factor * L,
                                     window=L, block=block, steps=16, generator=torch.Generator().manual_seed(9))
    assert out.tokens.shape == (4, factor * L) and (out.tokens < 3).all()
    contexts = out.extra["contexts"]
    assert len(contexts) == factor * L - L
    for i, ctx in enumerate(contexts):  # block i+1 saw exactly tokens [i+1, i+3) of the final output
        start = L + i * block - (L - block)
        assert torch.equal(ctx, out.tokens[:, start : start + L - block])
    with pytest.raises(MaskdiffError, match="block"):
        semi_autoregressive_sample(cached_sample, d, maskdiff.get_schedule("linear"), batch=1, total_length=6, window=3, block=4, steps=4)


def test_cached_draws_equal_ancestral_draws(toy):
    """With a time-independent denoiser the caching sampler reproduces the ancestral draws exactly
    (same seed, same randomness per state), while calling the network far less."""
    _, _, d = toy
    sched = maskdiff.get_schedule("cosine")
    a = ancestral_sample(d, sched, (64, 3), steps=256, generator=torch.Generator().manual_seed(11))
    c = cached_sample(d, sched, (64, 3), steps=256, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.tokens, c.tokens)
    assert torch.all(c.nfe <= 3) and torch.all(a.nfe > 3)
