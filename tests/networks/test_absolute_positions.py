"""The DiT's optional absolute position embeddings: off, the network is the one before (same parameters,
same outputs from the same seed); on, a token's logits depend on where it sits, and the key/value cache
path adds the same embeddings as the full pass."""
import torch

from maskdiff.networks.transformer import DiT


def build(seed, **kw):
    torch.manual_seed(seed)
    net = DiT(vocab_size=5, max_length=8, width=16, depth=2, heads=2, **kw)
    torch.nn.init.normal_(net.head.weight, std=0.3)  # the output layer starts at zero: give it values
    return net.eval()


def test_off_is_the_network_before_and_on_sees_absolute_positions():
    plain, off = build(0), build(0, absolute_positions=False)
    assert [k for k in plain.state_dict()] == [k for k in off.state_dict()]
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values()))
    on = build(0, absolute_positions=True)
    assert "position_embed.weight" in on.state_dict()
    same = torch.full((1, 8), 5)  # every position masked: only positions can tell them apart
    with torch.no_grad():
        rel, ab = plain(same), on(same)
    assert torch.allclose(rel[0, 0], rel[0, 3], atol=1e-6)  # rotary alone: identical rows look alike
    assert not torch.allclose(ab[0, 0], ab[0, 3], atol=1e-4)
    tokens = torch.randint(0, 6, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = on(tokens)
        cached, cache = on.cached_forward(tokens)
        window, _ = on.cached_forward(tokens[:, 3:6], start=3, cache=cache)
    assert torch.allclose(full, cached, atol=1e-5) and torch.allclose(window, full[:, 3:6], atol=1e-5)
