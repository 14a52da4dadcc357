"""The wider sampler set on exact toy laws (V = 3, L = 3, Dirichlet(0.3) weights): chi-square tests
against the exact law of each chain (maskdiff.exact.chain_law) or against p itself where exact."""
import math

import pytest
import torch
from scipy.stats import chisquare

import maskdiff
from maskdiff import MaskdiffError
from maskdiff.denoiser import FunctionDenoiser, carry_over
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
    """Chi-square p-value of the sampled sequences against ``law`` (V^L,). Cells expected fewer than 5 times
    are pooled into one (a single draw of a 1e-5 sequence would otherwise dominate the statistic); a
    sequence of probability 0 must never be drawn."""
    counts = empirical_law(tokens, 3).double()
    assert counts[law <= 0].sum() == 0, "a sequence of probability 0 was drawn"
    expected = law / law.sum() * counts.sum()
    small = expected < 5
    obs, exp = counts[~small], expected[~small]
    if float(expected[small].sum()) > 0:
        obs, exp = torch.cat([obs, counts[small].sum()[None]]), torch.cat([exp, expected[small].sum()[None]])
    return chisquare(obs.numpy(), exp.numpy() * float(obs.sum()) / float(exp.sum())).pvalue


@pytest.mark.parametrize("batch", [pytest.param(1, marks=pytest.mark.slow), N])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "loglinear", "geometric"])
def test_first_hitting_is_exact(toy, schedule, batch):
    """First-hitting sampling draws exactly from p (Zheng et al. 2024), with exactly L calls when alpha_0 = 1:
    3000 one-row calls (the per-sample clock of a batch of one), and one call of N rows."""
    seqs, p, d = toy
    g = torch.Generator().manual_seed(1)
    sched = maskdiff.get_schedule(schedule)
    rows = [first_hitting_sample(d, sched, (batch, 3), generator=g) for _ in range(1 if batch == N else 3000)]
    tokens = torch.cat([r.tokens for r in rows])
    assert _pvalue(tokens, p) > P_MIN
    nfe = torch.cat([r.nfe for r in rows])
    if schedule in ("linear", "cosine", "loglinear"):
        assert torch.all(nfe == 3)
    else:
        assert torch.all(nfe <= 3)


def test_first_hitting_nfe_at_length_64():
    """A batch of 8 samples of length 64 costs exactly 64 calls each."""
    d = FunctionDenoiser(lambda x, t: torch.log_softmax(torch.zeros(x.shape + (5,)), -1), 5, True)
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


def _chain_states(sampler, d, sched, shape, **kwargs):
    """The sampler's output and the list of states before and after each step (all masks first)."""
    states = [torch.full(shape, d.vocab_size)]
    out = sampler(d, sched, shape, callback=lambda x: states.append(x.clone()), **kwargs)
    return out, states


def test_greedy_and_confidence_take_argmax(toy):
    """greedy fills with argmax mu: in one step from all masks, every sample is the argmax of the marginals;
    over 4 steps, each position unmasked at a step takes the argmax of mu at the state before that step,
    and a masked position unmasks with probability (alpha_s - alpha_t)/(1 - alpha_t), as in mean sampling.
    Confidence decoding with argmax candidates and no noise is deterministic."""
    _, _, d = toy
    sched = maskdiff.get_schedule("linear")
    out = greedy_sample(d, sched, (200, 3), steps=1, generator=torch.Generator().manual_seed(4))
    marg_argmax = d(torch.full((1, 3), 3), torch.ones(1))[0].argmax(-1)
    assert torch.all(out.tokens == marg_argmax)
    T = 4
    out, states = _chain_states(greedy_sample, d, sched, (2000, 3), steps=T, generator=torch.Generator().manual_seed(4))
    assert torch.equal(states[-1], out.tokens) and (out.tokens < 3).all()
    for j, (before, after) in enumerate(zip(states, states[1:])):
        t, s = (T - j) / T, (T - j - 1) / T
        masked = before == 3
        newly = masked & (after != 3)
        assert torch.equal(after[~masked], before[~masked])  # an unmasked token never changes
        argmax = d(before, torch.full((len(before),), t)).argmax(-1)
        assert torch.equal(after[newly], argmax[newly]), j
        p = (t - s) / t  # (alpha_s - alpha_t)/(1 - alpha_t) with alpha = 1 - t; 1 at the last step
        n = int(masked.sum())
        assert abs(int(newly.sum()) - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9, (j, int(newly.sum()), n * p)
    conf = confidence_sample(d, sched, (50, 3), steps=3, choose="argmax", generator=torch.Generator().manual_seed(4))
    assert (conf.tokens < 3).all() and torch.all(conf.nfe == 3)
    assert len({tuple(r) for r in conf.tokens.tolist()}) == 1  # argmax with no noise: one output


def _expected_kept(n_t, sched, s, t, last):
    """Masks kept by a confidence step (docs/math.md#samplers): round(n_t (1 - alpha_s)/(1 - alpha_t)), 0 at the last."""
    if last:
        return torch.zeros_like(n_t)
    keep = (1.0 - float(sched.alpha(torch.tensor(s, dtype=torch.float64)))) / (1.0 - float(sched.alpha(torch.tensor(t, dtype=torch.float64))))
    return torch.tensor([round(int(n) * keep) for n in n_t])


def _ramp_denoiser(V, L):
    """mu puts 0.4 + 0.5 n / L on value 0 (its argmax) at position n, the rest spread evenly: later positions are surer."""
    conf = 0.4 + 0.5 * torch.arange(L, dtype=torch.float64) / L
    probs = torch.cat([conf[:, None], ((1.0 - conf) / (V - 1))[:, None].expand(L, V - 1)], dim=-1)

    def fn(x_t, t):
        return carry_over(probs.log().expand(x_t.shape[0], L, V).clone(), x_t, V)

    return FunctionDenoiser(fn, V, True)


@pytest.mark.parametrize("schedule,steps", [("linear", 3), ("cosine", 2), ("linear", 1)])
@pytest.mark.parametrize("choose", ["sample", "argmax"])
def test_confidence_sampler_unmasks_schedule_counts(toy, schedule, steps, choose):
    """Each step unmasks n_t - round(n_t (1 - alpha_s)/(1 - alpha_t)) positions (the last step all of them);
    with argmax candidates the unmasked ones are the most confident: no position still masked after the
    step had a larger max mu than one that was filled, and each filled one took its argmax."""
    _, _, d = toy
    sched = maskdiff.get_schedule(schedule)
    out, states = _chain_states(confidence_sample, d, sched, (300, 3), steps=steps, choose=choose,
                                generator=torch.Generator().manual_seed(0))
    assert (out.tokens < 3).all() and torch.all(out.nfe == steps) and len(states) == steps + 1
    for j, (before, after) in enumerate(zip(states, states[1:])):
        t, s = (steps - j) / steps, (steps - j - 1) / steps
        masked = before == 3
        assert torch.equal(after[~masked], before[~masked])
        want = _expected_kept(masked.sum(-1), sched, s, t, last=j == steps - 1)
        assert torch.equal((after == 3).sum(-1), want), j
        if choose == "argmax":
            log_mu = d(before, torch.full((len(before),), t))
            best = log_mu.max(-1)
            newly = masked & (after != 3)
            assert torch.equal(after[newly], best.indices[newly])
            filled = best.values.masked_fill(~newly, torch.inf).min(-1).values
            waiting = best.values.masked_fill(~(after == 3), -torch.inf).max(-1).values
            assert bool((filled >= waiting).all()), j
    with pytest.raises(MaskdiffError, match="sample, argmax"):
        confidence_sample(d, maskdiff.get_schedule("linear"), (1, 3), steps=2, choose="best")


def test_confidence_sampler_fills_the_surest_positions_first():
    """Length 16, position n surer than n - 1 (argmax candidates): after every step the filled positions
    are the last ones, in the number the schedule asks for, and each holds its argmax."""
    V, L, T = 4, 16, 5
    d = _ramp_denoiser(V, L)
    sched = maskdiff.get_schedule("cosine")
    out, states = _chain_states(confidence_sample, d, sched, (8, L), steps=T, choose="argmax",
                                generator=torch.Generator().manual_seed(1))
    kept = torch.full((8,), L)
    for j, x in enumerate(states[1:]):
        t, s = (T - j) / T, (T - j - 1) / T
        kept = _expected_kept(kept, sched, s, t, last=j == T - 1)
        want = torch.arange(L) < kept[:, None]  # (8, L): the first `kept` positions still masked
        assert torch.equal(x == V, want), j
    assert bool((kept == 0).all()) and bool((out.tokens == 0).all())


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


def _semi_ar_window_laws(seqs, p, first, total):
    """Exact law of every window (out[i], out[i+1], out[i+2]) of a semi-AR output (window 3, block 1) whose
    first window has the law ``first`` (27,) and each later token is drawn from p(x_3 | x_1, x_2 = the two
    tokens before it): (total - 2, 27) float64."""
    joint = torch.zeros(3, 3, 3, dtype=torch.float64)
    joint[tuple(seqs.T)] = p
    cond = joint / joint.sum(-1, keepdim=True)  # p(x_3 | x_1, x_2)
    law = first.reshape(3, 3, 3)
    laws = [first]
    for _ in range(total - 3):
        pair = law.sum(0)  # law of the last two tokens of the previous window
        law = pair[..., None] * cond
        laws.append(law.reshape(-1))
    return torch.stack(laws)


@pytest.mark.parametrize("factor", [2, 4])
def test_semi_autoregressive_length_and_context(toy, factor):
    """Semi-AR output is factor * L long; each block was sampled with the previous tokens as fixed context:
    the first window follows the 16-step chain's law and every later window of 3 consecutive tokens the law
    in which each new token is drawn from p(x_3 | x_1, x_2) given the two tokens before it (with a single
    masked position every step draws from the exact conditional); the recorded contexts are those tokens."""
    seqs, p, d = toy
    L, block = 3, 1
    sched = maskdiff.get_schedule("linear")
    out = semi_autoregressive_sample(cached_sample, d, sched, batch=N, total_length=factor * L,
                                     window=L, block=block, steps=16, generator=torch.Generator().manual_seed(9))
    assert out.tokens.shape == (N, factor * L) and (out.tokens < 3).all()
    laws = _semi_ar_window_laws(seqs, p, chain_law(d, sched, L, 16), factor * L)
    for i, law in enumerate(laws):
        assert _pvalue(out.tokens[:, i : i + L], law) > P_MIN, i
    # the test has power: a new token drawn without its context (from p(x_3)) has another law
    pair = laws[0].reshape(3, 3, 3).sum(0)
    blind = (pair[..., None] * laws[0].reshape(3, 3, 3).sum((0, 1))).reshape(-1)
    assert _pvalue(out.tokens[:, 1 : 1 + L], blind) < 1e-6
    contexts = out.extra["contexts"]
    assert len(contexts) == factor * L - L
    for i, ctx in enumerate(contexts):  # block i+1 saw exactly tokens [i+1, i+3) of the final output
        assert torch.equal(ctx, out.tokens[:, i + 1 : i + L])
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
