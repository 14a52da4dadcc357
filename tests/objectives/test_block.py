"""Block diffusion (BD3-LM, Arriola et al. 2025; docs/math.md#block): the attention mask, the two-stream
network against its key-value cache, the block NELBO on the exact toy of docs/math.md (V = 3, L = 4,
L' = 2, Dirichlet(0.3) weights: every sequence and mask pattern enumerated), the block sampler against
its exact law, and generation of any length with a stop at the end-of-text token.

Reference values come from enumeration (maskdiff.exact) or from the definitions written out here.
"""
import math

import pytest
import torch
from scipy.stats import chisquare

from maskdiff.denoiser import BlockDenoiser, FunctionDenoiser, carry_over
from maskdiff.errors import MaskdiffError
from maskdiff.exact import (TrueBlockDenoiser, block_chain_law, empirical_law, exact_block_nelbo, exact_nelbo,
                            toy_distribution, true_denoiser)
from maskdiff.loss import continuous_diffusion_term
from maskdiff.loss.block import block_diffusion_term, block_nelbo
from maskdiff.networks.transformer import DiT, block_diffusion_mask
from maskdiff.sampling.block import block_sample
from maskdiff.schedules import get_schedule

V, L = 3, 4


@pytest.fixture(scope="module")
def block_toy():
    """(sequences (81, 4), p (81,), q (81,)): the toy of docs/math.md with L = 4, and a second toy q whose
    exact conditionals serve as a denoiser that is not the truth for p."""
    seqs, p = toy_distribution(V, L, 0.3, seed=0)
    _, q = toy_distribution(V, L, 0.3, seed=1)
    return seqs, p, q


def _network(block_size, vocab=5, length=16, seed=0, dtype=torch.float32):
    """A two-stream DiT with weights moved off their zero initialisation (so every input matters)."""
    torch.manual_seed(seed)
    net = DiT(vocab, length, width=32, depth=2, heads=2, block_size=block_size).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


# ---------------------------------------------------------------- the attention mask and the network

def test_block_diffusion_mask_is_the_three_bd3lm_parts():
    """L = 4, L' = 2: rows/columns are [x_t^1..x_t^4, x_0^1..x_0^4]; written out from the definition."""
    expected = torch.tensor([
        # x_t keys     x_0 keys
        [1, 1, 0, 0,   0, 0, 0, 0],  # x_t block 1: its own block only
        [1, 1, 0, 0,   0, 0, 0, 0],
        [0, 0, 1, 1,   1, 1, 0, 0],  # x_t block 2: its own block and the clean block 1
        [0, 0, 1, 1,   1, 1, 0, 0],
        [0, 0, 0, 0,   1, 1, 0, 0],  # x_0 block 1: clean block 1
        [0, 0, 0, 0,   1, 1, 0, 0],
        [0, 0, 0, 0,   1, 1, 1, 1],  # x_0 block 2: clean blocks 1 and 2
        [0, 0, 0, 0,   1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(block_diffusion_mask(4, 2), expected)


def test_two_stream_outputs_see_only_their_block_and_the_clean_blocks_before():
    net = _network(4, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 5, (2, 16), generator=g)
    x_t = torch.where(torch.rand(2, 16, generator=g) < 0.5, 5, x0)
    base = net.two_stream(x_t, x0)
    for b in range(4):
        s, e = 4 * b, 4 * b + 4
        later = x0.clone()
        later[:, s:] = (later[:, s:] + 1) % 5  # clean tokens of this block and after: never seen
        other = x_t.clone()
        other[:, :s], other[:, e:] = 5, 5  # noisy tokens of the other blocks: never seen
        torch.testing.assert_close(net.two_stream(other, later)[:, s:e], base[:, s:e], rtol=0, atol=1e-12)
        if b:  # the clean blocks before are seen (the test has power)
            earlier = x0.clone()
            earlier[:, :s] = (earlier[:, :s] + 1) % 5
            assert (net.two_stream(x_t, earlier)[:, s:e] - base[:, s:e]).abs().max() > 1e-3


def test_key_value_cache_gives_the_two_stream_logits():
    """Block by block from the cache (and the cache built from several blocks at once) = one two-stream pass."""
    net = _network(4, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 5, (3, 16), generator=g)
    x_t = torch.where(torch.rand(3, 16, generator=g) < 0.5, 5, x0)
    full = net.two_stream(x_t, x0)
    cache = None
    for s in range(0, 16, 4):
        torch.testing.assert_close(net.cached_logits(cache, x_t[:, s : s + 4], s), full[:, s : s + 4], rtol=0, atol=1e-12)
        cache = net.extend_cache(cache, x0[:, s : s + 4], s)
    at_once = net.extend_cache(net.extend_cache(None, x0[:, :4], 0), x0[:, 4:12], 4)  # blocks 2 and 3 in one call
    torch.testing.assert_close(net.cached_logits(at_once, x_t[:, 12:], 12), full[:, 12:], rtol=0, atol=1e-12)


def test_a_network_without_block_size_has_no_two_stream_mode():
    with pytest.raises(ValueError, match="block_size"):
        DiT(5, 16, width=32, depth=1, heads=2).two_stream(torch.zeros(1, 16, dtype=torch.long), torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="neither time"):
        DiT(5, 16, width=32, depth=1, heads=2, block_size=4, time_conditioned=True)


# ---------------------------------------------------------------- the block NELBO, exactly

@pytest.mark.parametrize("block_size", [1, 2, 4])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_block_nelbo_of_the_true_conditionals_is_minus_log_p(block_toy, block_size, schedule):
    seqs, p, _ = block_toy
    d = TrueBlockDenoiser(seqs, p, V, block_size)
    torch.testing.assert_close(exact_block_nelbo(d, seqs, get_schedule(schedule)), -p.log(), rtol=1e-6, atol=1e-6)


class Sharpened:
    """A block denoiser that is no model's true conditional: the exact conditionals of the toy raised to
    the power 2 and renormalised (carry-over kept)."""

    def __init__(self, exact):
        self.exact, self.vocab_size, self.block_size, self.time_independent = exact, V, exact.block_size, True

    def __call__(self, x_t, x0):
        return carry_over(torch.log_softmax(2.0 * self.exact(x_t, x0), -1), x_t, V)


def test_block_size_one_is_the_autoregressive_nll_and_block_size_l_is_masked_diffusion(block_toy):
    """For a denoiser that is not a true conditional: L' = 1 gives sum_n -log mu(x^n | x^{<n}) (eq. 17,
    each position masked alone after the clean prefix), L' = L the masked-diffusion NELBO of the same
    function (eq. 3); L' = 2 is neither (so the test has power)."""
    seqs, p, _ = block_toy
    lin = get_schedule("linear")
    one = Sharpened(TrueBlockDenoiser(seqs, p, V, 1))
    ar = torch.zeros(81, dtype=torch.float64)
    for n in range(L):
        x_t = seqs.clone()
        x_t[:, n] = V
        ar -= one(x_t, seqs)[torch.arange(81), n, seqs[:, n]]
    torch.testing.assert_close(exact_block_nelbo(one, seqs, lin), ar, rtol=1e-6, atol=1e-6)
    whole = Sharpened(TrueBlockDenoiser(seqs, p, V, L))
    masked = exact_nelbo(FunctionDenoiser(lambda x_t, t: whole(x_t, x_t.clamp(max=V - 1)), V, True), seqs, lin)
    torch.testing.assert_close(exact_block_nelbo(whole, seqs, lin), masked, rtol=1e-6, atol=1e-6)
    middle = exact_block_nelbo(Sharpened(TrueBlockDenoiser(seqs, p, V, 2)), seqs, lin)
    assert (middle - masked).abs().max() > 1e-2 and (middle - ar).abs().max() > 1e-2
    assert (middle + p.log()).abs().max() > 1e-2  # and none of them is -log p


@pytest.mark.parametrize("time_sampler", ["uniform", "importance"])
def test_block_loss_with_one_block_is_the_masked_loss_draw_for_draw(block_toy, time_sampler):
    """L' = L: one block, whose time is the sequence's t: the same masks, weights and value as
    continuous_diffusion_term for every draw, with either time sampler."""
    seqs, _, q = block_toy
    d = TrueBlockDenoiser(seqs, q, V, L)
    g = torch.Generator().manual_seed(0)
    t = 1e-3 + (1 - 1e-3) * torch.rand(81, generator=g, dtype=torch.float64)
    noise = torch.rand((81, L), generator=g, dtype=torch.float64)
    sched = get_schedule("cosine")
    got = block_diffusion_term(d, seqs, t, sched, noise=noise, time_sampler=time_sampler)
    ref = continuous_diffusion_term(FunctionDenoiser(lambda x_t, t: d(x_t, seqs), V, True), seqs, t, sched, noise=noise,
                                    time_sampler=time_sampler)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    if time_sampler == "importance":  # and the sampler changes the draws (this test would not notice a no-op otherwise)
        assert not torch.allclose(got, block_diffusion_term(d, seqs, t, sched, noise=noise))


def _mc_mean(estimate, seqs, n, seed):
    """Mean and standard error over n independent draws of ``estimate(x0, t, generator)`` per sequence,
    all draws in one batch of n copies."""
    g = torch.Generator().manual_seed(seed)
    x0 = seqs.repeat(n, 1)
    t = 1e-3 + (1 - 1e-3) * torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    draws = estimate(x0, t, g).double().view(n, -1)  # (n, B)
    return draws.mean(0), draws.std(0) / math.sqrt(n)


def test_sampled_block_nelbo_is_unbiased(block_toy):
    """The one-pass estimate (per-block t, reconstruction at t_min) averages to the enumerated NELBO of a
    denoiser that is not the truth."""
    seqs, p, _ = block_toy
    d = Sharpened(TrueBlockDenoiser(seqs, p, V, 2))
    sched, t_min = get_schedule("linear"), 1e-3
    exact = exact_block_nelbo(d, seqs, sched, t_min=t_min)
    mean, se = _mc_mean(lambda x0, t, g: block_nelbo(d, x0, t, sched, g, t_min=t_min).total, seqs, 1500, 0)
    assert ((mean - exact).abs() <= 4.5 * se).all(), float(((mean - exact).abs() / se).max())


@pytest.mark.parametrize("time_sampler", ["uniform", "importance"])
def test_clipped_mask_rates_estimate_the_integral_over_their_interval(block_toy, time_sampler):
    """mask_rates (lo, hi): the masked fraction uniform on [lo, hi], weighted (hi - lo)/a (or its square
    root uniform, weighted 2 (sqrt(hi) - sqrt(lo)) / sqrt(a)), estimates the diffusion integral over that
    interval only (linear schedule: a = t), not the NELBO."""
    seqs, p, _ = block_toy
    d = Sharpened(TrueBlockDenoiser(seqs, p, V, 2))
    lin = get_schedule("linear")
    lo, hi = 0.3, 0.8
    exact = exact_block_nelbo(d, seqs, lin, t_min=lo, t_max=hi, boundary_terms=False)
    mean, se = _mc_mean(lambda x0, t, g: block_diffusion_term(d, x0, t, lin, g, mask_rates=(lo, hi), time_sampler=time_sampler),
                        seqs, 1500, 1)
    assert ((mean - exact).abs() <= 4.5 * se).all()
    assert (exact < exact_block_nelbo(d, seqs, lin) - 0.1).all()  # it leaves part of the bound out
    with pytest.raises(MaskdiffError, match="0 <= low < high <= 1"):
        block_diffusion_term(d, seqs, torch.full((81,), 0.5), lin, mask_rates=(0.8, 0.3))


def test_importance_sampled_block_loss_is_unbiased_with_lower_variance(block_toy):
    """Each block's time importance-sampled: the training term still averages to the enumerated diffusion
    integral over [t_min, 1] (a denoiser that is not the truth, several blocks), with a smaller spread
    than uniform times."""
    seqs, p, _ = block_toy
    d = Sharpened(TrueBlockDenoiser(seqs, p, V, 2))
    sched, t_min = get_schedule("cosine"), 1e-3
    exact = exact_block_nelbo(d, seqs, sched, t_min=t_min, boundary_terms=False)
    spread = {}
    for sampler in ("importance", "uniform"):
        mean, se = _mc_mean(lambda x0, t, g: block_diffusion_term(d, x0, t, sched, g, t_min=t_min, time_sampler=sampler),
                            seqs, 1500, 2)
        assert ((mean - exact).abs() <= 4.5 * se).all(), (sampler, float(((mean - exact).abs() / se).max()))
        spread[sampler] = se.mean()
    assert spread["importance"] < spread["uniform"]
    with pytest.raises(MaskdiffError, match="choose one of: uniform, importance"):
        block_diffusion_term(d, seqs, torch.full((81,), 0.5), sched, time_sampler="sqrt")


# ---------------------------------------------------------------- the block sampler

def _pvalue(tokens, law, min_expected=5.0):
    """Chi-square p-value of sampled sequences against ``law``, the smallest cells pooled."""
    counts = empirical_law(tokens, V).double()
    assert counts[law == 0].sum() == 0
    expected = law * counts.sum()
    order = torch.argsort(expected)
    pooled = int((torch.cumsum(expected[order], 0) < min_expected).sum()) + 1
    small, big = order[:pooled], order[pooled:]
    obs = torch.cat([counts[big], counts[small].sum()[None]])
    exp = torch.cat([expected[big], expected[small].sum()[None]])
    return chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue


@pytest.mark.slow
def test_block_sampler_follows_its_exact_law_and_reaches_p(block_toy):
    """True conditionals, L' = 2: with T = 3 steps per block the samples follow the enumerated law of the
    block chain, and not p (the within-block factorisation error is visible); the law approaches p as T
    grows, and with T = 1000 the samples follow p."""
    seqs, p, _ = block_toy
    d = TrueBlockDenoiser(seqs, p, V, 2)
    lin = get_schedule("linear")
    law = block_chain_law(d, lin, L, 3)
    assert abs(float(law.sum()) - 1) < 1e-12
    few = block_sample(d, lin, 20000, L, steps=3, generator=torch.Generator().manual_seed(0))
    assert _pvalue(few.tokens, law) > 1e-3
    assert _pvalue(few.tokens, p) < 1e-6
    tv = {T: 0.5 * float((block_chain_law(d, lin, L, T) - p).abs().sum()) for T in (3, 100)}
    assert tv[3] > 0.1 and tv[100] < 0.01, tv
    many = block_sample(d, lin, 4000, L, steps=1000, generator=torch.Generator().manual_seed(1))
    assert _pvalue(many.tokens, p) > 1e-3
    assert int(many.nfe.max()) <= 4  # per-sample reuse of mu: at most L' calls per block


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_samples_with_and_without_the_cache_are_identical(dtype):
    """Any length (beyond the window of 16, so the context slides), a prompt that ends inside a block,
    an end-of-text stop: the key-value cache changes how mu is computed, not the draws."""
    den = BlockDenoiser(_network(4, dtype=dtype), 5, 4, max_length=16)
    lin = get_schedule("linear")
    prompt = torch.tensor([1, 2, 3, 4, 0])
    for eos in (None, 2):
        kw = dict(steps=6, prompt=prompt, window=16, eos_id=eos)
        a = block_sample(den, lin, 6, 37, generator=torch.Generator().manual_seed(3), **kw)
        b = block_sample(den, lin, 6, 37, generator=torch.Generator().manual_seed(3), kv_cache=False, **kw)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.nfe, b.nfe)
        assert torch.equal(a.extra["lengths"], b.extra["lengths"])
        assert torch.equal(a.tokens[:, :5], prompt.expand(6, 5))
        if eos is None:
            assert a.tokens.shape == (6, 37)  # the window of 16 slid twice
    assert int(a.extra["cache_calls"].max()) > 0 and int(b.extra["cache_calls"].max()) == 0


def test_generation_of_any_length_stops_at_the_end_of_text_token(block_toy):
    """Token 2 of the toy read as end-of-text: each sample ends at its first 2 after the prompt, the
    rest of its row holds 2, and its length counts the token; a sample without one runs to the end."""
    seqs, p, _ = block_toy
    d = TrueBlockDenoiser(seqs, p, V, 2)
    lin = get_schedule("linear")
    out = block_sample(d, lin, 300, 30, steps=4, generator=torch.Generator().manual_seed(4), window=4, context=2, eos_id=2)
    lengths = out.extra["lengths"]
    assert out.tokens.shape == (300, int(lengths.max()))
    for row, n in zip(out.tokens, lengths.tolist()):
        assert not bool((row[: n - 1] == 2).any())
        assert n == 30 or (row[n - 1 :] == 2).all()
    assert 1 < float(lengths.float().mean()) < 30 and int(lengths.max()) > 4  # beyond the window of 4
    without = block_sample(d, lin, 5, 30, steps=8, generator=torch.Generator().manual_seed(4), window=4, context=2)
    assert without.tokens.shape == (5, 30) and bool((without.tokens < V).all())


def test_block_sampler_rejects_a_bad_window():
    d = TrueBlockDenoiser(*toy_distribution(V, L, 0.3, seed=0), V, 2)
    with pytest.raises(MaskdiffError, match="context must be a multiple"):
        block_sample(d, get_schedule("linear"), 2, 10, steps=4, window=4, context=3)
    with pytest.raises(MaskdiffError, match="shorter than one block"):
        block_sample(d, get_schedule("linear"), 2, 10, steps=4, window=1)


# ---------------------------------------------------------------- the command line

@pytest.mark.slow
def test_cli_block_trains_evaluates_and_samples_any_length_with_and_without_the_cache(tmp_path, plays):
    from helpers import MICRO_FLAGS, assert_clean_error, run_cli

    run = tmp_path / "bd3"
    proc = run_cli("train", "--run-dir", run, "--steps", "3", "--objective", "block", "--block-size", "8",
                   "--mask-rate-min", "0.2", "--mask-rate-max", "0.9", "--corpus", plays, *MICRO_FLAGS)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("eval", run, "--limit", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "BPC <= " in proc.stdout and "block NELBO (L' = 8)" in proc.stdout
    outs = []
    for extra in ([], ["--no-kv-cache"]):
        proc = run_cli("sample", run, "--num", "2", "--length", "80", "--steps", "4", "--prompt", "the ", "--no-progress",
                       "--out", tmp_path / f"s{len(extra)}.txt", *extra)
        assert proc.returncode == 0, proc.stderr
        assert "block sampler, 4 steps" in proc.stdout
        outs.append((tmp_path / f"s{len(extra)}.txt").read_text())
    texts = outs[0].split("\n\n")
    assert outs[0] == outs[1] and len(texts) == 2 and all(len(t.strip("\n")) == 80 and t.startswith("the ") for t in texts)
    masked = tmp_path / "md"
    assert run_cli("train", "--run-dir", masked, "--steps", "1", "--corpus", plays, *MICRO_FLAGS).returncode == 0
    assert_clean_error(run_cli("sample", masked, "--num", "1", "--no-kv-cache", "--no-progress"), "block diffusion models")
