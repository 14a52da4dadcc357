"""The DiT network and SUBS wrapper: interface, carry-over, row independence, time conditioning."""
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
