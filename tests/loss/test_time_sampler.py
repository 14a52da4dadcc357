"""Importance-sampled t (docs/math.md#importance-sampled-time): the same NELBO, a lower-variance estimate.

Exact on the toy problem (V = 3, L = 3, every mask pattern enumerated, Gauss-Legendre over the uniform
draw v): the importance estimator's expectation equals the NELBO's diffusion term of every schedule,
for time-independent and time-conditioned denoisers; its second moment is below the uniform
estimator's; the sampled training term agrees with the exact value; its weight is bounded. The same
proposal summed over the steps of discrete time (and the SUBS ablation), and with GenMD4's learned
schedule, keeps those estimates unbiased too. MDLM's per-stratum t ('stratified') puts row i of the batch in
stratum i and leaves the batch mean's expectation at the NELBO's diffusion term.
"""
import math

import pytest
import torch

from maskdiff.exact import _pattern_costs, _pattern_probs, exact_discrete_nelbo, exact_nelbo, gauss_legendre, mask_patterns
from maskdiff.loss import (continuous_diffusion_term, discrete_diffusion_term, importance_steps, importance_times, low_discrepancy_times,
                           stratified_times)
from maskdiff.loss.ablation import full_kl_discrete_term
from maskdiff.loss.genmd4 import genmd4_loss
from maskdiff.schedules import get_schedule

V = 3  # the toy's vocabulary (conftest)

CASES = [("linear", {}, 1e-3), ("linear", {}, 0.0), ("loglinear", {}, 1e-3), ("cosine", {}, 1e-3), ("cosine", {}, 0.0),
         ("polynomial", {"w": 3.0}, 1e-3), ("geometric", {}, 1e-3), ("mdlm-cosine", {}, 1e-3)]


def moments(denoise, x0, schedule, t_min, sampler, power):
    """E_v E_mask[(weight C_t)^power] per row: v uniform on [0, 1) by quadrature, masks enumerated."""
    patterns = mask_patterns(x0.shape[1])
    v, wq = gauss_legendre(0.0, 1.0, panels=64, order=16)
    t = t_min + (1.0 - t_min) * v
    if sampler == "importance":
        t, weight = importance_times(t, schedule, t_min)
    else:
        weight = (1.0 - t_min) * schedule.weight(t)
    q = _pattern_probs(patterns, schedule.one_minus_alpha(t))  # (T, P)
    out = torch.zeros(x0.shape[0], dtype=torch.float64)
    cost = None
    for k in range(t.shape[0]):
        if cost is None or not denoise.time_independent:
            cost = _pattern_costs(denoise, x0, patterns, float(t[k]))  # (B, P)
        out += wq[k] * ((weight[k] * cost) ** power @ q[k])
    return out


@pytest.mark.parametrize("name,args,t_min", CASES)
def test_importance_estimator_is_unbiased(toy, name, args, t_min):
    seqs, _, true = toy
    schedule = get_schedule(name, **args)
    exact = exact_nelbo(true, seqs, schedule, t_min=t_min, terms=True)["diffusion"]
    got = moments(true, seqs, schedule, t_min, "importance", 1)
    assert torch.allclose(got, exact, rtol=1e-7, atol=1e-9), (name, float((got - exact).abs().max()))


@pytest.mark.parametrize("name,t_min", [("linear", 1e-3), ("cosine", 1e-3)])
def test_importance_estimator_is_unbiased_for_time_conditioned_denoisers(toy, time_dependent_denoiser, name, t_min):
    """The network sees the mapped t (t_min = 0 is covered by the time-independent cases above)."""
    seqs, _, _ = toy
    schedule = get_schedule(name)
    exact = exact_nelbo(time_dependent_denoiser, seqs, schedule, t_min=t_min, terms=True)["diffusion"]
    got = moments(time_dependent_denoiser, seqs, schedule, t_min, "importance", 1)
    assert torch.allclose(got, exact, rtol=1e-6, atol=1e-9), (name, float((got - exact).abs().max()))


@pytest.mark.parametrize("name,args", [("linear", {}), ("loglinear", {}), ("cosine", {}), ("geometric", {})])
def test_importance_estimator_has_lower_variance(toy, wrong_denoiser, name, args):
    """Variance of the per-sequence estimate over t and masks (same mean), averaged over the toy's
    sequences: at most 0.75 of the uniform estimator's (0.25-0.71 measured). Schedules that mask few
    tokens at small t (polynomial with w > 1, MDLM's cosine) gain little or nothing on this toy."""
    seqs, p, true = toy
    schedule = get_schedule(name, **args)
    for denoise in (true, wrong_denoiser):
        mean2 = float(moments(denoise, seqs, schedule, 1e-3, "uniform", 1) ** 2 @ p)
        uniform = float(moments(denoise, seqs, schedule, 1e-3, "uniform", 2) @ p) - mean2
        importance = float(moments(denoise, seqs, schedule, 1e-3, "importance", 2) @ p) - mean2
        assert importance < 0.75 * uniform, (name, importance, uniform)


def test_sampled_training_term_matches_exact(toy):
    """continuous_diffusion_term(..., time_sampler='importance') with stratified t, many draws: within 4 SE."""
    seqs, p, true = toy
    schedule = get_schedule("linear")
    g = torch.Generator().manual_seed(0)
    rows = torch.multinomial(p, 60_000, replacement=True, generator=g)
    x0 = seqs[rows]
    t = low_discrepancy_times(x0.shape[0], 0.37, 1e-3, dtype=torch.float64)
    est = continuous_diffusion_term(true, x0, t, schedule, g, t_min=1e-3, time_sampler="importance").to(torch.float64)
    exact = float(exact_nelbo(true, seqs, schedule, t_min=1e-3, terms=True)["diffusion"] @ p)
    se = float(est.std()) / math.sqrt(est.numel())
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)


def test_importance_times_range_and_weight_bound():
    for name in ("linear", "loglinear", "cosine", "geometric"):
        schedule = get_schedule(name)
        u = torch.linspace(0, 1, 1001, dtype=torch.float64)[:-1]
        t, w = importance_times(1e-3 + (1 - 1e-3) * u, schedule, 1e-3)
        assert float(t.min()) >= 1e-3 and float(t.max()) <= 1.0
        assert bool((t[1:] >= t[:-1]).all()), name  # monotone in u: stratification carries over
        lo = math.sqrt(float(schedule.one_minus_alpha(torch.tensor(1e-3, dtype=torch.float64))))
        assert float(w.max()) <= 2.0 / lo + 1e-9
        if name != "geometric":  # the weights that grow like 1/t are the ones bounded lower
            assert float(w.max()) < 0.1 * float(schedule.weight(torch.tensor(1e-3, dtype=torch.float64))), name


def test_stratified_batch_mean_is_the_nelbo_term(toy):
    """MDLM's per-stratum t: E over every u_i (quadrature) of the batch mean (1/B) sum_i of the row estimate
    at t_i = stratified_times(u)_i (masks enumerated) equals the exact diffusion term of each sequence, while
    one stratum alone does not."""
    seqs, _, true = toy
    schedule, t_min, B = get_schedule("loglinear"), 1e-3, 4
    exact = exact_nelbo(true, seqs, schedule, t_min=t_min, terms=True)["diffusion"]
    patterns = mask_patterns(seqs.shape[1])
    v, wq = gauss_legendre(0.0, 1.0, panels=16, order=16)
    per_stratum = torch.zeros(B, seqs.shape[0], dtype=torch.float64)
    assert true.time_independent
    cost = _pattern_costs(true, seqs, patterns, 0.5)  # (S, P): the same at every t
    for vk, wk in zip(v.tolist(), wq.tolist()):
        t = stratified_times(torch.full((B,), vk, dtype=torch.float64), t_min, dtype=torch.float64)  # (B,)
        q = _pattern_probs(patterns, schedule.one_minus_alpha(t))  # (B, P)
        per_stratum += wk * (1.0 - t_min) * schedule.weight(t)[:, None] * (q @ cost.T)
    assert torch.allclose(per_stratum.mean(0), exact, rtol=1e-7, atol=1e-9), float((per_stratum.mean(0) - exact).abs().max())
    assert not torch.allclose(per_stratum[0], exact, rtol=1e-2)


def test_trainer_draws_stratified_times_per_row_and_independent_of_the_split():
    """train with time_sampler 'stratified': row i of the global batch gets a t in stratum i, from its own
    uniform (so micro-batches see the same t), and the default keeps low_discrepancy's one shared shift."""
    from maskdiff.config import DiffusionConfig
    from maskdiff.step import draw_step, training_times, uses_row_uniforms

    class Rows:
        def draw(self, B, gen):
            return torch.zeros(B, 8, dtype=torch.long), None, None

    B, t_min = 16, 1e-3
    d = DiffusionConfig(schedule="loglinear", time_sampler="stratified")
    batch = draw_step(Rows(), 3, 7, B, 8, 1, uses_row_uniforms(d), torch.device("cpu"))
    t = training_times(batch, d, 0, B, B).to(torch.float64)
    stratum = torch.floor((t - t_min) / (1 - t_min) * B)
    assert torch.equal(stratum, torch.arange(B, dtype=torch.float64))
    assert torch.equal(torch.cat([training_times(batch, d, lo, 4, B) for lo in range(0, B, 4)]), t.float())
    assert len(set(((t - t_min) / (1 - t_min) * B - stratum).tolist())) == B  # a uniform of its own per stratum
    default = DiffusionConfig(schedule="loglinear")
    assert not uses_row_uniforms(default)
    shift = ((training_times(draw_step(Rows(), 3, 7, B, 8, 1, False, torch.device("cpu")), default, 0, B, B).double() - t_min)
             / (1 - t_min) * B) % 1
    assert float(shift.max() - shift.min()) < 1e-4  # one shared shift (float32 rounding)


def test_stratified_needs_low_discrepancy():
    from maskdiff.config import DiffusionConfig, RunConfig
    from maskdiff.errors import MaskdiffError

    with pytest.raises(MaskdiffError, match="needs low_discrepancy on"):
        RunConfig(diffusion=DiffusionConfig(time_sampler="stratified", low_discrepancy=False)).validate()


def test_unknown_time_sampler_is_a_clear_error(toy):
    from maskdiff.errors import MaskdiffError

    seqs, _, true = toy
    with pytest.raises(MaskdiffError, match="choose one of: uniform, importance"):
        continuous_diffusion_term(true, seqs, torch.full((seqs.shape[0],), 0.5), get_schedule("linear"), time_sampler="imp")


# ---------------------------------------------------------------- discrete time, the SUBS ablation, GenMD4

ONE = 1.0 - 2.0**-53  # the largest float64 below 1: a mask uniform this high masks whenever alpha_t < 1


def _patterned(seqs, patterns):
    """Every sequence with every mask pattern: x0 (B P, L) and the uniforms that draw exactly that pattern."""
    B, P = seqs.shape[0], patterns.shape[0]
    x0 = seqs[:, None].expand(B, P, seqs.shape[1]).reshape(B * P, -1)
    masks = patterns[None].expand(B, P, -1).reshape(B * P, -1)
    return x0, masks, torch.where(masks, torch.full(masks.shape, ONE, dtype=torch.float64), torch.zeros(masks.shape, dtype=torch.float64))


def _step_law(schedule, steps):
    """q_i of the definition: the proposal sqrt(1 - alpha) uniform, integrated over step i = 1..T."""
    roots = [math.sqrt(float(schedule.one_minus_alpha(torch.tensor(i / steps, dtype=torch.float64)))) for i in range(steps + 1)]
    return torch.tensor([(roots[i] - roots[i - 1]) / (roots[-1] - roots[0]) for i in range(1, steps + 1)], dtype=torch.float64)


@pytest.mark.parametrize("name", ["linear", "loglinear", "cosine", "geometric"])
def test_importance_steps_draw_each_step_with_its_probability(name):
    """The step of a uniform t on [t_min, 1] (a fine grid of midpoints) falls on step i with probability q_i,
    and the probability returned with it is that q_i."""
    schedule, steps, n = get_schedule(name), 8, 200_000
    v = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    step, prob = importance_steps(1e-3 + (1 - 1e-3) * v, steps, schedule, 1e-3)
    q = _step_law(schedule, steps)
    freq = torch.bincount(step, minlength=steps + 1)[1:].double() / n
    assert float((freq - q).abs().max()) <= 2.0 / n
    assert torch.allclose(prob, q[step - 1], rtol=1e-12, atol=0)
    assert bool((step[1:] >= step[:-1]).all())  # monotone in t: stratification carries over


@pytest.mark.parametrize("denoiser", ["wrong_denoiser", "time_dependent_denoiser"])
@pytest.mark.parametrize("name", ["linear", "loglinear", "cosine"])
def test_discrete_importance_estimate_is_unbiased(request, toy, denoiser, name):
    """E over the step (q_i) and the masks (enumerated) of w_i / q_i C_{t_i} is NELBO_T's diffusion term, as the
    uniform step's T w_i C_{t_i} is (MDLM eq. 8, docs/math.md (eq. 8)); and the SUBS ablation's full KL term
    has the same expectation under both step laws."""
    seqs, _, _ = toy
    d = request.getfixturevalue(denoiser)
    schedule, steps = get_schedule(name), 6
    patterns = mask_patterns(seqs.shape[1])
    x0, masks, noise = _patterned(seqs, patterns)
    q = _step_law(schedule, steps)

    def full_log_probs(x_t, t):  # any (B, L, V + 1) log-probabilities will do for the ablation's expectation
        return torch.cat([d(x_t, t) + math.log(0.8), torch.full(x_t.shape + (1,), math.log(0.2), dtype=torch.float64)], -1)

    expect = {k: torch.zeros(seqs.shape[0], dtype=torch.float64) for k in ("importance", "uniform", "kl-importance", "kl-uniform")}
    for i in range(1, steps + 1):
        a = float(schedule.one_minus_alpha(torch.tensor(i / steps, dtype=torch.float64)))
        p_pattern = torch.where(masks, a, 1.0 - a).prod(-1)  # (B P,)
        step = torch.full((x0.shape[0],), i)
        prob = torch.full((x0.shape[0],), float(q[i - 1]), dtype=torch.float64)
        for key, law, sp in (("importance", q[i - 1], prob), ("uniform", 1.0 / steps, None)):
            est = discrete_diffusion_term(d, x0, step, steps, schedule, noise=noise, step_prob=sp).to(torch.float64)
            expect[key] += float(law) * (p_pattern * est).reshape(seqs.shape[0], -1).sum(-1)
            kl = full_kl_discrete_term(full_log_probs, x0, step, steps, schedule, V, noise=noise, step_prob=sp).to(torch.float64)
            expect["kl-" + key] += float(law) * (p_pattern * kl).reshape(seqs.shape[0], -1).sum(-1)
    exact = exact_discrete_nelbo(d, seqs, schedule, steps) - seqs.shape[1] * schedule.alpha_1 * math.log(V)  # R(0) = 0
    assert torch.allclose(expect["uniform"], exact, rtol=1e-6)
    assert torch.allclose(expect["importance"], exact, rtol=1e-6)
    assert torch.allclose(expect["kl-importance"], expect["kl-uniform"], rtol=1e-6)
    assert not torch.allclose(q, torch.full_like(q, 1.0 / steps), atol=1e-3)  # the law is not the uniform one


@pytest.mark.parametrize("denoiser", ["wrong_denoiser", "time_dependent_denoiser"])
def test_genmd4_importance_estimate_is_unbiased(request, toy, denoiser):
    """GenMD4 with non-unit exponents: E over t (quadrature in the uniform v) and the masks (enumerated) of
    its NELBO estimate is the same with t uniform on [t_min, 1] and with sqrt(t) uniform weighted by 1/q(t)."""
    seqs, _, _ = toy
    d = request.getfixturevalue(denoiser)
    w, t_min = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), 1e-3
    patterns = mask_patterns(seqs.shape[1])
    x0, masks, noise = _patterned(seqs, patterns)
    v, wq = gauss_legendre(0.0, 1.0, panels=32, order=16)
    expect = {"uniform": 0.0, "importance": 0.0}
    for vk, wk in zip(v.tolist(), wq.tolist()):
        t_of = {"uniform": t_min + (1 - t_min) * vk, "importance": (math.sqrt(t_min) + (1 - math.sqrt(t_min)) * vk) ** 2}
        for sampler in expect:
            p_mask = t_of[sampler] ** w[x0]  # the time the loss masks at, from the proposal's definition
            p_pattern = torch.where(masks, p_mask, 1.0 - p_mask).prod(-1)
            t = torch.full((x0.shape[0],), t_min + (1 - t_min) * vk, dtype=torch.float64)
            est = genmd4_loss(d, x0, t, w, noise[None], t_min=t_min, time_sampler=sampler).nelbo.to(torch.float64)
            expect[sampler] = expect[sampler] + wk * (p_pattern * est).reshape(seqs.shape[0], -1).sum(-1)
    assert torch.allclose(expect["importance"], expect["uniform"], rtol=1e-6)
