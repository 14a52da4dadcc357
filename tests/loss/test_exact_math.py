"""Exact ELBO math on the V = 3, L = 3 toy (Dirichlet(0.3) weights over all 27 sequences).

The reference values come from maskdiff.exact: enumeration of every sequence and mask pattern plus
Gauss-Legendre quadrature in float64, no Monte Carlo. The Monte-Carlo losses of maskdiff.loss are
checked against them within 4 standard errors (fixed seeds). Facts and notation: docs/math.md.
"""
import math

import pytest
import torch
from scipy.stats import binomtest, chi2, chisquare

import maskdiff
from maskdiff import MaskdiffError
from maskdiff.denoiser import FunctionDenoiser, carry_over
from maskdiff.exact import autoregressive_order_nll, exact_discrete_nelbo, exact_nelbo
from maskdiff.loss import (continuous_diffusion_term, discrete_diffusion_term, low_discrepancy_times, nelbo,
                           prior_term, reconstruction_term)
from maskdiff.process import forward_mask, reverse_log_probs
from maskdiff.schedules import SCHEDULES, get_schedule, time_grid

V, L, N = 3, 3, 27
EXACT_ENDPOINTS = [("linear", {}), ("polynomial", {"w": 2.0}), ("polynomial", {"w": 3.0}), ("cosine", {})]
EPS_SCHEDULES = [("loglinear", {"eps": 1e-3}), ("geometric", {}), ("mdlm-cosine", {"eps": 1e-3})]


def _entropy(p):
    return float(-(p * p.log()).sum())


def _uniform_denoiser():
    """mu = Uniform(V) at every masked position (time-independent), SUBS carry-over elsewhere."""

    def fn(x_t, t):
        log_mu = torch.full(x_t.shape + (V,), -math.log(V), dtype=torch.float64)
        return carry_over(log_mu, x_t, V)

    return FunctionDenoiser(fn, V, time_independent=True)


# ---------------------------------------------------------------------------------------------------
# 1. NELBO = -log p with the true conditional


@pytest.mark.parametrize("name,kwargs", EXACT_ENDPOINTS)
def test_nelbo_equals_neg_log_p_with_true_conditional(toy, name, kwargs):
    """With alpha_0 = 1, alpha_1 = 0 and mu the true conditional, NELBO(x) = -log p(x) for every x (MD4 Sec. 3, MDLM Sec. 3)."""
    seqs, p, d = toy
    value = exact_nelbo(d, seqs, get_schedule(name, **kwargs))
    assert value.dtype == torch.float64
    assert torch.allclose(value, -p.log(), rtol=0, atol=1e-6), (value + p.log()).abs().max()


@pytest.mark.parametrize("name,kwargs", EPS_SCHEDULES)
def test_eps_schedule_gap_is_bounded_by_prior_and_reconstruction(toy, name, kwargs):
    """With alpha_0 < 1 or alpha_1 > 0, 0 <= E_p[NELBO + log p] <= E_p[R + P], and per x NELBO + log p <= R + P (MDLM Sec. 3).

    Per x the gap may be negative (about -1.2e-3 for loglinear eps = 1e-3 here): the ELBO bounds the
    model's own marginal, which includes the prior's uniform tokens, not p. The diffusion term alone
    is an integral of a non-negative integrand over a sub-range of the full one, so it is <= -log p.
    """
    seqs, p, d = toy
    terms = exact_nelbo(d, seqs, get_schedule(name, **kwargs), terms=True)
    total = terms["diffusion"] + terms["reconstruction"] + terms["prior"]
    gap = total + p.log()
    edge = terms["reconstruction"] + terms["prior"]
    assert float((p * gap).sum()) >= -1e-12
    assert float((p * gap).sum()) <= float((p * edge).sum()) + 1e-9
    assert torch.all(gap <= edge + 1e-9), (gap - edge).max()
    assert float(edge.min()) > 0  # the edge terms are really there for these schedules


@pytest.mark.parametrize(
    "name,grid",
    [
        ("loglinear", [{"eps": e} for e in (1e-2, 1e-4, 1e-6, 1e-9)]),
        ("mdlm-cosine", [{"eps": e} for e in (1e-2, 1e-4, 1e-6, 1e-9)]),
        ("geometric", [{"s_min": a, "s_max": b} for a, b in ((1e-2, 10.0), (1e-4, 20.0), (1e-6, 40.0))]),
    ],
)
def test_eps_gap_vanishes_as_endpoints_become_exact(toy, name, grid):
    """E_p[NELBO + log p] decreases to 0 as alpha_0 -> 1 and alpha_1 -> 0 (MDLM Sec. 3, eps -> 0)."""
    seqs, p, d = toy
    gaps = [float((p * (exact_nelbo(d, seqs, get_schedule(name, **kw)) + p.log())).sum()) for kw in grid]
    assert all(g >= -1e-12 for g in gaps), gaps
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-8, gaps


# ---------------------------------------------------------------------------------------------------
# 2. Other denoisers pay more than the entropy


def test_wrong_denoisers_exceed_entropy(toy, wrong_denoiser, time_dependent_denoiser):
    """Averaged over x ~ p, any other mu gives E_p[NELBO] > H(p) (MD4 Sec. 3: an upper bound on -log p_theta)."""
    seqs, p, _ = toy
    H = _entropy(p)
    lin = get_schedule("linear")
    uniform = exact_nelbo(_uniform_denoiser(), seqs, lin)
    # each of the 3 tokens costs log 3 whatever the order (MD4 Sec. 3 order identity): exactly 3 log 3
    assert torch.allclose(uniform, torch.full_like(uniform, L * math.log(V)), rtol=0, atol=1e-9)
    for d in (wrong_denoiser, _uniform_denoiser(), time_dependent_denoiser):
        value = float((p * exact_nelbo(d, seqs, lin)).sum())
        assert value > H + 1e-2, (value, H)


# ---------------------------------------------------------------------------------------------------
# 3. Order identity


@pytest.mark.parametrize("which", ["true", "wrong"])
def test_order_identity(toy, wrong_denoiser, which):
    """For a time-independent mu, NELBO(x) = average over the L! orders of the autoregressive NLL (MD4 Sec. 3)."""
    seqs, _, true = toy
    d = true if which == "true" else wrong_denoiser
    value = exact_nelbo(d, seqs, get_schedule("linear"))
    orders = autoregressive_order_nll(d, seqs)
    assert torch.allclose(value, orders, rtol=0, atol=1e-6), (value - orders).abs().max()


# ---------------------------------------------------------------------------------------------------
# 4. Invariance to the schedule


def test_schedule_invariance_time_independent(toy, wrong_denoiser):
    """Schedules with alpha_0 = 1, alpha_1 = 0 give the same continuous NELBO for a time-independent mu (MD4 Sec. 3)."""
    seqs, _, _ = toy
    ref = exact_nelbo(wrong_denoiser, seqs, get_schedule("linear"))
    for name, kwargs in EXACT_ENDPOINTS[1:] + [("loglinear", {"eps": 1e-9})]:
        other = exact_nelbo(wrong_denoiser, seqs, get_schedule(name, **kwargs))
        assert torch.allclose(other, ref, rtol=0, atol=1e-6), (name, kwargs, (other - ref).abs().max())


def test_schedule_invariance_needs_alpha_not_t(toy, time_dependent_denoiser, make_mixed_denoiser):
    """A mu that sees t breaks the invariance (linear != cosine); one that sees alpha_t keeps it (MD4 Sec. 3)."""
    seqs, _, true = toy
    lin, cos = get_schedule("linear"), get_schedule("cosine")
    by_t_lin = exact_nelbo(time_dependent_denoiser, seqs, lin)
    by_t_cos = exact_nelbo(time_dependent_denoiser, seqs, cos)
    assert float((by_t_lin - by_t_cos).abs().max()) > 1e-2
    # a mixture driven by 1 - alpha_t of each schedule: identical as functions of alpha. Its weight on
    # the uniform stays >= 1/2, so log mu is smooth in t and the quadrature is exact to 1e-6 (with a
    # weight -> 0 at t = 0, log((1 - t) 1e-6 + t / 3) varies on a scale of 1e-6 and the quadrature
    # error alone reaches 2e-5).
    by_alpha_lin = exact_nelbo(make_mixed_denoiser(true, lambda t: 0.5 + 0.5 * lin.one_minus_alpha(t)), seqs, lin)
    by_alpha_cos = exact_nelbo(make_mixed_denoiser(true, lambda t: 0.5 + 0.5 * cos.one_minus_alpha(t)), seqs, cos)
    assert torch.allclose(by_alpha_lin, by_alpha_cos, rtol=0, atol=1e-6), (by_alpha_lin - by_alpha_cos).abs().max()


# ---------------------------------------------------------------------------------------------------
# 5. Discrete time


def test_discrete_nelbo_decreases_to_continuous(toy):
    """E_p[NELBO_T] with the true mu strictly decreases on T = 1, 2, 4, ..., 1024 to the continuous value (MD4 Sec. 3, Table 6)."""
    seqs, p, d = toy
    lin = get_schedule("linear")
    continuous = float((p * exact_nelbo(d, seqs, lin)).sum())
    values = [float((p * exact_discrete_nelbo(d, seqs, lin, 2**k)).sum()) for k in range(11)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert all(v > continuous for v in values)
    assert abs(values[-1] - continuous) < 1e-3, values[-1] - continuous
    # T = 1 masks everything at once: the cost is the sum of the per-position marginal entropies
    marginals = [torch.zeros(V, dtype=torch.float64).index_add_(0, seqs[:, n], p) for n in range(L)]
    assert values[0] == pytest.approx(sum(_entropy(m) for m in marginals), abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# 6. Monte-Carlo losses are unbiased estimates of the exact NELBO

REPS = 8000  # every one of the 27 sequences, repeated: 216,000 rows


def _assert_unbiased(estimates, exact, reps=REPS):
    """Per-sequence means within Monte-Carlo error of the exact values: |z| < 4 for the average over
    sequences, and sum of the 27 squared z-scores consistent with chi2(27)."""
    est = estimates.double().reshape(reps, N)
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    assert torch.all(se > 0)
    z = (mean - exact) / se
    overall = float((mean - exact).mean() / (se.pow(2).sum().sqrt() / N))
    assert abs(overall) < 4, (overall, mean - exact, se)
    assert chi2.sf(float((z**2).sum()), N) > 1e-3, z


def _schedule(name):
    return get_schedule("loglinear", eps=0.1) if name == "loglinear-0.1" else get_schedule(name)


@pytest.mark.parametrize("denoiser", ["wrong_denoiser", "time_dependent_denoiser"])
@pytest.mark.parametrize("t_min", [1e-3, 0.05])
@pytest.mark.parametrize("name", ["linear", "cosine", "loglinear-0.1"])
def test_continuous_loss_is_unbiased(request, toy, denoiser, t_min, name):
    """diffusion (t ~ U[t_min, 1]) + reconstruction + prior is unbiased for the exact NELBO with that t_min (MD4 eq. 5, MDLM Sec. 3)."""
    seqs, _, _ = toy
    d = request.getfixturevalue(denoiser)
    schedule = _schedule(name)
    g = torch.Generator().manual_seed(0)
    x0 = seqs.repeat(REPS, 1)
    t = t_min + (1.0 - t_min) * torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    terms = nelbo(d, x0, t, schedule, g, t_min=t_min)
    assert torch.allclose(terms.prior, prior_term(x0, schedule, V))
    assert float(terms.prior[0]) == pytest.approx(L * schedule.alpha_1 * math.log(V))
    _assert_unbiased(terms.total, exact_nelbo(d, seqs, schedule, t_min=t_min))


def test_continuous_loss_terms_directly(toy, wrong_denoiser):
    """The three loss functions called one by one (float64 denoiser output) are unbiased (MD4 eq. 5)."""
    seqs, _, _ = toy
    schedule, t_min = get_schedule("cosine"), 0.05
    g = torch.Generator().manual_seed(1)
    x0 = seqs.repeat(REPS, 1)
    t = t_min + (1.0 - t_min) * torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    diffusion = continuous_diffusion_term(wrong_denoiser, x0, t, schedule, g, t_min=t_min)
    recon = reconstruction_term(wrong_denoiser, x0, t_min, schedule, g)
    assert diffusion.dtype == torch.float64 and torch.isfinite(diffusion).all()
    total = diffusion + recon + prior_term(x0, schedule, V)
    _assert_unbiased(total, exact_nelbo(wrong_denoiser, seqs, schedule, t_min=t_min))


@pytest.mark.parametrize("denoiser", ["wrong_denoiser", "time_dependent_denoiser"])
@pytest.mark.parametrize("name", ["linear", "cosine", "loglinear-0.1"])
def test_discrete_loss_is_unbiased(request, toy, denoiser, name):
    """T * one sampled step (i ~ Uniform{1..T}, T = 4) + R(0) + P is unbiased for the exact NELBO_T (MDLM eq. 8)."""
    seqs, _, _ = toy
    d = request.getfixturevalue(denoiser)
    schedule, steps = _schedule(name), 4
    exact = exact_discrete_nelbo(d, seqs, schedule, steps)
    g = torch.Generator().manual_seed(2)
    x0 = seqs.repeat(REPS, 1)
    step = torch.randint(1, steps + 1, (x0.shape[0],), generator=g)
    total = (discrete_diffusion_term(d, x0, step, steps, schedule, g) + reconstruction_term(d, x0, 0.0, schedule, g)
             + prior_term(x0, schedule, V))
    _assert_unbiased(total, exact)
    # the same through nelbo(discrete_steps=T), whose t on [t_min, 1] picks the step
    t_min = 1e-3
    t = t_min + (1.0 - t_min) * torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    _assert_unbiased(nelbo(d, x0, t, schedule, g, t_min=t_min, discrete_steps=steps).total, exact)


def _batch_means(denoise, x0, t, schedule, g, t_min, batches):
    return nelbo(denoise, x0, t, schedule, g, t_min=t_min).total.double().reshape(batches, -1).mean(1)


def test_low_discrepancy_times_same_mean(toy, wrong_denoiser):
    """Stratified t (MDLM Sec. 3.4) keeps the loss unbiased: batch means agree with the exact NELBO."""
    seqs, _, _ = toy
    schedule, t_min, batches, per = get_schedule("cosine"), 1e-3, 200, 40
    B = per * N
    x0 = seqs.repeat(batches * per, 1)  # each batch holds every sequence `per` times
    g = torch.Generator().manual_seed(3)
    u = torch.rand(batches, generator=g, dtype=torch.float64)
    t_ld = torch.cat([low_discrepancy_times(B, float(ui), t_min, dtype=torch.float64) for ui in u])
    t_iid = t_min + (1.0 - t_min) * torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    exact = float(exact_nelbo(wrong_denoiser, seqs, schedule, t_min=t_min).mean())
    for kind, t in (("ld", t_ld), ("iid", t_iid)):
        means = _batch_means(wrong_denoiser, x0, t, schedule, g, t_min, batches)
        m, se = float(means.mean()), float(means.std()) / math.sqrt(batches)
        assert abs(m - exact) < 4 * se, (kind, m, exact, se)


def test_low_discrepancy_times_lower_variance():
    """Stratified t lowers the variance of the batch-mean loss (MDLM Sec. 3.4), here by about half.

    With L = 3 the mask draw dominates the variance, so this uses L = 64 and a uniform mu, whose
    NELBO is exactly L log V for every schedule and t_min; under MD4's cosine schedule the
    integrand's mean L log V (-alpha'_t) varies with t, which is what stratification removes.
    """
    schedule, t_min, batches, B, length = get_schedule("cosine"), 1e-3, 200, 256, 64
    g = torch.Generator().manual_seed(4)
    x0 = torch.randint(0, V, (batches * B, length), generator=g)
    u = torch.rand(batches, generator=g, dtype=torch.float64)
    t_ld = torch.cat([low_discrepancy_times(B, float(ui), t_min, dtype=torch.float64) for ui in u])
    t_iid = t_min + (1.0 - t_min) * torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    var = {}
    for kind, t in (("ld", t_ld), ("iid", t_iid)):
        means = _batch_means(_uniform_denoiser(), x0, t, schedule, g, t_min, batches)
        m, se = float(means.mean()), float(means.std()) / math.sqrt(batches)
        assert abs(m - length * math.log(V)) < 4 * se, (kind, m, se)
        var[kind] = float(means.var())
    assert var["ld"] < 0.7 * var["iid"], var


def test_low_discrepancy_times_split_over_ranks():
    """Slices (offset, global_batch) of the global batch concatenate to it; one t per stratum (MDLM Sec. 3.4)."""
    t_min, G, u = 1e-3, 12, 0.37
    whole = low_discrepancy_times(G, u, t_min, dtype=torch.float64)
    parts = [low_discrepancy_times(b, u, t_min, offset=o, global_batch=G, dtype=torch.float64) for o, b in ((0, 5), (5, 7))]
    assert torch.equal(torch.cat(parts), whole)
    halves = [low_discrepancy_times(6, u, t_min, offset=o, global_batch=G, dtype=torch.float64) for o in (0, 6)]
    assert torch.equal(torch.cat(halves), whole)
    frac = (whole - t_min) / (1.0 - t_min)
    assert torch.all((whole >= t_min) & (whole < 1.0))
    assert sorted((frac * G).floor().long().tolist()) == list(range(G))
    expected = t_min + (1.0 - t_min) * torch.remainder(u + torch.arange(G, dtype=torch.float64) / G, 1.0)
    assert torch.allclose(whole, expected, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------
# 7. Forward process and posterior


def test_reverse_posterior_by_hand():
    """q(x_s | x_t, x_0): a mask stays w.p. (1 - a_s)/(1 - a_t), becomes x_0 w.p. (a_s - a_t)/(1 - a_t); tokens stay (MDLM Sec. 3.2)."""
    m = V
    x_t = torch.tensor([[m, 1, m], [0, m, m]])
    x0 = torch.tensor([[2, 1, 0], [0, 1, 2]])
    a_s, a_t = torch.tensor([0.7, 0.9], dtype=torch.float64), torch.tensor([0.2, 0.5], dtype=torch.float64)
    log_x0 = torch.nn.functional.one_hot(x0, V).to(torch.float64).log()
    out = reverse_log_probs(x_t, log_x0, a_s, a_t, m)
    assert out.dtype == torch.float64 and out.shape == (2, L, V + 1)
    expected = torch.tensor(
        [
            [[0, 0, 0.625, 0.375], [0, 1, 0, 0], [0.625, 0, 0, 0.375]],
            [[1, 0, 0, 0], [0, 0.8, 0, 0.2], [0, 0, 0.8, 0.2]],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(out.exp(), expected, rtol=0, atol=1e-15)
    # with a soft mu (the model's step): mu scaled by the unmask probability, rows sum to 1
    mu = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).expand(2, L, V)
    soft = reverse_log_probs(x_t, mu.log(), a_s, a_t, m).exp()
    assert torch.allclose(soft[0, 0], torch.tensor([0.3125, 0.1875, 0.125, 0.375], dtype=torch.float64), atol=1e-15)
    assert torch.allclose(soft.sum(-1), torch.ones(2, L, dtype=torch.float64), atol=1e-15)
    # composing with q(x_t | x_0) gives q(x_s | x_0): P(x_s = x_0) = a_t + (1 - a_t) (a_s - a_t)/(1 - a_t) = a_s
    unmask = out.exp()[torch.arange(2), torch.tensor([0, 1]), x0[torch.arange(2), torch.tensor([0, 1])]]  # masked positions
    p_keep = a_t + (1 - a_t) * unmask
    assert torch.allclose(p_keep, a_s, atol=1e-15)


def test_forward_mask_probability_and_fixed():
    """forward_mask masks each position independently w.p. 1 - alpha_t (MD4 Sec. 2) and never masks fixed positions."""
    g = torch.Generator().manual_seed(0)
    rows = 60000
    alphas = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    alpha_t = alphas.repeat_interleave(rows // len(alphas))
    x0 = torch.randint(0, V, (rows, L), generator=g)
    x_t = forward_mask(x0, alpha_t, V, g)
    masked = x_t == V
    assert torch.equal(x_t[~masked], x0[~masked])
    for a in alphas.tolist():
        sel = masked[alpha_t == a]
        k, n = int(sel.sum()), sel.numel()
        if a in (0.0, 1.0):
            assert k == (n if a == 0.0 else 0)
        else:
            assert binomtest(k, n, 1.0 - a).pvalue > 1e-3, (a, k / n)
    # independence of the positions: the count of masks per row is Binomial(L, 1 - alpha)
    per_row = masked[alpha_t == 0.5].sum(-1)
    observed = torch.bincount(per_row, minlength=L + 1).double()
    expected = torch.tensor([math.comb(L, k) for k in range(L + 1)], dtype=torch.float64) / 2**L * per_row.numel()
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3
    # fixed positions never masked, even at alpha_t = 0; the others all are
    fixed = torch.rand(rows, L, generator=g) < 0.3
    x_fixed = forward_mask(x0, torch.zeros(rows, dtype=torch.float64), V, g, fixed=fixed)
    assert torch.equal(x_fixed == V, ~fixed)
    x_half = forward_mask(x0, torch.full((rows,), 0.5, dtype=torch.float64), V, g, fixed=fixed)
    assert not bool((x_half == V)[fixed].any())
    assert torch.equal(x_half[fixed], x0[fixed])


# ---------------------------------------------------------------------------------------------------
# 9. The schedules themselves

SCHEDULE_CASES = [
    ("linear", {}), ("loglinear", {}), ("loglinear", {"eps": 0.1}), ("polynomial", {}), ("polynomial", {"w": 0.5}),
    ("polynomial", {"w": 3.0}), ("geometric", {}), ("cosine", {}), ("mdlm-cosine", {}), ("mdlm-cosine", {"eps": 0.05}),
]


def _endpoints(name, kwargs):
    """(alpha_0, alpha_1) from the table of docs/math.md#schedules."""
    if name == "loglinear":
        return 1.0, kwargs.get("eps", 1e-3)
    if name == "mdlm-cosine":
        return 1.0, kwargs.get("eps", 1e-3)
    if name == "geometric":
        return math.exp(-kwargs.get("s_min", 1e-4)), math.exp(-kwargs.get("s_max", 20.0))
    return 1.0, 0.0


def test_schedule_cases_cover_every_schedule():
    """Every schedule in SCHEDULES is checked below (docs/math.md#schedules)."""
    assert {name for name, _ in SCHEDULE_CASES} == set(SCHEDULES)


@pytest.mark.parametrize("name,kwargs", SCHEDULE_CASES)
def test_schedule_derivative_inverse_weight(name, kwargs):
    """alpha' matches a finite difference, inverse(alpha(t)) = t, w = -alpha'/(1 - alpha), alpha decreasing (MD4 Sec. 2, MDLM Sec. 3)."""
    s = get_schedule(name, **kwargs)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    h = 1e-6
    fd = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    assert torch.allclose(s.dalpha(t), fd, rtol=1e-6, atol=1e-8)
    assert torch.allclose(s.inverse(s.alpha(t)), t, rtol=0, atol=1e-9)
    assert torch.allclose(s.one_minus_alpha(t), 1.0 - s.alpha(t), rtol=1e-12, atol=1e-15)
    assert torch.allclose(s.weight(t), -s.dalpha(t) / (1.0 - s.alpha(t)), rtol=1e-9, atol=0)
    assert torch.all(s.weight(t) > 0)
    s_prev = t - 0.01
    assert torch.allclose(s.discrete_weight(s_prev, t), (s.alpha(s_prev) - s.alpha(t)) / (1.0 - s.alpha(t)), rtol=1e-9)
    dense = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
    assert torch.all(s.alpha(dense)[1:] < s.alpha(dense)[:-1])
    assert torch.all(s.dalpha(t) < 0)


@pytest.mark.parametrize("name,kwargs", SCHEDULE_CASES)
def test_schedule_endpoints(name, kwargs):
    """alpha_0 and alpha_1 as in docs/math.md#schedules: exactly 1 and 0 for linear, polynomial and cosine only (MD4 Sec. 2)."""
    s = get_schedule(name, **kwargs)
    a0, a1 = _endpoints(name, kwargs)
    if name in ("linear", "polynomial", "cosine"):
        assert (s.alpha_0, s.alpha_1) == (1.0, 0.0)
    else:
        assert s.alpha_0 == pytest.approx(a0, rel=1e-12, abs=1e-15)
        assert s.alpha_1 == pytest.approx(a1, rel=1e-9, abs=1e-15)
        assert (s.alpha_0, s.alpha_1) != (1.0, 0.0)


@pytest.mark.parametrize("w", [0.5, 3.0])
def test_polynomial_near_zero(w):
    """polynomial w = 0.5 and w = 3 stay finite near t = 0: w(t) = w / t (MD4 Sec. 2), and the loss stays finite."""
    s = get_schedule("polynomial", w=w)
    t = torch.tensor([1e-300, 1e-30, 1e-12, 1e-6], dtype=torch.float64)
    for value in (s.alpha(t), s.dalpha(t), s.one_minus_alpha(t), s.weight(t)):
        assert torch.isfinite(value).all()
    assert torch.allclose(s.weight(t), w / t, rtol=1e-12)
    tt = t[2:]
    assert torch.allclose(s.weight(tt), -s.dalpha(tt) / s.one_minus_alpha(tt), rtol=1e-9)
    d = _uniform_denoiser()
    x0 = torch.zeros(4, L, dtype=torch.long)
    loss = continuous_diffusion_term(d, x0, torch.full((4,), 1e-6, dtype=torch.float64), s, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss).all()


def test_unknown_schedule_names_the_choices():
    """get_schedule('cosin') raises MaskdiffError listing every valid name: errors name the valid choices."""
    with pytest.raises(MaskdiffError) as err:
        get_schedule("cosin")
    assert "cosin" in str(err.value)
    for name in SCHEDULES:
        assert name in str(err.value)
    with pytest.raises(MaskdiffError):
        maskdiff.get_schedule("polynomial", w=-1.0)


def test_time_grids():
    """time_grid: uniform t_k = k/T and MD4's cosine grid t_k = cos(pi/2 (1 - k/T)) with t_0 = 0, t_T = 1 (MD4 Alg. 2)."""
    T = 8
    k = torch.arange(T + 1, dtype=torch.float64)
    assert torch.allclose(time_grid(T, "uniform"), k / T, rtol=0, atol=1e-15)
    grid = time_grid(T, "cosine")
    assert grid.dtype == torch.float64
    assert torch.allclose(grid, torch.cos(0.5 * math.pi * (1.0 - k / T)), rtol=0, atol=1e-15)
    assert float(grid[0]) == 0.0 and float(grid[-1]) == 1.0
    assert torch.all(grid[1:] > grid[:-1])
    assert float(grid[T] - grid[T - 1]) < float(grid[1] - grid[0])  # denser near t = 1
    with pytest.raises(MaskdiffError, match="uniform, cosine"):
        time_grid(T, "cosin")
    with pytest.raises(MaskdiffError):
        time_grid(0)
