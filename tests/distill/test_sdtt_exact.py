"""SDTT's target and loss against their definitions on the V = 3, L = 3 toy (Dirichlet(0.3) weights), by
enumeration: every intermediate state of the teacher's first half step is listed with its probability,
so expectations over the draw are exact sums (docs/sampling.md, "Distilled models")."""
import itertools

import pytest
import torch

from maskdiff import get_schedule
from maskdiff.denoiser import FunctionDenoiser
from maskdiff.distill import half_steps, kl_to_target, sdtt_loss, sdtt_target

V, L = 3, 3
M = V  # the mask id


def _first_steps(teacher, x_t, p1, t):
    """Every state x_m of the teacher's first step from x_t (1, L), with its probability (MDLM eq. 7):
    each mask stays with probability 1 - p1, else takes v with probability p1 mu(x_t)_v."""
    mu = teacher(x_t, torch.tensor([t], dtype=torch.float64)).exp()[0]  # (L, V)
    options = [[(v, p1 * float(mu[i, v])) for v in range(V)] + [(M, 1 - p1)] if int(x_t[0, i]) == M else [(int(x_t[0, i]), 1.0)]
               for i in range(L)]
    for combo in itertools.product(*options):
        yield torch.tensor([[v for v, _ in combo]]), float(torch.tensor([w for _, w in combo], dtype=torch.float64).prod())


def _two_step_value_law(teacher, x_t, half):
    """The definition: the law of each masked position's value after the teacher's two steps t -> m -> s,
    given that it unmasked, (N, V): P(x_s,i = v | x_t) / P(x_s,i != mask | x_t), enumerated."""
    p1, p2, m = float(half.p1[0]), float(half.p2[0]), float(half.m[0])
    masked = x_t[0] == M
    law = torch.zeros(L, V, dtype=torch.float64)
    for x_m, w in _first_steps(teacher, x_t, p1, float(half.t[0])):
        mu2 = teacher(x_m, torch.tensor([m], dtype=torch.float64)).exp()[0]
        for i in range(L):
            if int(x_m[0, i]) != M:
                law[i, int(x_m[0, i])] += w
            else:
                law[i] += w * p2 * mu2[i]
    law = law[masked]
    return law / law.sum(-1, keepdim=True)


def _expected_target(teacher, x_t, half, paper=False):
    """E over the teacher's first step of sdtt_target's estimate, (N, V), enumerated (``paper``: c = 1)."""
    if paper:
        half.p2 = half.p1 * 0 + 1.0 - 1e-300  # c = p2 / (p1 + (1 - p1) p2) = 1: the reference code's target
    total = 0
    for x_m, w in _first_steps(teacher, x_t, float(half.p1[0]), float(half.t[0])):
        total = total + w * sdtt_target(teacher, x_t, half, intermediate=x_m).exp()
    return total


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps,k", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("state", [[M, M, M], [1, M, M]])
def test_target_is_the_two_half_step_law(toy, wrong_denoiser, make_mixed_denoiser, schedule, steps, k, state):
    """The expected target at every mask equals the law of its value after two teacher steps of half the
    size, given that it unmasks: what one student step must reproduce (a time-independent teacher that is
    not the true conditional, and a time-conditioned one)."""
    sched = get_schedule(schedule)
    x_t = torch.tensor([state])
    mixed = make_mixed_denoiser(toy[2], lambda t: t)
    for teacher in (wrong_denoiser, mixed):
        half = half_steps(sched, steps, torch.tensor([k]))
        expected = _expected_target(teacher, x_t, half)
        law = _two_step_value_law(teacher, x_t, half)
        assert torch.allclose(expected, law, atol=1e-12, rtol=0), (expected, law)
        if teacher is mixed and (schedule, k) == ("linear", 2):  # the test has power: the reference code's target
            # (c = 1) weights the second step by 1 - p1 = 1/2 instead of (1 - p1) p2 = 1/4 here. (With a teacher that
            # is the exact conditional of some law, E[mu(x_m)_i | i masked] = mu(x_t)_i and the weights do not matter.)
            paper = _expected_target(teacher, x_t, half_steps(sched, steps, torch.tensor([k])), paper=True)
            assert (paper - law).abs().max() > 1e-3


def test_half_steps_split_the_student_grid():
    """Student step k of T on [0, 1] is the teacher's steps 2k and 2k - 1 of 2T; the last one fills every mask."""
    sched = get_schedule("linear")
    half = half_steps(sched, 4, torch.tensor([4, 1]))
    assert half.t.tolist() == [1.0, 0.25] and half.m.tolist() == [0.875, 0.125] and half.s.tolist() == [0.75, 0.0]
    assert half.p1.tolist() == [0.125, 0.5] and half.p2[1] == 1.0 and half.c[1] == 1.0
    # both chains unmask a mask with the same probability: (alpha_s - alpha_t) / (1 - alpha_t)
    assert torch.allclose(half.p1 + (1 - half.p1) * half.p2, torch.tensor([0.25, 1.0], dtype=torch.float64))


def test_loss_is_zero_at_the_target_and_minimised_by_the_law(toy, make_mixed_denoiser):
    """A student that outputs a target gives zero loss on it; over the teacher's draws the expected loss
    is the KL to the two-step law plus a constant, so that law minimises it (forward KL)."""
    sched = get_schedule("linear")
    teacher = make_mixed_denoiser(toy[2], lambda t: t)
    x_t = torch.tensor([[1, M, M]])
    half = half_steps(sched, 4, torch.tensor([2]))
    draws = list(_first_steps(teacher, x_t, float(half.p1[0]), float(half.t[0])))
    law = _two_step_value_law(teacher, x_t, half)
    masked = x_t == M

    def student_with(log_probs):  # (N, V) at the masks of x_t
        def fn(x, t):
            out = torch.zeros(x.shape[0], L, V, dtype=torch.float64)
            out[masked.expand_as(x)] = log_probs.repeat(x.shape[0], 1)
            return out
        return FunctionDenoiser(fn, V, time_independent=True)

    x_m, _ = draws[5]
    target = sdtt_target(teacher, x_t, half, intermediate=x_m)
    assert float(sdtt_loss(student_with(target), x_t, target, half)) == pytest.approx(0.0, abs=1e-7)

    def expected_loss(q):  # (N, V) log-probabilities of the student
        return sum(w * kl_to_target(sdtt_target(teacher, x_t, half, intermediate=x), q.double()).mean() for x, w in draws)

    other = teacher(x_t, half.t)[masked]  # the teacher's one-step prediction
    gap = float(expected_loss(other) - expected_loss(law.log()))
    assert gap == pytest.approx(float(kl_to_target(law.log(), other).mean()), abs=1e-12) and gap > 1e-4
