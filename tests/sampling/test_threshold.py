"""Parallel decoding by confidence threshold and Fast-dLLM's key/value caches (Wu et al. 2025;
sampling/threshold.py). Checked step by step against the exact conditional mu of the toy of docs/math.md
(V = 3, L = 3, Dirichlet(0.3)), and the caches against the full network call on a real transformer."""
import pytest
import torch

from maskdiff import MaskdiffError, get_schedule
from maskdiff.denoiser import SUBSDenoiser
from maskdiff.exact import toy_distribution, true_denoiser
from maskdiff.networks.transformer import DiT
from maskdiff.sampling import SAMPLERS, threshold_sample

V, L = 3, 3
LIN = get_schedule("linear")


def _replay(d, states, threshold, block, length):
    """Check every recorded step against the rule: in the current block, exactly the masked positions whose
    argmax-mu confidence exceeds the threshold were filled with their argmax, or else the single most
    confident one. Returns the number of positions filled at each step, per row (list of (B,))."""
    filled = []
    prev = torch.full_like(states[0], V)
    for x in states:
        mu = d(prev, torch.full((prev.shape[0],), 0.5, dtype=torch.float64)).exp()
        conf, value = mu.max(-1)
        changed = x != prev
        for r in range(x.shape[0]):
            masked = (prev[r] == V).nonzero().squeeze(-1)
            if not len(masked) or not bool(changed[r].any()):
                continue
            lo = (int(masked[0]) // block) * block
            hi = min(lo + block, length)
            cand = [n for n in range(lo, hi) if prev[r, n] == V]
            want = {n for n in cand if conf[r, n] > threshold} or {max(cand, key=lambda n: float(conf[r, n]))}
            assert set(changed[r].nonzero().squeeze(-1).tolist()) == want
            assert all(int(x[r, n]) == int(value[r, n]) for n in want)
        filled.append(changed.sum(-1))
        prev = x
    return filled


@pytest.mark.parametrize("threshold,block", [(0.5, None), (0.7, 2), (0.3, 1)])
def test_each_call_fills_the_confident_positions(toy, threshold, block):
    _, _, d = toy
    states = []
    out = threshold_sample(d, LIN, (300, L), threshold=threshold, block_size=block, callback=lambda x: states.append(x.clone()))
    assert bool((out.tokens < V).all())
    _replay(d, states, threshold, block or L, L)
    before = [torch.full_like(states[0], V)] + states[:-1]
    assert int(out.nfe.sum()) == sum(int((a != b).any(-1).sum()) for a, b in zip(before, states))  # a call per row that changed


def test_threshold_one_fills_one_position_per_call(toy):
    """tau = 1: nothing exceeds it, so each call fills the single most confident position: L calls per sample."""
    _, _, d = toy
    states = []
    out = threshold_sample(d, LIN, (64, L), threshold=1.0, callback=lambda x: states.append(x.clone()))
    filled = _replay(d, states, 1.0, L, L)
    assert all(bool((f == 1).all()) for f in filled) and len(filled) == L
    assert bool((out.nfe == L).all())


def test_threshold_zero_fills_a_block_per_call(toy):
    """tau = 0: every masked position of the block in one call: one call per block, each value argmax mu."""
    _, _, d = toy
    out = threshold_sample(d, LIN, (8, L), threshold=0.0)
    assert bool((out.nfe == 1).all())
    mu = d(torch.full((1, L), V), torch.zeros(1))[0]
    assert torch.equal(out.tokens, mu.argmax(-1).expand(8, L))
    blocks = threshold_sample(d, LIN, (8, L), threshold=0.0, block_size=2)
    assert bool((blocks.nfe == 2).all())
    assert torch.equal(blocks.tokens[:, :2], mu[:2].argmax(-1).expand(8, 2))


def test_sampled_candidates_and_prompts(toy):
    """choose='sample' draws values from mu; positions fixed by x_init are never changed and cost no call."""
    _, _, d = toy
    x_init = torch.full((400, L), V)
    x_init[:, 0] = 1
    x_init[:100] = torch.tensor([1, 0, 2])
    out = threshold_sample(d, LIN, (400, L), threshold=0.6, choose="sample", x_init=x_init,
                           generator=torch.Generator().manual_seed(0))
    assert bool((out.tokens[:, 0] == 1).all()) and bool((out.nfe[:100] == 0).all())
    assert torch.equal(out.tokens[:100], x_init[:100])
    assert len({tuple(r) for r in out.tokens[100:].tolist()}) > 1  # draws, not argmax


def _network(time_conditioned=False):
    torch.manual_seed(0)
    net = DiT(7, 16, width=32, depth=2, heads=2, cond_dim=16, time_conditioned=time_conditioned)
    for m in [net.head] + ([b.adaln for b in net.blocks] + [net.adaln_out] if time_conditioned else []):
        torch.nn.init.normal_(m.weight, std=0.3)  # the zero init would make mu uniform
    return SUBSDenoiser(net.eval(), 7, time_conditioned=time_conditioned, max_length=16)


@pytest.mark.parametrize("time_conditioned", [False, True])
def test_cache_window_equals_the_full_call_on_the_same_state(time_conditioned):
    """With keys and values cached from the same state, a window's log mu is the full call's (the cache
    itself is exact; only staleness makes Fast-dLLM approximate)."""
    d = _network(time_conditioned)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8, (5, 16), generator=g)  # 7 is the mask
    t = torch.rand(5, generator=g)
    with torch.no_grad():
        full = d(x, t)
        pre, cache = d.prefill_log_probs(x, t)
        assert torch.allclose(pre, full, atol=1e-6)
        for lo, hi in [(0, 4), (4, 8), (8, 16), (4, 16)]:
            assert torch.allclose(d.window_log_probs(x[:, lo:hi], t, lo, cache), full[:, lo:hi], atol=1e-5)
        sub = torch.tensor([3, 0])
        assert torch.allclose(d.window_log_probs(x[sub, 4:8], t[sub], 4, cache.rows(sub)), full[sub, 4:8], atol=1e-5)
        # after the rest of the sequence changed, a stale cache no longer gives the full call: the approximation is real
        y = x.clone()
        y[:, :4] = torch.randint(0, 7, (5, 4), generator=g)
        y[:, 4:8] = 7
        assert not torch.allclose(d.window_log_probs(y[:, 4:8], t, 4, cache), d(y, t)[:, 4:8], atol=1e-3)


def test_caches_count_calls_and_positions():
    """Same calls per block, fewer positions computed: dual < prefix < none; tau = 0 makes each block one full
    call, so every cache gives the uncached samples; tau = 1 still costs one call per position."""
    d = _network()
    runs = {c: threshold_sample(d, LIN, (6, 16), threshold=0.0, block_size=4, cache=c) for c in ("none", "prefix", "dual")}
    for c, out in runs.items():
        assert torch.equal(out.tokens, runs["none"].tokens) and bool((out.nfe == 4).all()), c
        assert torch.allclose(out.extra["positions"], torch.full((6,), 4.0, dtype=torch.float64))
    runs = {c: threshold_sample(d, LIN, (6, 16), threshold=1.0, block_size=4, cache=c) for c in ("none", "prefix", "dual")}
    assert all(bool((out.nfe == 16).all()) and bool((out.tokens < 7).all()) for out in runs.values())
    pos = {c: float(out.extra["positions"].mean()) for c, out in runs.items()}
    assert pos["none"] == 16.0 and pos["dual"] < pos["prefix"] < pos["none"]
    assert pos["dual"] == pytest.approx(4 * (1 + 3 * 4 / 16))  # per block: one full call, then 3 block-only calls


def test_registered_and_bad_input(toy):
    _, _, d = toy
    assert SAMPLERS["threshold"] is threshold_sample
    with pytest.raises(MaskdiffError, match=r"\[0, 1\]"):
        threshold_sample(d, LIN, (2, L), threshold=1.5)
    with pytest.raises(MaskdiffError, match="none, prefix, dual"):
        threshold_sample(d, LIN, (2, L), cache="both")
    with pytest.raises(MaskdiffError, match="argmax, sample"):
        threshold_sample(d, LIN, (2, L), choose="top")
    with pytest.raises(MaskdiffError, match="key/value cache"):
        threshold_sample(d, LIN, (2, L), cache="dual")
    with pytest.raises(MaskdiffError, match="block_size must be in 1..3"):
        threshold_sample(d, LIN, (2, L), block_size=4)
