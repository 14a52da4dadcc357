"""Exact checks of the objectives beyond plain masked diffusion: GenMD4, the SUBS ablation's full KL,
and the autoregressive baseline. Reference values come from enumeration (maskdiff.exact) or from
Bayes' rule over the forward kernels written out in the test, never from the code under test.
"""
import math

import pytest
import torch

from maskdiff.denoiser import FunctionDenoiser, carry_over
from maskdiff.exact import (enumerate_sequences, exact_discrete_nelbo, exact_genmd4_nelbo, exact_nelbo, toy_distribution,
                            true_denoiser, true_genmd4_denoiser)
from maskdiff.loss import continuous_diffusion_term, discrete_diffusion_term
from maskdiff.loss.ablation import decoder_term, full_kl, full_kl_discrete_term
from maskdiff.loss.masked import prior_term
from maskdiff.loss.autoregressive import autoregressive_nll
from maskdiff.loss.genmd4 import genmd4_loss
from maskdiff.loss.score_entropy import score_entropy, score_entropy_term
from maskdiff.schedules import PerTokenPolynomial, get_schedule

V = 3


def _entropy(p):
    return float(-(p * p.log()).sum())


def _fixed_denoiser(length, seed=0, time_scale=1.0):
    """A time-dependent denoiser that is not the truth and does not depend on GenMD4's exponents."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V + 1, length, length, V, generator=g, dtype=torch.float64)
    bias = torch.randn(length, V, generator=g, dtype=torch.float64)

    def fn(x_t, t):
        logits = table[x_t, torch.arange(length)].sum(1)  # (B, L, V): every input position feeds every output
        logits = logits + time_scale * t.to(torch.float64)[:, None, None] * bias
        return carry_over(torch.log_softmax(logits, -1), x_t, V)

    return FunctionDenoiser(fn, V, time_independent=False)


# ---------------------------------------------------------------- GenMD4 (MD4 Sec. 5)

def test_genmd4_with_unit_exponents_is_the_linear_schedule():
    L = 4
    x0 = torch.randint(0, V, (64, L), generator=torch.Generator().manual_seed(0))
    t = torch.rand(64, generator=torch.Generator().manual_seed(1)) * 0.999 + 1e-3
    noise = torch.rand((1, 64, L), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    den = _fixed_denoiser(L)
    out = genmd4_loss(den, x0, t, torch.ones(V), noise, t_min=1e-3)
    ref = continuous_diffusion_term(den, x0, t, get_schedule("linear"), t_min=1e-3, noise=noise[0])
    torch.testing.assert_close(out.nelbo.double(), ref.double(), rtol=1e-5, atol=1e-5)
    seqs, _ = toy_distribution(V, 2, seed=3)
    exact_lin = exact_nelbo(_fixed_denoiser(2), seqs, get_schedule("linear"))
    exact_gen = exact_genmd4_nelbo(_fixed_denoiser(2), seqs, torch.ones(V, dtype=torch.float64))
    torch.testing.assert_close(exact_gen, exact_lin, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("w", [[1.0, 1.0, 1.0], [0.6, 1.5, 3.0], [2.0, 0.8, 1.2]])
def test_genmd4_nelbo_with_true_posterior_is_minus_log_p(w):
    seqs, p = toy_distribution(V, 2, seed=4)
    w = torch.tensor(w, dtype=torch.float64)
    den = true_genmd4_denoiser(seqs, p, V, PerTokenPolynomial(w))
    torch.testing.assert_close(exact_genmd4_nelbo(den, seqs, w, panels=64), -p.log(), rtol=1e-6, atol=1e-6)


def _mc_gradient(den, seqs, p, w0, k, n, batches, seed):
    grads = []
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        x0 = seqs[torch.multinomial(p, n, replacement=True, generator=gen)]
        t = torch.rand(n, generator=gen, dtype=torch.float64)
        noise = torch.rand((k, n, seqs.shape[1]), generator=gen, dtype=torch.float64)
        w = w0.clone().requires_grad_(True)
        genmd4_loss(den, x0, t, w, noise, t_min=0.0).surrogate.mean().backward()
        grads.append(w.grad.clone())
    return torch.stack(grads)  # (batches, V)


def test_genmd4_reinforce_gradient_matches_exact_gradient():
    """Pathwise + REINFORCE leave-one-out estimate vs autograd through the enumerated NELBO, V=3, L=2."""
    seqs, p = toy_distribution(V, 2, seed=5)
    den = _fixed_denoiser(2, seed=6)
    w0 = torch.tensor([1.3, 0.9, 2.0], dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    (p * exact_genmd4_nelbo(den, seqs, w)).sum().backward()
    exact = w.grad
    spread = {}
    for k in (1, 2):
        g = _mc_gradient(den, seqs, p, w0, k, n=20_000, batches=20, seed=10 + k)
        mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
        assert ((mean - exact).abs() <= 4 * se + 1e-9).all(), (k, mean, exact, se)
        assert (exact.abs() > 6 * se).any(), "the test must be able to see the gradient"
        spread[k] = float(g.std(0).sum())
    # The leave-one-out baseline is the point of k = 2: at the same number of network calls it must help.
    assert spread[2] < spread[1]


# ---------------------------------------------------------------- SUBS ablation (MDLM Sec. 3.2, D3PM)

def _bayes_reverse(x_theta, alpha_s, alpha_t):
    """p_theta(z_s | z_t = m) = sum_x q(z_t = m | z_s) q(z_s | x) x_theta(x) / norm, by the kernels."""
    Vp1 = x_theta.shape[-1]
    m = Vp1 - 1
    q_s_given_x = torch.zeros(Vp1, Vp1, dtype=torch.float64)  # [x, z_s]
    for x in range(Vp1):
        if x == m:
            q_s_given_x[x, m] = 1.0
        else:
            q_s_given_x[x, x] = alpha_s
            q_s_given_x[x, m] = 1 - alpha_s
    q_t_m_given_s = torch.full((Vp1,), (alpha_s - alpha_t) / alpha_s if alpha_s > 0 else 1.0, dtype=torch.float64)
    q_t_m_given_s[m] = 1.0
    joint = (x_theta[:, None] * q_s_given_x).sum(0) * q_t_m_given_s  # over z_s
    return joint / joint.sum()


@pytest.mark.parametrize("alpha_s,alpha_t", [(0.9, 0.4), (1.0, 0.7), (0.3, 0.0)])
def test_full_kl_matches_bayes_rule(alpha_s, alpha_t):
    g = torch.Generator().manual_seed(0)
    log_x = torch.log_softmax(torch.randn(1, 1, V + 1, generator=g, dtype=torch.float64), -1)
    a = (alpha_s - alpha_t) / (1 - alpha_t)
    for c in range(V):
        truth = torch.zeros(V + 1, dtype=torch.float64)
        truth[c], truth[V] = a, 1 - a
        model = _bayes_reverse(log_x[0, 0].exp(), alpha_s, alpha_t)
        keep = truth > 0
        kl = float((truth[keep] * (truth[keep].log() - model[keep].log())).sum())
        got = full_kl(log_x, torch.tensor([[c]]), torch.tensor([[True]]), torch.tensor([alpha_s], dtype=torch.float64),
                      torch.tensor([alpha_t], dtype=torch.float64))
        assert float(got) == pytest.approx(kl, rel=1e-9, abs=1e-12)


def test_full_kl_without_mask_mass_is_the_subs_discrete_term(toy, wrong_denoiser):
    seqs, _, _ = toy
    sched, T = get_schedule("cosine"), 8
    step = torch.randint(1, T + 1, (27,), generator=torch.Generator().manual_seed(0))
    noise = torch.rand((27, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def full(x_t, t):
        return torch.cat([wrong_denoiser(x_t, t), torch.full(x_t.shape + (1,), -torch.inf, dtype=torch.float64)], -1)

    got = full_kl_discrete_term(full, seqs, step, T, sched, V, noise=noise)
    ref = discrete_diffusion_term(wrong_denoiser, seqs, step, T, sched, noise=noise)
    torch.testing.assert_close(got.double(), ref.double(), rtol=1e-5, atol=1e-5)


def _ablated(carry, zero_mask, seed=0, length=3, time_bias=False):
    """A network distribution over V + 1 values with either SUBS choice switched off, on sequences of
    ``length``; with ``time_bias`` its logits also move with t (a time-conditioned network)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V + 1, length, length, V + 1, generator=g, dtype=torch.float64)
    bias = torch.randn(length, V + 1, generator=g, dtype=torch.float64) if time_bias else None

    def full(x_t, t):
        logits = table[x_t, torch.arange(length)].sum(1)
        if bias is not None:
            logits = logits + t.double()[:, None, None] * bias
        if zero_mask:
            logits[..., V] = -torch.inf
        log_x = torch.log_softmax(logits, -1)
        if carry:
            one_hot = torch.full_like(log_x, -torch.inf).scatter_(-1, x_t[..., None], 0.0)
            log_x = torch.where((x_t != V)[..., None], one_hot, log_x)
        return log_x

    return full


def _exact_ablated_loss(full, seqs, sched, T, with_reconstruction):
    """sum_i E_q[sum_n KL_n] (+ reconstruction) for every sequence, by enumerating steps and masks."""
    from maskdiff.exact import mask_patterns

    pats = mask_patterns(seqs.shape[1])
    total = torch.zeros(seqs.shape[0], dtype=torch.float64)
    for i in range(1, T + 1):
        t, s = torch.tensor(i / T, dtype=torch.float64), torch.tensor((i - 1) / T, dtype=torch.float64)
        a_t, a_s = sched.alpha(t), sched.alpha(s)
        for pat in pats:
            prob = float((1 - a_t) ** int(pat.sum()) * a_t ** int((~pat).sum()))
            if prob == 0:
                continue
            x_t = torch.where(pat, torch.full_like(seqs, V), seqs)
            kl = full_kl(full(x_t, torch.full((seqs.shape[0],), float(t))), seqs, pat.expand_as(seqs),
                         a_s.expand(seqs.shape[0]), a_t.expand(seqs.shape[0]))
            total += prob * kl
    if with_reconstruction:
        total += decoder_term(full, seqs, sched, V).double()  # alpha_0 = 1 here: -log x_theta(x_0 | x_0)
    return total


@pytest.mark.parametrize("carry,zero_mask", [(False, True), (True, False), (False, False)])
def test_ablated_loss_is_still_an_upper_bound_on_the_entropy(toy, carry, zero_mask):
    seqs, p, _ = toy
    sched = get_schedule("linear")
    loss = _exact_ablated_loss(_ablated(carry, zero_mask), seqs, sched, T=6, with_reconstruction=not carry)
    assert float((p * loss).sum()) >= _entropy(p)
    # and each sequence's loss is at least its own -log p under the model's induced law is not required;
    # the KL terms themselves are never negative:
    assert bool((loss >= -1e-12).all())


def test_subs_choices_with_the_true_posterior_give_the_discrete_nelbo(toy):
    seqs, p, exact = toy
    sched, T = get_schedule("linear"), 6

    def full(x_t, t):
        return torch.cat([exact(x_t, t), torch.full(x_t.shape + (1,), -torch.inf, dtype=torch.float64)], -1)

    loss = _exact_ablated_loss(full, seqs, sched, T, with_reconstruction=True)
    torch.testing.assert_close(loss, exact_discrete_nelbo(exact, seqs, sched, T), rtol=1e-9, atol=1e-9)


def test_sampled_full_kl_is_unbiased(toy):
    """The one-step Monte-Carlo estimate (random step, random mask) averages to the enumerated value."""
    seqs, _, _ = toy
    sched, T = get_schedule("linear"), 6
    full = _ablated(False, False, seed=3)
    exact = _exact_ablated_loss(full, seqs, sched, T, with_reconstruction=False)
    gen = torch.Generator().manual_seed(0)
    reps = 4000
    x = seqs.repeat(reps, 1)
    step = torch.randint(1, T + 1, (x.shape[0],), generator=gen)
    est = full_kl_discrete_term(full, x, step, T, sched, V, gen).double().reshape(reps, -1)
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    assert ((mean - exact).abs() <= 4.5 * se + 1e-9).all()


def _trajectory_nelbo(full, seqs, sched, T):
    """E_q[log q(z_0, ..., z_T | x) - log p_theta(x, z_0, ..., z_T)] by enumerating the joint states of
    L = 2 positions at every grid time, from the forward kernels, the reverse steps of Bayes' rule
    (``_bayes_reverse``), the prior p(z_1) and the decoder p(x | z_0) = prod_n x_theta(z_0, 0)[n, x^n]:
    the definition of the bound, not its split into KL terms."""
    L = seqs.shape[1]
    states = torch.cartesian_prod(*[torch.arange(V + 1)] * L)  # (S, L), S = (V + 1)^L
    S = states.shape[0]
    alphas = [float(sched.alpha(torch.tensor(k / T, dtype=torch.float64))) for k in range(T + 1)]

    def per_position(kernel):  # kernel (V + 1, V + 1) over one position -> (S, S) over joint states
        out = torch.ones(S, S, dtype=torch.float64)
        for n in range(L):
            out = out * kernel[states[:, n][:, None], states[:, n][None, :]]
        return out

    def forward_kernel(a_s, a_t):  # q(z_t | z_s), one position
        k = torch.zeros(V + 1, V + 1, dtype=torch.float64)
        for v in range(V):
            k[v, v], k[v, V] = a_t / a_s, 1 - a_t / a_s
        k[V, V] = 1.0
        return k

    def reverse(k):  # p_theta(z_{k-1} = row | z_k = column) as (S_prev, S_next)
        t = torch.full((S,), k / T)
        x_theta = full(states, t).exp()  # (S, L, V + 1)
        out = torch.ones(S, S, dtype=torch.float64)
        for n in range(L):
            step = torch.zeros(S, S, dtype=torch.float64)  # [z_prev state, z_next state] for position n
            for j in range(S):
                zn = int(states[j, n])
                col = (_bayes_reverse(x_theta[j, n], alphas[k - 1], alphas[k]) if zn == V
                       else torch.nn.functional.one_hot(torch.tensor(zn), V + 1).double())
                step[:, j] = col[states[:, n]]
            out = out * step
        return out

    def xlogy(p, q):
        return torch.where(p > 0, p * torch.log(torch.where(p > 0, q, 1.0)), torch.zeros_like(p))

    q0_one = torch.zeros(V, V + 1, dtype=torch.float64)  # q(z_0 | x) for one position
    for v in range(V):
        q0_one[v, v], q0_one[v, V] = alphas[0], 1 - alphas[0]
    prior_one = torch.full((V + 1,), alphas[T] / V, dtype=torch.float64)
    prior_one[V] = 1 - alphas[T]
    prior = prior_one[states].prod(-1)  # (S,)
    dec = full(states, torch.zeros(S)).exp()  # (S, L, V + 1)
    out = torch.zeros(seqs.shape[0], dtype=torch.float64)
    kernels = [per_position(forward_kernel(alphas[k - 1], alphas[k])) for k in range(1, T + 1)]
    reverses = [reverse(k) for k in range(1, T + 1)]
    for b, x in enumerate(seqs):
        q = q0_one[x[None, :], states].prod(-1)  # q(z_0 | x), (S,)
        p_dec = dec[torch.arange(S)[:, None], torch.arange(L), x[None, :]].prod(-1)  # p(x | z_0), (S,)
        total = float((xlogy(q, q) - xlogy(q, p_dec)).sum())
        for k in range(T):
            pair = q[:, None] * kernels[k]  # q(z_{k-1}, z_k | x)
            total += float((xlogy(pair, kernels[k]) - xlogy(pair, reverses[k])).sum())
            q = pair.sum(0)
        total -= float(xlogy(q, prior).sum())
        out[b] = total
    return out


def _code_ablated_nelbo(full, seqs, sched, T):
    """The objective's terms, each by enumeration: the full KL at every step, the decoder term over
    every z_0 mask pattern (noise 1 masks, 0 keeps), and the prior."""
    from maskdiff.exact import mask_patterns

    total = _exact_ablated_loss(full, seqs, sched, T, with_reconstruction=False)
    a0 = float(sched.alpha(torch.tensor(0.0, dtype=torch.float64)))
    for pat in mask_patterns(seqs.shape[1]):
        prob = (1 - a0) ** int(pat.sum()) * a0 ** int((~pat).sum())
        noise = pat.double().expand_as(seqs)
        total += prob * decoder_term(full, seqs, sched, V, noise=noise).double()
    return total + prior_term(seqs, sched, V).double()


@pytest.mark.parametrize("carry,zero_mask", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("schedule", [("linear", {}), ("geometric", {"s_min": 0.3, "s_max": 3.0})])
def test_ablated_terms_are_the_trajectory_bound_also_when_alpha_0_is_below_one(carry, zero_mask, schedule):
    """KL terms + decoder term + prior = E_q[log q(z_{0:T} | x) / p_theta(x, z_{0:T})] exactly, for a
    schedule with alpha_0 = 1 and one with alpha_0 = e^{-0.3} (tokens already masked at t = 0), V=3, L=2, T=3."""
    seqs = enumerate_sequences(V, 2)
    sched, T = get_schedule(schedule[0], **schedule[1]), 3
    full = _ablated(carry, zero_mask, seed=5, length=2, time_bias=True)
    torch.testing.assert_close(_code_ablated_nelbo(full, seqs, sched, T), _trajectory_nelbo(full, seqs, sched, T),
                               rtol=1e-6, atol=1e-6)  # the loss functions return float32
    if sched.alpha_0 < 1:  # the t = 0 end as it was (clean reconstruction, or nothing with carry-over) misses it
        old = _exact_ablated_loss(full, seqs, sched, T, with_reconstruction=not carry) + prior_term(seqs, sched, V).double()
        assert float((old - _trajectory_nelbo(full, seqs, sched, T)).abs().max()) > 0.2


# ---------------------------------------------------------------- SEDD's score entropy


class _Scores:
    """Unnormalised log scores: a denoiser's log mu shifted by c, so that sum_v s_v = e^c r_t."""

    def __init__(self, denoise, shift):
        self.denoise, self.shift, self.vocab_size = denoise, shift, denoise.vocab_size

    def masked_logits(self, x_t, t, masked):
        return (self.denoise(x_t, t) + self.shift)[masked]


def _as_cost(scores):
    """A 'denoiser' whose -log mu[x0] at a masked position is the score entropy Z - 1 - l[x0], so that
    the enumeration in exact_nelbo integrates the score-entropy bound instead of the cross-entropy."""
    def fn(x_t, t):
        logits = scores.denoise(x_t, t) + scores.shift
        return torch.stack([-score_entropy(logits, torch.full_like(x_t, v)) for v in range(V)], -1)

    return FunctionDenoiser(fn, V, time_independent=scores.denoise.time_independent)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "polynomial"])
@pytest.mark.parametrize("shift", [0.0, 0.7, -1.3])
def test_score_entropy_of_the_true_scores_is_minus_log_p_plus_the_normalisation_gap(schedule, shift):
    """Exact: with scores e^c r_t mu (mu the true posterior) the bound is -log p(x) + L (e^c - 1 - c), since
    int_0^1 w(t) E[#masked] dt = L (alpha_0 - alpha_1) = L; with c = 0 (SEDD's true score) it is -log p(x)."""
    seqs, p = toy_distribution(V, 3, seed=8)
    sched = get_schedule(schedule)
    got = exact_nelbo(_as_cost(_Scores(true_denoiser(seqs, p, V), shift)), seqs, sched)
    gap = seqs.shape[1] * (math.exp(shift) - 1.0 - shift)
    torch.testing.assert_close(got, -p.log() + gap, rtol=1e-6, atol=1e-6)


def test_score_entropy_is_the_masked_loss_plus_a_nonnegative_gap_per_sample():
    """Same draws of t and masks: SEDD's term minus MD4's is w(t) (1 - t_min) #masked (e^c - 1 - c), per row."""
    L, B, c = 4, 256, 0.4
    gen = torch.Generator().manual_seed(9)
    x0 = torch.randint(0, V, (B, L), generator=gen)
    t = torch.rand(B, generator=gen, dtype=torch.float64) * 0.999 + 1e-3
    noise = torch.rand((B, L), generator=gen, dtype=torch.float64)
    den, sched = _fixed_denoiser(L), get_schedule("linear")
    sedd = score_entropy_term(_Scores(den, c), x0, t, sched, t_min=1e-3, noise=noise).double()
    md4 = continuous_diffusion_term(den, x0, t, sched, t_min=1e-3, noise=noise).double()
    masked = (noise >= sched.alpha(t)[:, None]).sum(-1).double()  # forward_mask's rule: masked where u >= alpha_t
    expected = 0.999 * sched.weight(t) * masked * (math.exp(c) - 1.0 - c)
    torch.testing.assert_close(sedd - md4, expected, rtol=1e-5, atol=1e-6)
    assert bool((sedd >= md4 - 1e-9).all())


def test_sampled_score_entropy_is_unbiased():
    seqs, p = toy_distribution(V, 2, seed=10)
    scores = _Scores(_fixed_denoiser(2), -0.5)
    exact = exact_nelbo(_as_cost(scores), seqs, get_schedule("cosine"), t_min=0.0)
    gen = torch.Generator().manual_seed(11)
    n = 20000
    rows = torch.arange(seqs.shape[0]).repeat_interleave(n)
    t = torch.rand(rows.numel(), generator=gen, dtype=torch.float64)
    draws = score_entropy_term(scores, seqs[rows], t, get_schedule("cosine"), gen, t_min=0.0).double().view(-1, n)
    mean, se = draws.mean(1), draws.std(1) / math.sqrt(n)
    assert ((mean - exact).abs() <= 4.5 * se).all()


# ---------------------------------------------------------------- autoregressive baseline

def test_autoregressive_nll_of_the_true_conditionals_is_minus_log_p():
    seqs, p = toy_distribution(V, 3, seed=7)

    def log_probs(inp):  # exact p(x^n | x^{<n}) from the table; inp[:, 0] is BOS = V
        B, L = inp.shape
        out = torch.zeros(B, L, V, dtype=torch.float64)
        for b in range(B):
            for n in range(L):
                prefix = inp[b, 1 : n + 1]
                match = (seqs[:, :n] == prefix).all(-1)
                marg = torch.stack([(p * (match & (seqs[:, n] == v))).sum() for v in range(V)])
                out[b, n] = (marg / marg.sum()).log()
        return out

    torch.testing.assert_close(autoregressive_nll(log_probs, seqs, V).double(), -p.log(), rtol=1e-9, atol=1e-9)
