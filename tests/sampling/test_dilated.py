"""The dilated sampler (sampling/dilated.py) against exact laws on enumerable toys: with one position per step
it draws from p itself (any order factorizes p); with several, from the law of its fixed groups, which
maskdiff.exact.order_law enumerates (no Monte Carlo), and not from p or from the ancestral chain's law."""
import itertools

import pytest
import torch

from maskdiff import get_schedule
from maskdiff.denoiser import FunctionDenoiser
from maskdiff.exact import chain_law, order_law, toy_distribution, true_denoiser
from maskdiff.sampling import dilated_sample
from maskdiff.sampling.dilated import dilated_order, dilated_ranks
from maskdiff.sampling.registry import get_entry

from tests.sampling.test_samplers_exact import P_MIN, _pvalue

B = 20000


@pytest.fixture(scope="module")
def toy4():
    """V = 3, L = 4 (81 sequences, Dirichlet(0.3) weights) and its exact denoiser."""
    seqs, p = toy_distribution(3, 4, 0.3, seed=0)
    return p, true_denoiser(seqs, p, 3)


def test_dilated_order_is_the_bit_reversal_order():
    assert dilated_order(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert dilated_order(6).tolist() == [0, 4, 2, 1, 5, 3]  # 8's order without 6 and 7
    assert dilated_order(1).tolist() == [0] and dilated_order(2).tolist() == [0, 1]
    for length in range(1, 70):
        assert sorted(dilated_order(length).tolist()) == list(range(length))
    # a rotation by 3 visits (order + 3) mod 8
    rank = dilated_ranks(8, torch.tensor([3]))[0]
    assert rank.argsort().tolist() == [(p + 3) % 8 for p in dilated_order(8).tolist()]


def test_any_order_with_one_position_per_step_is_p(toy):
    _, p, d = toy
    for order in itertools.permutations(range(3)):
        assert torch.allclose(order_law(d, 3, [[i] for i in order]), p, atol=1e-12, rtol=0)


def _rotations(length, groups):
    """The groups of every rotation of the order, groups given for offset 0."""
    return [[[(i + o) % length for i in g] for g in groups] for o in range(length)]


def test_dilated_two_steps_follow_their_exact_law(toy4):
    """L = 4, T = 2 on the uniform grid: offset o fills {o, o + 2} and then {o + 1, o + 3}."""
    p, d = toy4
    law = sum(order_law(d, 4, g) for g in _rotations(4, [[0, 2], [1, 3]])) / 4
    out = dilated_sample(d, get_schedule("linear"), (B, 4), steps=2, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (B, 4) and bool((out.nfe == 2).all())
    assert _pvalue(out.tokens, law) > P_MIN
    # the test has power: the two-step law is far from p and from the ancestral chain's two-step law
    assert _pvalue(out.tokens, p) < 1e-6
    assert _pvalue(out.tokens, chain_law(d, get_schedule("linear"), 4, 2)) < 1e-6


def test_dilated_without_rotation_and_one_position_per_step(toy4):
    p, d = toy4
    fixed = dilated_sample(d, get_schedule("linear"), (B, 4), steps=2, rotate=False, generator=torch.Generator().manual_seed(1))
    assert _pvalue(fixed.tokens, order_law(d, 4, [[0, 2], [1, 3]])) > P_MIN
    exact = dilated_sample(d, get_schedule("linear"), (B, 4), steps=4, generator=torch.Generator().manual_seed(2))
    assert bool((exact.nfe == 4).all())
    assert _pvalue(exact.tokens, p) > P_MIN


def _uniform_denoiser(vocab=5):
    return FunctionDenoiser(lambda x, t: torch.log_softmax(torch.zeros(x.shape + (vocab,)), -1), vocab, True)


def test_steps_fill_the_chains_counts_spread_apart():
    """L = 128, T = 32: four positions per step; the first step's four lie 32 apart, every later one lies
    between positions filled before it (no step fills two neighbours while a wider gap is open)."""
    states = []
    d = _uniform_denoiser()
    out = dilated_sample(d, get_schedule("linear"), (3, 128), steps=32, generator=torch.Generator().manual_seed(0),
                         callback=lambda x: states.append(x.clone()))
    assert len(states) == 32 and bool((out.nfe == 32).all()) and not bool((out.tokens == 5).any())
    filled = [(s != 5) for s in states]
    for k, now in enumerate(filled):
        before = filled[k - 1] if k else torch.zeros_like(now)
        new = now & ~before
        assert bool((new.sum(-1) == 4).all())
        for row in range(3):
            pos = sorted(new[row].nonzero().flatten().tolist())
            gaps = [(b - a) % 128 for a, b in zip(pos, pos[1:] + pos[:1])]
            assert gaps == [32, 32, 32, 32]


def test_x_init_positions_stay_and_the_rest_are_filled():
    d = _uniform_denoiser()
    x_init = torch.full((4, 16), 5)
    x_init[:, :5] = torch.tensor([0, 1, 2, 3, 4])
    for schedule, grid in (("linear", "uniform"), ("cosine", "cosine")):
        out = dilated_sample(d, get_schedule(schedule), (4, 16), steps=3, x_init=x_init, grid=grid,
                             generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.tokens[:, :5], x_init[:, :5]) and not bool((out.tokens == 5).any())
        # 11 masks in 3 steps: 4, 4, 3 on the uniform grid; a step whose rounded count is 0 makes no call
        assert bool((out.nfe == 3).all()) if grid == "uniform" else bool((out.nfe <= 3).all())


def test_registry_entry_and_reproducibility():
    entry = get_entry("dilated")
    assert entry.option("rotate").default is True and entry.option("rotate").cli_flag == "--no-rotate"
    assert entry.option("grid") is not None and not entry.time_independent
    d = _uniform_denoiser()
    a = dilated_sample(d, get_schedule("linear"), (2, 10), steps=4, generator=torch.Generator().manual_seed(7))
    b = dilated_sample(d, get_schedule("linear"), (2, 10), steps=4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.tokens, b.tokens)
