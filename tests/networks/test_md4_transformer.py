"""MD4's transformer (backbone md4-transformer): shapes, its adaLN-zero start, its sizes and its initial scales.
The logits against MD4's architecture are checked through the converter (tests/pretrained/test_convert_md4.py)."""
import math

import pytest
import torch

from maskdiff.config import DataConfig, ModelConfig, RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.networks.md4_transformer import MD4Transformer, mlp_hidden
from maskdiff.objectives import build_objective

V, L = 27, 12


def test_shapes_and_the_masked_positions_only():
    torch.manual_seed(0)
    net = MD4Transformer(V, L, width=32, depth=2, heads=4)
    tokens = torch.randint(0, V + 1, (3, L))
    assert net(tokens, torch.rand(3)).shape == (3, L, V)  # no mask column
    positions = tokens == V
    assert net(tokens, torch.rand(3), positions=positions).shape == (int(positions.sum()), V)
    plain = MD4Transformer(V, L, width=32, depth=2, heads=4, time_conditioned=False)
    assert plain(tokens).shape == (3, L, V)
    with pytest.raises(ValueError, match="pass t"):
        net(tokens)


def test_adaln_zero_start():
    """At initialisation every logit is 0 (zero output layer). With a non-zero output layer and the
    modulations still at zero, every block is the identity: a position's logits depend on its own token only."""
    torch.manual_seed(0)
    net = MD4Transformer(V, L, width=32, depth=3, heads=4)
    tokens = torch.randint(0, V + 1, (2, L))
    assert torch.count_nonzero(net(tokens, torch.rand(2))) == 0
    torch.nn.init.normal_(net.head.weight)
    other = tokens.clone()
    other[:, 1:] = (other[:, 1:] + 1) % (V + 1)  # every position but the first changed
    a, b = net(tokens, torch.tensor([0.1, 0.9])), net(other, torch.tensor([0.5, 0.3]))
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert (a[:, 1:] - b[:, 1:]).abs().max() > 1e-3
    torch.nn.init.normal_(net.blocks[0].modulation.weight)  # open the gates: now the other positions matter
    assert (net(tokens, torch.tensor([0.1, 0.9]))[:, 0] - net(other, torch.tensor([0.1, 0.9]))[:, 0]).abs().max() > 1e-3


def test_md4_sizes_and_depth_scaled_init():
    assert mlp_hidden(256) == 704 and mlp_hidden(768) == 2048  # MD4's FeedForward: 2/3 of 4W, a multiple of 32
    torch.manual_seed(0)
    net = MD4Transformer(V, L, width=256, depth=8, heads=4)
    assert net.embed.weight.shape == (V + 1, 64) and net.input_proj.weight.shape == (256, 64)
    assert net.time_embed.dense0.weight.shape == (256, 64)  # 4 F hidden units of the time features
    block = net.blocks[0]
    assert math.isclose(block.w1.weight.std().item(), math.sqrt(2 / 8 / 256), rel_tol=0.05)  # variance 2 / (depth fan_in)
    assert math.isclose(block.wq.weight.std().item(), math.sqrt(1 / 256), rel_tol=0.05)  # lecun normal elsewhere
    assert block.wq.weight.abs().max() <= 2 * math.sqrt(1 / 256) / 0.8796 + 1e-6  # truncated at two standard deviations


def test_the_backbone_is_built_from_a_run_config_and_refuses_what_it_lacks():
    config = RunConfig(model=ModelConfig(backbone="md4-transformer", width=32, depth=1, heads=2, time_conditioned=True),
                       data=DataConfig(length=L))
    net = build_objective(config, V).network
    assert isinstance(net, MD4Transformer) and net.time_conditioned
    config.model.dropout = 0.1
    with pytest.raises(MaskdiffError, match="no dropout"):
        build_objective(config, V)
