"""ReMDM's remasking samplers (Wang et al. 2025) on the exact toy of docs/math.md (V = 3, L = 3, Dirichlet(0.3)).

What is exact, and checked by enumeration over all (V + 1)^L partially masked states (maskdiff.exact):
* the posterior keeps the forward marginals: fed the true x_0 (a denoiser that puts mass 1 on x_0), the
  chain's state law after every step equals q(z_s | x_0) (ReMDM Sec. 3), for every x_0 and strategy;
* with the true conditional mu, one step from the forward law q(z_t) gives every position's marginal
  of q(z_s), and the mask pattern of the whole chain follows the forward process at every step;
* the sampler's draws follow the enumerated law of its chain (chi-square), and sigma = 0 is the
  ancestral chain draw for draw;
* ReMDM-loop runs on its own piecewise-linear alpha (ReMDM's alpha_on, docs/math.md (eq. 27)): at eta = 0
  it is the ancestral chain of that alpha, and fed x_0 its states follow the forward law at that alpha.
"""
import pytest
import torch
from scipy.stats import chisquare

from maskdiff import MaskdiffError, get_schedule
from maskdiff.schedules import Schedule
from maskdiff.denoiser import FunctionDenoiser, carry_over
from maskdiff.exact import (chain_law, empirical_law, enumerate_sequences, forward_state_law, mask_patterns,
                            remasking_chain_laws, sequence_index)
from maskdiff.sampling import SAMPLERS, ancestral_sample, cached_sample, get_sampler, remdm_sample
from maskdiff.sampling.remasking import confidence_sigmas, loop_alpha, remasking_plan, sigma_max

V, L = 3, 3
N = 10000
P_MIN = 1e-3
STATES = enumerate_sequences(V + 1, L)
PLANS = [("cap", 0.3, "linear"), ("rescale", 0.5, "cosine"), ("loop", 0.4, "linear"), ("cap", 1.0, "polynomial")]
ALPHA_ON = 0.6  # the loop's held alpha in these tests: sigma^max = (1 - 0.6)/0.6 leaves room for eta = 0.4


def _plan(strategy, eta, schedule, steps=8):
    return remasking_plan(get_schedule(schedule), steps, strategy, eta, t_on=0.7, t_off=0.2, alpha_on=ALPHA_ON)


def published_loop_alpha(t: float, t_on: float, t_off: float, alpha_on: float) -> float:
    """ReMDM-loop's alpha_t as its paper defines it (Sec. 4.1): linear from 0 at t = 1 to alpha_on at t_on,
    alpha_on down to t_off, linear from alpha_on at t_off to 1 at t = 0."""
    if t > t_on:
        return alpha_on * (1.0 - t) / (1.0 - t_on)
    if t >= t_off:
        return alpha_on
    return 1.0 - (1.0 - alpha_on) * t / t_off


def point_denoiser(x0: torch.Tensor) -> FunctionDenoiser:
    """mu = the one-hot of x0 at every masked position: the model step is then the true posterior given x0."""
    def fn(x_t, t):
        log_mu = torch.full(x_t.shape + (V,), -torch.inf, dtype=torch.float64).scatter_(-1, x0.expand_as(x_t)[..., None], 0.0)
        return carry_over(log_mu, x_t, V)
    return FunctionDenoiser(fn, V, time_independent=True)


def _forward_given_x0(x0, alpha):
    """q(z | x0) over all states: (S,)."""
    masked = STATES == V
    agree = (STATES == x0) | masked
    a = torch.tensor(alpha, dtype=torch.float64)
    return torch.where(masked, 1.0 - a, a).prod(-1) * agree.all(-1)


def test_plan_follows_the_paper_formulas():
    """sigma_t per strategy (ReMDM Sec. 4.1) from its definition, computed here by hand, never above sigma_t^max."""
    lin = get_schedule("linear")
    T = 10
    for strategy, eta in [("cap", 0.05), ("rescale", 0.5), ("loop", 0.3), ("conf", 0.7)]:
        plan = remasking_plan(lin, T, strategy, eta, t_on=0.6, t_off=0.2, alpha_on=0.5)
        for k in range(T, 1, -1):
            t, s = k / T, (k - 1) / T
            if strategy == "loop":
                a = lambda u: published_loop_alpha(u, 0.6, 0.2, 0.5)
            else:
                a = lambda u: 1.0 - u
            a_t, a_s = a(t), a(s)
            assert float(plan.alphas[k]) == pytest.approx(a_t, abs=1e-12)
            smax = min(1.0, (1.0 - a_s) / a_t) if a_t > 0 else 1.0
            want = {"cap": min(eta, smax), "rescale": eta * smax, "conf": eta * smax,
                    "loop": eta if (s >= 0.2 and t <= 0.6) else 0.0}[strategy]
            assert float(plan.sigmas[k - 1]) == pytest.approx(want, abs=1e-12), (strategy, k)
            assert float(plan.sigmas[k - 1]) <= smax + 1e-15
        assert float(plan.sigmas[0]) == 0.0  # the last step fills every mask
    loop = remasking_plan(lin, T, "loop", 0.3, t_on=0.6, t_off=0.2, alpha_on=0.5)
    grid = torch.arange(T + 1, dtype=torch.float64) / T
    held = loop.alphas[(grid >= 0.2 - 1e-9) & (grid <= 0.6 + 1e-9)]
    assert len(held) == 5 and torch.equal(held, torch.full_like(held, 0.5))  # alpha is alpha_on in phase 2
    assert float(sigma_max(torch.tensor(0.3), torch.tensor(0.0))) == 1.0
    assert loop_alpha(torch.tensor([0.0, 1.0]), 0.6, 0.2, 0.5).tolist() == [1.0, 0.0]
    # a linear schedule's network time is 1 - alpha: the held phase is one noise level, t = 1 - alpha_on
    assert torch.allclose(loop.times, 1.0 - loop.alphas, atol=1e-15)


@pytest.mark.parametrize("strategy,eta,schedule", PLANS)
def test_posterior_keeps_forward_marginals_given_x0(toy, strategy, eta, schedule):
    """Fed the true x_0, every step maps q(z_t | x_0) to q(z_s | x_0) exactly, for all 27 x_0 (ReMDM Sec. 3)."""
    seqs, _, _ = toy
    plan = _plan(strategy, eta, schedule)
    assert float(plan.sigmas.max()) > 0.1  # the check is not run at sigma = 0
    for x0 in seqs:
        laws = remasking_chain_laws(point_denoiser(x0), plan, L)
        T = len(plan.sigmas)
        for j in range(1, T + 1):
            alpha = 1.0 if j == T else float(plan.alphas[T - j])  # the last step reaches x_0
            assert torch.allclose(laws[j], _forward_given_x0(x0, alpha), atol=1e-12), (x0, j)


@pytest.mark.parametrize("strategy,eta,schedule", PLANS)
def test_one_step_keeps_position_marginals_and_the_chain_keeps_the_mask_law(toy, strategy, eta, schedule):
    """With the true conditional mu: from q(z_t), a step gives each position's marginal of q(z_s); over the whole
    chain from all masks, the law of the mask pattern is the forward one (1 - alpha_s per position, independent)."""
    seqs, p, d = toy
    plan = _plan(strategy, eta, schedule)
    from maskdiff.exact import _transition

    T = len(plan.sigmas)
    masked = STATES == V
    patterns = masked.long() @ (2 ** torch.arange(L - 1, -1, -1))
    laws = remasking_chain_laws(d, plan, L)
    for k in range(T, 1, -1):
        a_s, a_t, sig = float(plan.alphas[k - 1]), float(plan.alphas[k]), float(plan.sigmas[k - 1])
        stay = (1.0 - a_s - sig * a_t) / (1.0 - a_t)
        start = forward_state_law(seqs, p, V, a_t)
        after = start @ _transition(d, STATES, float(plan.times[k]), torch.full((V,), stay, dtype=torch.float64), sig)
        target = forward_state_law(seqs, p, V, a_s)
        for n in range(L):
            for v in range(V + 1):
                pick = STATES[:, n] == v
                assert float(after[pick].sum()) == pytest.approx(float(target[pick].sum()), abs=1e-12)
        j = T - k + 1  # the chain's law after this step, from all masks
        a = torch.tensor(a_s, dtype=torch.float64)
        want = torch.where(mask_patterns(L), 1.0 - a, a).prod(-1)  # (2^L,) forward law
        got = torch.zeros(2**L, dtype=torch.float64).index_add_(0, patterns, laws[j])
        assert torch.allclose(got, want, atol=1e-12)
    # the joint is not preserved (factorization error): the check above is about marginals only
    assert 0.5 * float((laws[-1][(STATES < V).all(-1)] - p).abs().sum()) > 0.01


def _pvalue(tokens, law):
    counts = empirical_law(tokens, V).double()
    keep = law > 1e-12
    assert counts[~keep].sum() == 0, "a sequence of probability 0 was drawn"
    exp = law[keep] * counts.sum()
    return chisquare(counts[keep].numpy(), exp.numpy() * counts[keep].sum().item() / exp.sum().item()).pvalue


@pytest.mark.parametrize("strategy,eta,schedule", PLANS[:3])
def test_sampler_follows_its_exact_chain_law(toy, strategy, eta, schedule):
    """20,000 draws of the 8-step chain against its enumerated law: the final sample, and the state after 5 steps."""
    _, p, d = toy
    plan = _plan(strategy, eta, schedule)
    laws = remasking_chain_laws(d, plan, L)
    final = laws[-1][(STATES < V).all(-1)]
    states = []
    out = remdm_sample(d, get_schedule(schedule), (N, L), steps=8, strategy=strategy, eta=eta, t_on=0.7, t_off=0.2,
                       alpha_on=ALPHA_ON, generator=torch.Generator().manual_seed(11), callback=lambda x: states.append(x.clone()))
    assert _pvalue(out.tokens, final) > P_MIN
    mid = torch.bincount(sequence_index(states[4], V + 1), minlength=STATES.shape[0]).double()
    keep = laws[5] > 0
    assert mid[~keep].sum() == 0
    assert chisquare(mid[keep].numpy(), (laws[5][keep] * N).numpy()).pvalue > P_MIN
    assert int(out.extra["remasked"].sum()) > 0
    # the test has power: remasking changes the law of the 8-step chain
    assert _pvalue(out.tokens, chain_law(d, get_schedule(schedule), L, 8)) < 1e-6


@pytest.mark.parametrize("schedule,grid", [("linear", "uniform"), ("cosine", "cosine"), ("loglinear", "uniform")])
def test_sigma_zero_is_the_ancestral_chain_draw_for_draw(toy, schedule, grid):
    """eta = 0: the same tokens as the ancestral sampler for the same seed; uncached the same NFE, cached the
    caching sampler's NFE (MDLM's posterior is ReMDM's at sigma = 0)."""
    _, _, d = toy
    sched = get_schedule(schedule)
    g = lambda: torch.Generator().manual_seed(3)
    x_init = torch.full((128, L), V)
    x_init[::3, 1] = 2  # some rows with a fixed middle token
    ref = ancestral_sample(d, sched, (128, L), steps=16, generator=g(), grid=grid, x_init=x_init)
    ref_cached = cached_sample(d, sched, (128, L), steps=16, generator=g(), grid=grid, x_init=x_init)
    for strategy in ("cap", "rescale", "conf"):
        plain = remdm_sample(d, sched, (128, L), steps=16, strategy=strategy, eta=0.0, generator=g(), grid=grid,
                             x_init=x_init, cache=False)
        assert torch.equal(plain.tokens, ref.tokens) and torch.equal(plain.nfe, ref.nfe)
        cached = remdm_sample(d, sched, (128, L), steps=16, strategy=strategy, eta=0.0, generator=g(), grid=grid, x_init=x_init)
        assert torch.equal(cached.tokens, ref.tokens) and torch.equal(cached.nfe, ref_cached.nfe)
        assert int(cached.extra["remasked"].sum()) == 0
    # and eta > 0 does change the draws
    other = remdm_sample(d, sched, (128, L), steps=16, strategy="cap", eta=0.5, generator=g(), grid=grid, x_init=x_init)
    assert not torch.equal(other.tokens, ref.tokens)


def test_nfe_counts_the_calls_and_fixed_positions_stay(toy):
    """NFE per sample equals the rows the denoiser saw; remasking never touches positions fixed by x_init."""
    _, _, d = toy
    calls = []
    wrapped = FunctionDenoiser(lambda x, t: (calls.append(x.clone()), d(x, t))[1], V, time_independent=False)
    x_init = torch.full((64, L), V)
    x_init[:32, 0] = 1
    states = []
    out = remdm_sample(wrapped, get_schedule("linear"), (64, L), steps=32, strategy="cap", eta=0.5,
                       generator=torch.Generator().manual_seed(5), x_init=x_init, callback=lambda x: states.append(x.clone()))
    assert int(out.nfe.sum()) == sum(c.shape[0] for c in calls)
    assert all(bool((s[:32, 0] == 1).all()) for s in states)
    assert bool((out.tokens < V).all()) and int(out.extra["remasked"].sum()) > 0
    assert bool((out.nfe <= 32).all()) and bool((out.nfe > L).any())  # remasking costs calls beyond L


def test_confidence_sigmas_prefer_unsure_tokens():
    """ReMDM-conf: sigma^(l) = sigma softmax(-psi) over the unmasked, non-fixed positions of a row."""
    psi = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)
    cand = torch.tensor([[True, True, True, False], [False, False, False, False]])
    sig = confidence_sigmas(psi, cand, 0.6)
    assert float(sig[0].sum()) == pytest.approx(0.6) and float(sig[0, 3]) == 0.0 and float(sig[1].abs().sum()) == 0.0
    assert sig[0, 1] > sig[0, 2] > sig[0, 0]
    w = torch.exp(-psi[0, :3]) / torch.exp(-psi[0, :3]).sum()
    assert torch.allclose(sig[0, :3], 0.6 * w)


def _binned_calibration(prob, hit, bins=10):
    """Chi-square statistic and degrees of freedom of Bernoulli events against their probabilities, events
    grouped into quantile bins of prob: sum over bins of (hits - sum p)^2 / sum p (1 - p)."""
    edges = torch.quantile(prob, torch.linspace(0, 1, bins + 1, dtype=torch.float64))
    which = torch.bucketize(prob, edges[1:-1])
    stat, dof = 0.0, 0
    for b in range(bins):
        sel = which == b
        if bool(sel.any()):
            p = prob[sel]
            stat += float((hit[sel].sum() - p.sum()) ** 2 / (p * (1.0 - p)).sum())
            dof += 1
    return stat, dof


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_conf_sampler_follows_its_per_step_law(toy, eta):
    """ReMDM-conf step by step (docs/math.md#remdm), over 20,000 chains of 8 steps on the exact toy, each
    transition of the recorded states checked against the law written from the definition, with psi^(l)
    rebuilt from the chain's history (the probability mu gave the token of l at the step it was unmasked):
    * a decoded position l is remasked with probability sigma_t softmax_l(-psi) over the decoded positions,
      sigma_t = eta min(1, (1 - alpha_s)/alpha_t), 0 at the last step (calibration by bins of that probability);
    * a masked position follows the MDLM posterior (sigma = 0): stays masked w.p. (1 - alpha_s)/(1 - alpha_t),
      else takes v with probability mu_v of the state before the step (chi-square of the outcome counts)."""
    from scipy.stats import chi2

    _, _, d = toy
    T, n = 8, 20000
    states = [torch.full((n, L), V)]
    out = remdm_sample(d, get_schedule("linear"), (n, L), steps=T, strategy="conf", eta=eta,
                       generator=torch.Generator().manual_seed(2), callback=lambda x: states.append(x.clone()))
    assert len(states) == T + 1 and torch.equal(states[-1], out.tokens) and bool((out.tokens < V).all())
    psi = torch.full((n, L), torch.inf, dtype=torch.float64)
    remask_prob, remask_hit, masked_stat, masked_dof = [], [], 0.0, 0
    for j, (before, after) in enumerate(zip(states, states[1:])):
        t, s = (T - j) / T, (T - j - 1) / T
        a_t, a_s, last = 1.0 - t, 1.0 - s, j == T - 1  # the linear schedule
        sigma = 0.0 if last else eta * (min(1.0, (1.0 - a_s) / a_t) if a_t > 0 else 1.0)
        mu = d(before, torch.full((n,), t, dtype=torch.float64)).exp()  # (n, L, V)
        masked = before == V
        share = torch.softmax((-psi).masked_fill(masked, -torch.inf), -1).nan_to_num(0.0)  # rows with none decoded: 0
        remask_prob.append((sigma * share)[~masked])
        remask_hit.append((after == V)[~masked].double())
        stay = 0.0 if last else (1.0 - a_s) / (1.0 - a_t)
        law = torch.cat([mu * (1.0 - stay), torch.full_like(mu[..., :1], stay)], -1)[masked]  # (M, V + 1)
        seen = torch.nn.functional.one_hot(after[masked], V + 1).double().sum(0)
        want = law.sum(0)
        assert float(seen[want == 0].sum()) == 0.0, j
        masked_stat += float(((seen - want)[want > 0] ** 2 / want[want > 0]).sum())
        masked_dof += int((want > 0).sum()) - 1
        newly = masked & (after != V)
        psi = torch.where(newly, mu.gather(-1, after.clamp(max=V - 1)[..., None]).squeeze(-1), psi)
        psi = psi.masked_fill(after == V, torch.inf)
    prob, hit = torch.cat(remask_prob), torch.cat(remask_hit)
    assert bool((hit[prob == 0] == 0).all()) and bool((hit[prob >= 1] == 1).all())  # the sure events
    unsure = (prob > 0) & (prob < 1)
    assert int(unsure.sum()) > 10000 and float(hit[unsure].sum()) > 1000  # many remasking events to weigh
    stat, dof = _binned_calibration(prob[unsure], hit[unsure])
    assert chi2.sf(stat, dof) > P_MIN, (stat, dof)
    assert chi2.sf(masked_stat, masked_dof) > P_MIN, (masked_stat, masked_dof)
    assert torch.equal(out.extra["remasked"], sum((b != V) & (a == V) for b, a in zip(states, states[1:])).sum(-1))


def test_registered_and_bad_input(toy, time_dependent_denoiser):
    """The four strategies are samplers by name; bad parameters fail with the valid choices named."""
    _, _, d = toy
    for name in ("remdm-cap", "remdm-rescale", "remdm-conf", "remdm-loop"):
        assert name in SAMPLERS
        out = get_sampler(name)(d, get_schedule("linear"), (4, L), steps=8, generator=torch.Generator().manual_seed(0))
        assert out.sampler == name and bool((out.tokens < V).all())
    lin = get_schedule("linear")
    with pytest.raises(MaskdiffError, match="cap, rescale, conf, loop"):
        remasking_plan(lin, 8, "capped")
    with pytest.raises(MaskdiffError, match=r"\[0, 1\]"):
        remasking_plan(lin, 8, "cap", 1.5)
    with pytest.raises(MaskdiffError, match="t_off < t_on"):
        remasking_plan(lin, 8, "loop", 0.1, t_on=0.2, t_off=0.5)
    with pytest.raises(MaskdiffError, match="time-independent"):
        remdm_sample(time_dependent_denoiser, lin, (2, L), steps=4, cache=True)
    out = remdm_sample(time_dependent_denoiser, lin, (2, L), steps=4, eta=0.5, generator=torch.Generator().manual_seed(0))
    assert bool((out.tokens < V).all())


def test_sigma_zero_on_a_transformer():
    """The same draw-for-draw identity with a real network (float32 logits) instead of the exact toy."""
    from maskdiff.denoiser import SUBSDenoiser
    from maskdiff.networks.transformer import DiT

    torch.manual_seed(0)
    net = DiT(5, 12, width=32, depth=1, heads=2)
    torch.nn.init.normal_(net.head.weight, std=0.5)
    d = SUBSDenoiser(net.eval(), 5, max_length=12)
    sched = get_schedule("cosine")
    ref = ancestral_sample(d, sched, (6, 12), steps=24, generator=torch.Generator().manual_seed(4))
    out = remdm_sample(d, sched, (6, 12), steps=24, strategy="rescale", eta=0.0, cache=False,
                       generator=torch.Generator().manual_seed(4))
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.nfe, ref.nfe)


class PublishedLoopSchedule(Schedule):
    """ReMDM-loop's alpha (:func:`published_loop_alpha`) as a schedule, for the non-remasking chain on it."""

    def __init__(self, t_on: float, t_off: float, alpha_on: float):
        self.args = (t_on, t_off, alpha_on)

    def alpha(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return torch.tensor([published_loop_alpha(float(u), *self.args) for u in t.reshape(-1)],
                            dtype=torch.float64).reshape(t.shape)


LOOP_ARGS = dict(t_on=0.55, t_off=0.05, alpha_on=0.9)  # ReMDM's published values (scripts/remdm-loop.sh)


@pytest.mark.parametrize("steps", [20, 13])  # t_on and t_off on the grid, and between grid points
def test_loop_at_eta_zero_is_the_ancestral_chain_of_its_alpha(toy, steps):
    """eta = 0: remdm-loop draws what the ancestral (and caching) sampler draws on the published loop alpha,
    token for token with the same NFE, and its enumerated law is that chain's law. Nothing of the trained
    schedule enters but the network's time (irrelevant to this time-independent denoiser)."""
    seqs, p, d = toy
    published = PublishedLoopSchedule(**LOOP_ARGS)
    g = lambda: torch.Generator().manual_seed(7)
    x_init = torch.full((256, L), V)
    x_init[::4, 2] = 0
    ref = ancestral_sample(d, published, (256, L), steps=steps, generator=g(), x_init=x_init)
    ref_cached = cached_sample(d, published, (256, L), steps=steps, generator=g(), x_init=x_init)
    for schedule in ("linear", "cosine"):
        plain = remdm_sample(d, get_schedule(schedule), (256, L), steps=steps, strategy="loop", eta=0.0, cache=False,
                             generator=g(), x_init=x_init, **LOOP_ARGS)
        assert torch.equal(plain.tokens, ref.tokens) and torch.equal(plain.nfe, ref.nfe)
        cached = remdm_sample(d, get_schedule(schedule), (256, L), steps=steps, strategy="loop", eta=0.0, generator=g(),
                              x_init=x_init, **LOOP_ARGS)
        assert torch.equal(cached.tokens, ref_cached.tokens) and torch.equal(cached.nfe, ref_cached.nfe)
    plan = remasking_plan(get_schedule("linear"), steps, "loop", 0.0, **LOOP_ARGS)
    laws = remasking_chain_laws(d, plan, L)
    assert torch.allclose(laws[-1][(STATES < V).all(-1)], chain_law(d, published, L, steps), atol=1e-12)
    # the trained schedule's chain is another law: the loop does not run on it
    assert float((chain_law(d, get_schedule("linear"), L, steps) - chain_law(d, published, L, steps)).abs().sum()) > 1e-3


def test_loop_keeps_the_forward_marginals_at_its_alpha(toy):
    """At ReMDM's published settings (eta = 0.1 <= (1 - 0.9)/0.9), fed the true x_0 the chain's state after
    every step has the forward law q(z | x_0) at the published loop alpha (eq. 27), for all 27 x_0; with
    the true conditional mu the mask pattern follows the forward law at that alpha."""
    seqs, p, d = toy
    T = 20
    plan = remasking_plan(get_schedule("loglinear"), T, "loop", 0.1, **LOOP_ARGS)
    assert float(plan.sigmas.max()) == pytest.approx(0.1) and int((plan.sigmas > 0).sum()) == 10  # phase 2: 10 steps
    alpha = [published_loop_alpha(k / T, **LOOP_ARGS) for k in range(T + 1)]
    for x0 in seqs:
        laws = remasking_chain_laws(point_denoiser(x0), plan, L)
        for j in range(1, T + 1):
            assert torch.allclose(laws[j], _forward_given_x0(x0, alpha[T - j]), atol=1e-12), (x0, j)
    masked = STATES == V
    patterns = masked.long() @ (2 ** torch.arange(L - 1, -1, -1))
    laws = remasking_chain_laws(d, plan, L)
    for j in range(1, T + 1):
        a = torch.tensor(alpha[T - j], dtype=torch.float64)
        got = torch.zeros(2**L, dtype=torch.float64).index_add_(0, patterns, laws[j])
        assert torch.allclose(got, torch.where(mask_patterns(L), 1.0 - a, a).prod(-1), atol=1e-12), j


def test_loop_gives_a_time_conditioned_network_the_time_of_its_alpha(toy, time_dependent_denoiser):
    """The network sees t = schedule.inverse(alpha_loop(t)): the trained schedule's time of the noise level
    the chain is at, so one time throughout the held phase."""
    seen = []
    d = FunctionDenoiser(lambda x, t: (seen.append(float(t[0])), time_dependent_denoiser(x, t))[1], V,
                         time_independent=False)
    cosine = get_schedule("cosine")
    T = 20
    remdm_sample(d, cosine, (64, L), steps=T, strategy="loop", eta=0.05, generator=torch.Generator().manual_seed(1),
                 **LOOP_ARGS)
    want = [float(cosine.inverse(torch.tensor(published_loop_alpha(k / T, **LOOP_ARGS), dtype=torch.float64)))
            for k in range(T, T - len(seen), -1)]
    assert len(seen) >= 15 and seen == pytest.approx(want, abs=1e-6)  # the network's t is float32
    assert seen[T - 11] == pytest.approx(float(cosine.inverse(torch.tensor(0.9, dtype=torch.float64))), abs=1e-6)


def test_loop_refuses_what_the_paper_does_not_define():
    lin = get_schedule("linear")
    with pytest.raises(MaskdiffError, match=r"alpha_on"):
        remasking_plan(lin, 8, "loop", 0.01, alpha_on=1.0)
    with pytest.raises(MaskdiffError, match=r"at most .*0\.1111.*got 0\.2"):
        remasking_plan(lin, 8, "loop", 0.2, alpha_on=0.9)
    with pytest.raises(MaskdiffError, match="0 < t_off < t_on < 1"):
        remasking_plan(lin, 8, "loop", 0.01, t_on=1.0, t_off=0.1)
