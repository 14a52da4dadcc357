"""The rules-only Sudoku denoiser: its per-cell law, and that the largest-margin order solves what a
left-to-right order guesses at."""
import torch

from maskdiff.sampling.confidence import confidence_sample
from maskdiff.schedules import get_schedule
from maskdiff.tasks import sudoku
from maskdiff.tasks.sudoku_rules import RulesDenoiser, left_to_right

GRID = [int(ch) for ch in "823196547564237819179548632958461723216379485437825196395614278642783951781952364"]


def test_mu_is_uniform_over_the_open_digits_and_carries_filled_cells():
    x = torch.tensor([GRID])
    x[0, [0, 6, 9, 15]] = 10  # a deadly rectangle: each of the four cells has two open digits, 8 and 5
    x[0, 40] = 10  # one open digit
    mu = RulesDenoiser()(x, torch.ones(1)).exp()[0]
    for i in (0, 6, 9, 15):
        assert torch.allclose(mu[i, [5, 8]], torch.tensor([0.5, 0.5])) and float(mu[i].sum()) == 1.0
    assert float(mu[40, GRID[40]]) == 1.0
    assert float(mu[1, GRID[1]]) == 1.0 and float(mu[:, 0].sum()) == 0.0  # carried; the blank never drawn


def test_largest_margin_first_solves_puzzles_exactly():
    data = sudoku.generate(3, (40, 45), seed=5)
    x_init = torch.where(data.puzzles == 0, torch.full_like(data.puzzles, 10), data.puzzles)
    den = RulesDenoiser()
    out = confidence_sample(den, get_schedule("linear"), tuple(x_init.shape), steps=81, x_init=x_init, choose="argmax",
                            score="margin", generator=torch.Generator().manual_seed(0))
    assert sudoku.scores(data.puzzles, data.solutions, out.tokens)[:, 0].tolist() == [1.0, 1.0, 1.0]
    guessed = left_to_right(den, x_init)  # every blank filled in reading order, the clues kept
    assert ((guessed != 10).all()) and ((guessed == data.puzzles) | (data.puzzles == 0)).all()


def test_largest_margin_first_solves_6x6_puzzles():
    six = sudoku.get_board("6x6")
    data = sudoku.generate(3, (12, 14), seed=2, board=six)
    x_init = torch.where(data.puzzles == 0, torch.full_like(data.puzzles, 7), data.puzzles)
    out = confidence_sample(RulesDenoiser(six), get_schedule("linear"), tuple(x_init.shape), steps=36, x_init=x_init,
                            choose="argmax", score="margin", generator=torch.Generator().manual_seed(0))
    assert sudoku.scores(data.puzzles, data.solutions, out.tokens, six)[:, 0].tolist() == [1.0, 1.0, 1.0]
