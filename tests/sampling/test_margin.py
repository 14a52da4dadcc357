"""The confidence sampler's margin score (Kim et al. 2025): which masked position is unmasked first, on a
hand-built denoiser whose most probable position and largest-margin position differ."""
import pytest
import torch

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.confidence import confidence_sample, log_margin
from maskdiff.sampling.registry import get_entry
from maskdiff.schedules import get_schedule

# mu at each of the three positions, whatever the input: position 0 has the most probable value (0.6) but
# a small margin (0.6 - 0.4 = 0.2); position 1 a less probable value (0.5) but the largest margin (0.5 - 0.25)
MU = torch.tensor([[0.6, 0.4, 0.0], [0.5, 0.25, 0.25], [0.4, 0.35, 0.25]], dtype=torch.float64)


class Recording:
    """A time-independent denoiser with fixed mu per position that records every input it is called on."""

    vocab_size = 3
    time_independent = True

    def __init__(self):
        self.inputs = []

    def __call__(self, x, t):
        self.inputs.append(x.clone())
        return MU.log().float().expand(x.shape[0], -1, -1).clone()


def first_unmasked(score: str, choose: str) -> int:
    """The position the sampler fills at its first step (3 steps on the linear schedule: one per step)."""
    den = Recording()
    out = confidence_sample(den, get_schedule("linear"), (1, 3), steps=3, choose=choose, score=score,
                            generator=torch.Generator().manual_seed(0))
    assert len(den.inputs) == 3 and not bool((out.tokens == 3).any())
    filled = (den.inputs[1][0] != 3).nonzero().flatten().tolist()  # the state after the first step
    assert len(filled) == 1
    return filled[0]


@pytest.mark.parametrize("choose", ["argmax", "sample"])
def test_margin_fills_the_largest_margin_first(choose):
    assert first_unmasked("margin", choose) == 1


def test_probability_score_fills_the_most_probable_candidate_first():
    assert first_unmasked("probability", "argmax") == 0


def test_log_margin_is_the_gap_of_the_two_largest_probabilities():
    got = log_margin(MU.log()).exp()
    assert torch.allclose(got, torch.tensor([0.2, 0.25, 0.05], dtype=torch.float64), atol=1e-12)
    tie = log_margin(torch.tensor([0.5, 0.5, 0.0]).log())
    assert torch.isfinite(tie)


def test_margin_is_a_registry_option_and_an_unknown_score_is_named():
    option = get_entry("confidence").option("score")
    assert option.default == "probability" and option.choices == ("probability", "margin")
    with pytest.raises(MaskdiffError, match="choose one of: probability, margin"):
        confidence_sample(Recording(), get_schedule("linear"), (1, 3), steps=3, score="gap")
