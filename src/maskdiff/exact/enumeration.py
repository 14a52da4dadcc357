"""Exact answers on tiny problems, by enumeration: the ground truth that the tests check against.

With V real tokens and length L small enough to list all V^L sequences and all 2^L mask patterns,
the NELBO is a finite sum over patterns times a one-dimensional integral over t (done by composite
Gauss-Legendre quadrature in float64), and the law of a T-step reverse chain is a product of small
transition matrices. Nothing here is Monte Carlo.
"""
from __future__ import annotations

import itertools
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from maskdiff.denoiser import FunctionDenoiser, carry_over
from maskdiff.schedules import Schedule, time_grid


def enumerate_sequences(vocab_size: int, length: int) -> Tensor:
    """All V^L sequences, (V^L, L), in lexicographic order (the index is the base-V number)."""
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)), dtype=torch.long)


def toy_distribution(vocab_size: int = 3, length: int = 3, concentration: float = 0.3, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Dirichlet(concentration) weights over all V^L sequences: strong dependencies between positions.

    Returns (sequences (N, L), probabilities (N,) float64).
    """
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(vocab_size**length, concentration))
    probs = np.maximum(probs, 1e-12)
    return enumerate_sequences(vocab_size, length), torch.tensor(probs / probs.sum(), dtype=torch.float64)


def sequence_index(x: Tensor, vocab_size: int) -> Tensor:
    """Index of each row of x (B, L) in :func:`enumerate_sequences` order."""
    powers = vocab_size ** torch.arange(x.shape[1] - 1, -1, -1)
    return (x * powers).sum(-1)


def true_denoiser(sequences: Tensor, probs: Tensor, vocab_size: int) -> FunctionDenoiser:
    """The exact conditional mu(x_t)[n, v] = p(x_0^n = v | unmasked part of x_t), in float64.

    It does not depend on t (the mask pattern is independent of the data), so it is time-independent.
    """
    mask_id = vocab_size
    one_hot = torch.nn.functional.one_hot(sequences, vocab_size).to(torch.float64)  # (N, L, V)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        agree = (sequences[None] == x_t[:, None]) | (x_t[:, None] == mask_id)  # (B, N, L)
        weight = agree.all(-1).to(torch.float64) * probs[None]  # (B, N)
        marg = torch.einsum("bn,nlv->blv", weight, one_hot)
        log_mu = torch.log(marg / marg.sum(-1, keepdim=True))
        return carry_over(log_mu, x_t, mask_id)

    return FunctionDenoiser(denoise, vocab_size, time_independent=True)


def mask_patterns(length: int) -> Tensor:
    """All 2^L boolean mask patterns, (2^L, L)."""
    return torch.tensor(list(itertools.product([False, True], repeat=length)), dtype=torch.bool)


def gauss_legendre(a: float, b: float, panels: int = 64, order: int = 16) -> Tuple[Tensor, Tensor]:
    """Composite Gauss-Legendre nodes and weights on [a, b], float64."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(a, b, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * x[None]).ravel()
    weights = (half[:, None] * w[None]).ravel()
    return torch.tensor(nodes), torch.tensor(weights)


def _pattern_costs(denoise, x0: Tensor, patterns: Tensor, t: float) -> Tensor:
    """C(M) = sum_{n in M} -log mu(x_M, t)[n, x0^n] for every sequence and pattern: (B, P)."""
    B, L = x0.shape
    P = patterns.shape[0]
    x_t = torch.where(patterns[None], torch.full((B, P, L), denoise.vocab_size), x0[:, None].expand(B, P, L))
    log_mu = denoise(x_t.reshape(B * P, L), torch.full((B * P,), t, dtype=torch.float64))
    nll = -log_mu.to(torch.float64).gather(-1, x0[:, None].expand(B, P, L).reshape(B * P, L, 1)).reshape(B, P, L)
    return torch.where(patterns[None], nll, torch.zeros_like(nll)).sum(-1)


def _pattern_probs(patterns: Tensor, one_minus_alpha: Tensor) -> Tensor:
    """q(M | t) for each time and pattern: (T, P)."""
    k = patterns.sum(-1).to(torch.float64)  # (P,)
    L = patterns.shape[1]
    oma = one_minus_alpha.to(torch.float64)[:, None]
    return oma**k * (1.0 - oma) ** (L - k)


def exact_nelbo(
    denoise,
    x0: Tensor,
    schedule: Schedule,
    *,
    t_min: float = 0.0,
    panels: int = 64,
    order: int = 16,
    terms: bool = False,
):
    """Continuous NELBO of each row of x0 (B, L): quadrature over t, enumeration over mask patterns.

    Returns (B,) float64, or with ``terms=True`` a dict with diffusion, reconstruction and prior.
    """
    patterns = mask_patterns(x0.shape[1])
    nodes, weights = gauss_legendre(t_min, 1.0, panels, order)
    q = _pattern_probs(patterns, schedule.one_minus_alpha(nodes))  # (T, P)
    w = schedule.weight(nodes) * weights  # (T,)
    if denoise.time_independent:
        cost = _pattern_costs(denoise, x0, patterns, 0.5)  # (B, P)
        diffusion = (cost @ (q * w[:, None]).sum(0))
    else:
        diffusion = torch.zeros(x0.shape[0], dtype=torch.float64)
        for node, wq in zip(nodes.tolist(), (q * w[:, None])):
            diffusion += _pattern_costs(denoise, x0, patterns, node) @ wq
    recon = _reconstruction(denoise, x0, schedule, patterns, t_min)
    prior = torch.full_like(diffusion, x0.shape[1] * schedule.alpha_1 * np.log(denoise.vocab_size))
    if terms:
        return {"diffusion": diffusion, "reconstruction": recon, "prior": prior}
    return diffusion + recon + prior


def _reconstruction(denoise, x0, schedule, patterns, t_min):
    oma = schedule.one_minus_alpha(torch.tensor([t_min], dtype=torch.float64))
    q = _pattern_probs(patterns, oma)[0]
    if float(oma) == 0.0:
        return torch.zeros(x0.shape[0], dtype=torch.float64)
    return _pattern_costs(denoise, x0, patterns, t_min) @ q


def exact_discrete_nelbo(denoise, x0: Tensor, schedule: Schedule, steps: int) -> Tensor:
    """Discrete-time NELBO_T of each row of x0 with the uniform grid s(i) = (i-1)/T, t(i) = i/T. (B,)."""
    patterns = mask_patterns(x0.shape[1])
    t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    s = t - 1.0 / steps
    q = _pattern_probs(patterns, schedule.one_minus_alpha(t))  # (T, P)
    dw = schedule.discrete_weight(s, t)  # (T,)
    if denoise.time_independent:
        diffusion = _pattern_costs(denoise, x0, patterns, 0.5) @ (q * dw[:, None]).sum(0)
    else:
        diffusion = sum(_pattern_costs(denoise, x0, patterns, float(ti)) @ (qi * wi) for ti, qi, wi in zip(t, q, dw))
    recon = _reconstruction(denoise, x0, schedule, patterns, 0.0)
    prior = x0.shape[1] * schedule.alpha_1 * np.log(denoise.vocab_size)
    return diffusion + recon + prior


def chain_law(denoise, schedule, length: int, steps: int, grid: str = "uniform", *, cond: Optional[int] = None) -> Tensor:
    """Exact law of the final sample of the T-step ancestral chain started from all masks.

    Returns probabilities (V^L,) float64 in :func:`enumerate_sequences` order. States are all
    (V + 1)^L partially masked sequences; each step multiplies by a transition matrix that factorizes
    over positions given mu (MDLM eq. 7), the last step fills every mask from mu. ``schedule`` may be a
    scalar schedule or GenMD4's :class:`~maskdiff.schedules.PerTokenPolynomial`; ``cond``: a class
    label passed to a class-conditional denoiser.
    """
    V = denoise.vocab_size
    states = enumerate_sequences(V + 1, length)  # (S, L); value V is the mask
    S = states.shape[0]
    times = time_grid(steps, grid)
    dist = torch.zeros(S, dtype=torch.float64)
    dist[-1] = 1.0  # all masks is the last state in lexicographic order
    for k in range(steps, 0, -1):
        t, s = times[k], times[k - 1]
        if k == 1:
            stay = torch.zeros(V, dtype=torch.float64)
        else:
            stay = (schedule.one_minus_alpha(s) / schedule.one_minus_alpha(t)).expand(V)  # (V,)
        dist = dist @ _transition(denoise, states, float(t), stay, 0.0, cond)
    final = (states < V).all(-1)
    return dist[final]


def order_law(denoise, length: int, groups, times=None) -> Tensor:
    """Exact law of a sampler that fills the positions of ``groups[0]``, then of ``groups[1]``, ... (a partition
    of 0..L-1, e.g. the dilated sampler's steps for one rotation), each group's values drawn independently
    from mu of the state before it, started from all masks. ``times``: the t given to the denoiser at each
    group (default 1). Returns probabilities (V^L,) float64 in :func:`enumerate_sequences` order."""
    V = denoise.vocab_size
    states = torch.full((1, length), V, dtype=torch.long)
    probs = torch.ones(1, dtype=torch.float64)
    for j, group in enumerate(groups):
        group = list(group)
        t = 1.0 if times is None else float(times[j])
        mu = denoise(states, torch.full((states.shape[0],), t, dtype=torch.float64)).to(torch.float64).exp()  # (S, L, V)
        values = enumerate_sequences(V, len(group))  # (A, g)
        weight = torch.ones(states.shape[0], values.shape[0], dtype=torch.float64)
        for i, pos in enumerate(group):
            weight = weight * mu[:, pos, :][:, values[:, i]]
        new = states[:, None, :].repeat(1, values.shape[0], 1)
        new[:, :, group] = values[None].expand(states.shape[0], -1, -1)
        states, probs = new.reshape(-1, length), (probs[:, None] * weight).reshape(-1)
    law = torch.zeros(V ** length, dtype=torch.float64)
    return law.index_add_(0, sequence_index(states, V), probs)


def _transition(denoise, states: Tensor, t: float, stay: Tensor, sigma, cond: Optional[int] = None) -> Tensor:
    """(S, S) transition matrix of one reverse step over all partially masked states, factorized over
    positions given mu(state, t): a masked position stays masked w.p. ``stay`` (per value v of x_0, (V,):
    GenMD4's schedule; a constant otherwise) and else takes v ~ mu; an unmasked one is remasked w.p.
    ``sigma`` (ReMDM; a float, or (S, L) per state and position)."""
    S, length = states.shape
    V = denoise.vocab_size
    t_all = torch.full((S,), t, dtype=torch.float64)
    log_mu = denoise(states, t_all) if cond is None else denoise(states, t_all, cond=torch.full((S,), cond))
    mu = log_mu.to(torch.float64).exp()  # (S, L, V)
    masked = (states == V)[..., None]
    per_pos = torch.cat([mu * (1.0 - stay), (mu * stay).sum(-1, keepdim=True)], dim=-1)  # (S, L, V + 1)
    sig = torch.as_tensor(sigma, dtype=torch.float64)
    sig = sig[..., None] if sig.dim() else sig
    point = torch.nn.functional.one_hot(states, V + 1).to(torch.float64)
    remask = torch.nn.functional.one_hot(torch.full_like(states, V), V + 1).to(torch.float64)
    per_pos = torch.where(masked, per_pos, point * (1.0 - sig) + remask * sig)
    trans = per_pos[:, 0]
    for n in range(1, length):
        trans = (trans[:, :, None] * per_pos[:, n][:, None, :]).reshape(S, -1)
    return trans


def remasking_chain_laws(denoise, plan, length: int) -> Tensor:
    """Exact law of the state of a ReMDM chain (:func:`maskdiff.sampling.remasking.remasking_plan`) after
    every step, from all masks: (T + 1, (V + 1)^L) float64, row j the law after j steps (row 0: all
    masks), states in :func:`enumerate_sequences` order over V + 1 values (V is the mask). The masked
    positions use the ReMDM posterior with the plan's sigma, the last step fills every mask; 'conf'
    (whose sigma depends on the history of each token) is not Markov in the state and is refused."""
    if plan.strategy == "conf":
        raise ValueError("the 'conf' strategy's sigma depends on when each token was unmasked: no law over states alone")
    V = denoise.vocab_size
    states = enumerate_sequences(V + 1, length)
    steps = len(plan.sigmas)
    laws = torch.zeros(steps + 1, states.shape[0], dtype=torch.float64)
    laws[0, -1] = 1.0
    for j, k in enumerate(range(steps, 0, -1), start=1):
        a_s, a_t, sig = float(plan.alphas[k - 1]), float(plan.alphas[k]), float(plan.sigmas[k - 1])
        stay = 0.0 if k == 1 else (1.0 - a_s - sig * a_t) / (1.0 - a_t)
        laws[j] = laws[j - 1] @ _transition(denoise, states, float(plan.times[k]), torch.full((V,), stay, dtype=torch.float64), sig)
    return laws


def forward_state_law(sequences: Tensor, probs: Tensor, vocab_size: int, alpha: float) -> Tensor:
    """Law of x_t under the forward process, sum_x p(x) q(x_t | x) with P(masked) = 1 - alpha per position:
    ((V + 1)^L,) float64 over :func:`enumerate_sequences` (V + 1 values) order."""
    states = enumerate_sequences(vocab_size + 1, sequences.shape[1])
    masked = states == vocab_size  # (S, L)
    agree = (states[:, None] == sequences[None]) | masked[:, None]  # (S, N, L)
    a = torch.tensor(float(alpha), dtype=torch.float64)
    q = torch.where(masked, 1.0 - a, a).prod(-1)  # (S,)
    return q * (agree.all(-1).to(torch.float64) @ probs.to(torch.float64))


def autoregressive_order_nll(denoise, x0: Tensor) -> Tensor:
    """Average over all L! orders of sum_i -log mu(x_{sigma(i)} | x_{sigma(<i)} known, rest masked). (B,)."""
    B, L = x0.shape
    total = torch.zeros(B, dtype=torch.float64)
    orders = list(itertools.permutations(range(L)))
    t = torch.full((B,), 0.5, dtype=torch.float64)
    for order in orders:
        x = torch.full_like(x0, denoise.vocab_size)
        for n in order:
            log_mu = denoise(x, t).to(torch.float64)
            total -= log_mu[torch.arange(B), n, x0[:, n]]
            x[:, n] = x0[:, n]
    return total / len(orders)


def empirical_law(tokens: Tensor, vocab_size: int) -> Tensor:
    """Counts of each sequence among sampled rows, (V^L,) in :func:`enumerate_sequences` order."""
    idx = sequence_index(tokens, vocab_size)
    return torch.bincount(idx, minlength=vocab_size ** tokens.shape[1])


def true_genmd4_denoiser(sequences: Tensor, probs: Tensor, vocab_size: int, schedule) -> FunctionDenoiser:
    """The exact conditional p(x_0^n = v | x_t, t) under GenMD4's per-value schedule (MD4 Sec. 5).

    A masked position's chance of being masked depends on its value, so the posterior depends on t:
    p(x_0 | x_t) is proportional to p(x_0) prod_n q(x_t^n | x_0^n, t). Time-dependent.
    """
    mask_id = vocab_size
    one_hot = torch.nn.functional.one_hot(sequences, vocab_size).to(torch.float64)  # (N, L, V)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        oma = schedule.one_minus_alpha(t.to(torch.float64))  # (B, V)
        p_mask = torch.einsum("nlv,bv->bnl", one_hot, oma)  # (B, N, L): prob that x_0^n is masked at t
        is_mask = x_t[:, None] == mask_id
        agree = (sequences[None] == x_t[:, None]) & ~is_mask
        lik = torch.where(is_mask, p_mask, torch.where(agree, 1.0 - p_mask, torch.zeros_like(p_mask))).prod(-1)
        weight = lik * probs[None]
        marg = torch.einsum("bn,nlv->blv", weight, one_hot)
        # states impossible at this t (an unmasked token at t = 1) get a uniform mu instead of 0 / 0
        marg = torch.where(marg.sum(-1, keepdim=True) > 0, marg, torch.ones_like(marg))
        log_mu = torch.log(marg / marg.sum(-1, keepdim=True))
        return carry_over(log_mu, x_t, mask_id)

    return FunctionDenoiser(denoise, vocab_size, time_independent=False)


def conditional_toy(vocab_size: int = 3, length: int = 3, classes: int = 2, concentration: float = 0.3, seed: int = 0):
    """A class-conditional toy: p(x | c) Dirichlet weights per class, p(c) uniform.

    Returns (sequences, probs (C, N), denoiser) where ``denoiser(x_t, t, cond=labels)`` is the exact
    conditional for labels 0..C-1 and the exact unconditional (mixture) for the label C ("no class").
    """
    rng = np.random.default_rng(seed)
    probs = torch.tensor(rng.dirichlet(np.full(vocab_size**length, concentration), size=classes), dtype=torch.float64)
    probs = probs.clamp(min=1e-12)
    probs = probs / probs.sum(-1, keepdim=True)
    seqs = enumerate_sequences(vocab_size, length)
    table = torch.cat([probs, probs.mean(0, keepdim=True)])  # row C: the unconditional p(x)
    per_class = [true_denoiser(seqs, table[c], vocab_size) for c in range(classes + 1)]

    class Conditional:
        time_independent = True

        def __init__(self):
            self.vocab_size = vocab_size
            self.mask_id = vocab_size

        def __call__(self, x_t, t, cond):
            out = torch.empty(x_t.shape + (vocab_size,), dtype=torch.float64)
            for c in range(classes + 1):
                rows = cond == c
                if bool(rows.any()):
                    out[rows] = per_class[c](x_t[rows], t[rows])
            return out

    return seqs, probs, Conditional()


def exact_genmd4_nelbo(denoise, x0: Tensor, exponents: Tensor, *, panels: int = 32, order: int = 16) -> Tensor:
    """GenMD4's continuous NELBO of each row of x0 (B, L) on [0, 1] (MD4 Sec. 5), by enumeration of the
    mask patterns and quadrature in t = u^2 (which smooths the t^{w - 1} behaviour at 0).

    Differentiable in ``exponents`` (V,) for a denoiser that does not depend on them, so autograd gives
    the exact gradient that the REINFORCE estimator of :func:`maskdiff.loss.genmd4.genmd4_loss` targets.
    """
    from maskdiff.loss.genmd4 import genmd4_integrand

    B, L = x0.shape
    patterns = mask_patterns(L)  # (P, L)
    P = patterns.shape[0]
    u, wu = gauss_legendre(0.0, 1.0, panels, order)
    t, wt = u**2, wu * 2 * u  # (N,)
    N = t.numel()
    w = exponents.to(torch.float64)
    x_rep = x0[None, :, None].expand(N, B, P, L).reshape(-1, L)
    m_rep = patterns[None, None].expand(N, B, P, L).reshape(-1, L)
    t_rep = t[:, None, None].expand(N, B, P).reshape(-1)
    x_t = torch.where(m_rep, torch.full_like(x_rep, denoise.vocab_size), x_rep)
    log_mu = denoise(x_t, t_rep).to(torch.float64)
    f = genmd4_integrand(log_mu, x_rep, m_rep, t_rep, w).reshape(N, B, P)
    p_mask = t[:, None, None] ** w[x0][None]  # (N, B, L)
    q = torch.where(patterns[None, None], p_mask[:, :, None], 1.0 - p_mask[:, :, None]).prod(-1)  # (N, B, P)
    return torch.einsum("n,nbp->b", wt, q * f)
