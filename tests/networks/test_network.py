"""The DiT network and SUBS wrapper: interface, carry-over, row independence, time conditioning."""
import pytest
import torch

from maskdiff.denoiser import SUBSDenoiser
from maskdiff.networks.transformer import DiT


def _denoiser(time_conditioned):
    torch.manual_seed(0)
    net = DiT(5, 16, width=32, depth=2, heads=2, cond_dim=16, time_conditioned=time_conditioned)
    for p in net.parameters():  # leave the zero-initialised state so outputs depend on inputs
        torch.nn.init.normal_(p, std=0.2)
    return SUBSDenoiser(net, 5, time_conditioned=time_conditioned, max_length=16)


def test_subs_output_and_carry_over():
    d = _denoiser(False)
    x = torch.tensor([[0, 5, 2, 5, 4, 5, 1, 3]])
    log_mu = d(x, torch.rand(1))
    assert log_mu.shape == (1, 8, 5)
    assert torch.allclose(log_mu.exp().sum(-1), torch.ones(1, 8))
    unmasked = x[0] != 5
    assert torch.all(log_mu[0, unmasked].argmax(-1) == x[0, unmasked])
    assert torch.all(log_mu[0, unmasked].exp().max(-1).values == 1.0)
    assert d.time_independent


def test_rows_are_independent():
    d = _denoiser(True)
    x = torch.randint(0, 6, (4, 12))
    t = torch.rand(4)
    full = d(x, t)
    for b in range(4):
        assert torch.allclose(full[b], d(x[b : b + 1], t[b : b + 1])[0], atol=1e-5)


def test_time_conditioning_switch():
    x = torch.full((1, 8), 5)
    off = _denoiser(False)
    assert torch.equal(off(x, torch.tensor([0.1])), off(x, torch.tensor([0.9])))
    on = _denoiser(True)
    assert not on.time_independent
    assert not torch.allclose(on(x, torch.tensor([0.1])), on(x, torch.tensor([0.9])))


def test_zero_init_gives_uniform_mu():
    net = DiT(7, 8, width=16, depth=1, heads=2)
    log_mu = SUBSDenoiser(net, 7)(torch.full((2, 8), 7), torch.rand(2))
    assert torch.allclose(log_mu, torch.full_like(log_mu, -torch.log(torch.tensor(7.0))))


def test_local_mixing_reaches_only_its_kernel():
    """The depthwise mixing at position n reads positions n - k//2 .. n + k//2 (n - k + 1 .. n when
    causal) and nothing else; padding (keep False) contributes nothing."""
    from maskdiff.networks.transformer import LocalMixing

    torch.manual_seed(0)
    L, W = 12, 6
    for causal, reach in ((False, range(-2, 3)), (True, range(-4, 1))):
        mix = LocalMixing(W, 5, causal)
        x = torch.randn(1, L, W, requires_grad=True)
        n = 6
        mix(x)[0, n].sum().backward()
        touched = {int(i) - n for i in x.grad[0].abs().sum(-1).nonzero().flatten()}
        assert touched == set(reach), (causal, touched)
    mix = LocalMixing(W, 3, False)
    x = torch.randn(1, L, W)
    keep = torch.ones(1, L, dtype=torch.bool)
    keep[0, 8:] = False
    y = x.clone()
    y[0, 8:] = 100.0  # whatever sits in the padding
    assert torch.equal(mix(x, keep)[0, :8], mix(y, keep)[0, :8])
    assert torch.equal(mix(x[:, :8])[0], mix(x, keep)[0, :8])


def test_local_mixing_network_padding_and_causality():
    torch.manual_seed(0)
    x = torch.randint(0, 12, (2, 16))
    net = DiT(11, 16, width=32, depth=2, heads=2, local_mixing=3)
    torch.nn.init.normal_(net.head.weight)  # the output layer starts at zero: make outputs differ
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[0, 10:] = False
    padded = x.clone()
    padded[0, 10:] = 5
    assert torch.allclose(net(padded, valid=valid)[0, :10], net(x[:1, :10])[0], atol=1e-5)
    ar = DiT(11, 16, width=32, depth=2, heads=2, local_mixing=3, causal=True)
    torch.nn.init.normal_(ar.head.weight)
    changed = x.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 11
    assert torch.equal(ar(changed)[:, :8], ar(x)[:, :8])  # no position reads a later token
    assert not torch.equal(ar(changed)[:, 8:], ar(x)[:, 8:])


def test_local_mixing_kernel_is_checked():
    import pytest

    from maskdiff.errors import MaskdiffError
    from maskdiff.presets import tiny

    with pytest.raises(ValueError, match="odd"):
        DiT(11, 16, width=32, depth=1, heads=2, local_mixing=4)
    cfg = tiny()
    cfg.model.local_mixing = 4
    with pytest.raises(MaskdiffError, match="odd kernel size"):
        cfg.validate()


@pytest.mark.parametrize("kwargs", [{}, {"time_conditioned": True}, {"time_conditioned": True, "num_classes": 3},
                                    {"causal": True}, {"local_mixing": 3}])
def test_positions_compute_the_same_logits_and_gradients(kwargs):
    """With ``positions`` the last block and the output layer run at those positions only: the logits must
    be those of the full call there, and so must the gradients of any loss of them."""
    torch.manual_seed(0)
    net = DiT(11, 12, width=32, depth=3, heads=2, cond_dim=16, **kwargs)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, t = torch.randint(0, 12, (4, 12)), torch.rand(4)
    positions = torch.rand(4, 12) < 0.5
    positions[2] = False  # a row with no position asked for
    valid = torch.ones(4, 12, dtype=torch.bool)
    valid[1, 9:] = False  # and a padded one
    extra = {"labels": torch.tensor([0, 1, 2, 3])} if kwargs.get("num_classes") else {}
    params = list(net.parameters())

    def run(subset: bool):
        logits = net(x, t, valid=valid, positions=positions, **extra) if subset else net(x, t, valid=valid, **extra)[positions]
        weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)
        grads = torch.autograd.grad((logits * weights).sum(), params, allow_unused=True)
        return logits.detach(), grads

    (full, g_full), (part, g_part) = run(False), run(True)
    assert part.shape == (int(positions.sum()), 11)
    torch.testing.assert_close(part, full, rtol=0, atol=1e-6)
    for a, b in zip(g_full, g_part):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_depth_is_checked():
    with pytest.raises(ValueError, match="depth must be at least 1"):
        DiT(5, 8, width=16, depth=0, heads=2)
