"""The Sudoku task: the generator is deterministic and valid, uniqueness is checked, answers are scored exactly."""
import pytest
import torch

from maskdiff.errors import MaskdiffError
from maskdiff.tasks import sudoku

# a valid full grid, checked rule by rule below; cells 0 and 15 hold 8, cells 6 and 9 hold 5
GRID = [int(ch) for ch in "823196547564237819179548632958461723216379485437825196395614278642783951781952364"]


def rules_hold(grid):
    """Every row, column and box holds 1..9 once (written independently of the module's unit table)."""
    rows = [grid[9 * r: 9 * r + 9] for r in range(9)]
    cols = [[grid[9 * r + c] for r in range(9)] for c in range(9)]
    boxes = [[grid[9 * (3 * br + r) + 3 * bc + c] for r in range(3) for c in range(3)] for br in range(3) for bc in range(3)]
    return all(sorted(u) == list(range(1, 10)) for u in rows + cols + boxes)


def test_generator_is_deterministic_and_every_puzzle_is_unique_and_valid():
    a, b = sudoku.generate(4, (50, 60), seed=3), sudoku.generate(4, (50, 60), seed=3)
    assert torch.equal(a.puzzles, b.puzzles) and torch.equal(a.solutions, b.solutions)
    assert not torch.equal(a.solutions, sudoku.generate(4, (50, 60), seed=4).solutions)
    for p, s in zip(a.puzzles.tolist(), a.solutions.tolist()):
        assert rules_hold(s)
        assert 50 <= sum(d != 0 for d in p) <= 60
        assert all(d == 0 or d == x for d, x in zip(p, s))  # the clues are the solution's digits
        assert sudoku.count_solutions(p) == 1 and sudoku.solve(p) == s


def test_uniqueness_check_sees_a_hand_made_ambiguous_puzzle():
    assert rules_hold(GRID)
    # blank the four cells of a "deadly rectangle": rows 0 and 1 (one band), columns 0 and 6 hold the
    # digits 8 and 5 crosswise, so swapping them gives a second solution
    ambiguous = list(GRID)
    for i in (0, 6, 9, 15):
        ambiguous[i] = 0
    assert GRID[0] == GRID[15] == 8 and GRID[6] == GRID[9] == 5
    assert sudoku.count_solutions(ambiguous) == 2
    swapped = list(GRID)
    swapped[0], swapped[6], swapped[9], swapped[15] = 5, 8, 8, 5
    assert rules_hold(swapped) and sudoku.is_solution(ambiguous, swapped) and sudoku.is_solution(ambiguous, GRID)
    one_blank = list(GRID)
    one_blank[40] = 0
    assert sudoku.count_solutions(one_blank) == 1
    broken = list(GRID)
    broken[1] = GRID[0]  # a digit twice in row 0
    assert sudoku.count_solutions(broken) == 0


def test_checker_needs_every_rule_and_every_clue():
    puzzle = list(GRID)
    for i in range(0, 81, 2):
        puzzle[i] = 0
    assert sudoku.is_solution(puzzle, GRID)
    relabelled = [d % 9 + 1 for d in GRID]  # a valid grid that breaks the clues
    assert rules_hold(relabelled) and not sudoku.is_solution(puzzle, relabelled)
    assert sudoku.is_solution([0] * 81, relabelled)
    bad = list(GRID)
    bad[2], bad[3] = bad[3], bad[2]  # rows still hold 1..9, two columns do not
    assert not sudoku.is_solution([0] * 81, bad)
    assert not sudoku.is_solution([0] * 81, GRID[:80] + [0])
    s = sudoku.scores(torch.tensor([puzzle]), torch.tensor([GRID]), torch.tensor([bad]))
    assert s[0, 0] == 0.0 and s[0, 1] == pytest.approx(40 / 41)  # 41 blanks (even cells); cell 2 is blank and wrong, 3 a clue


def test_symmetries_keep_grids_valid_and_formats_round_trip():
    grids = sudoku.random_grids(8, seed=0)
    shuffled = sudoku.shuffle_grids(grids, torch.Generator().manual_seed(0))
    assert all(rules_hold(g) for g in shuffled.tolist()) and not torch.equal(shuffled, grids)
    puzzles = sudoku.blank_cells(shuffled, (30, 40), torch.Generator().manual_seed(1))
    assert ((puzzles == 0) | (puzzles == shuffled)).all()
    assert ((puzzles != 0).sum(-1) >= 30).all() and ((puzzles != 0).sum(-1) <= 40).all()
    line = sudoku.to_text(puzzles[0].tolist())
    assert len(line) == 81 and sudoku.from_text(line) == puzzles[0].tolist()
    rows = sudoku.prompt_response_rows(sudoku.SudokuSet(puzzles[:2], shuffled[:2]))
    assert rows[0]["response"] == sudoku.to_text(shuffled[0].tolist())
    with pytest.raises(MaskdiffError, match="81 characters"):
        sudoku.from_text("123")
    with pytest.raises(MaskdiffError, match=r"clues must be in \[17, 81\]"):
        sudoku.make_puzzle(GRID, 10, __import__("random").Random(0))


def rules_hold_on(grid, box_rows, box_cols):
    """Every row, column and box_rows x box_cols box of an n x n grid holds 1..n once (independent of the
    module's unit table)."""
    n = box_rows * box_cols
    rows = [grid[n * r: n * r + n] for r in range(n)]
    cols = [[grid[n * r + c] for r in range(n)] for c in range(n)]
    boxes = [[grid[n * (r0 + r) + c0 + c] for r in range(box_rows) for c in range(box_cols)]
             for r0 in range(0, n, box_rows) for c0 in range(0, n, box_cols)]
    return all(sorted(u) == list(range(1, n + 1)) for u in rows + cols + boxes)


@pytest.mark.parametrize("name, box, clues", [("4x4", (2, 2), (5, 8)), ("6x6", (2, 3), (12, 18))])
def test_small_boards_generate_unique_valid_puzzles_deterministically(name, box, clues):
    board = sudoku.get_board(name)
    a, b = sudoku.generate(5, clues, seed=7, board=board), sudoku.generate(5, clues, seed=7, board=board)
    assert torch.equal(a.puzzles, b.puzzles) and torch.equal(a.solutions, b.solutions)
    assert a.puzzles.shape == (5, board.cells) and not torch.equal(a.solutions, sudoku.generate(5, clues, 8, board).solutions)
    for p, s in zip(a.puzzles.tolist(), a.solutions.tolist()):
        assert rules_hold_on(s, *box) and sudoku.is_solution(p, s, board)
        assert clues[0] <= sum(d != 0 for d in p) <= clues[1] and all(d == 0 or d == x for d, x in zip(p, s))
        assert sudoku.count_solutions(p, board=board) == 1 and sudoku.solve(p, board) == s
        assert sudoku.from_text(sudoku.to_text(p, board), board) == p
    shuffled = sudoku.shuffle_grids(a.solutions, torch.Generator().manual_seed(0), board)
    assert all(rules_hold_on(g, *box) for g in shuffled.tolist()) and not torch.equal(shuffled, a.solutions)
    bad = list(a.solutions[0].tolist())
    bad[0], bad[1] = bad[1], bad[0]  # its row still holds 1..n, two columns do not
    assert not sudoku.is_solution([0] * board.cells, bad, board)


def test_4x4_has_288_grids_and_bad_boards_are_named():
    four = sudoku.get_board("4x4")
    assert sudoku.count_solutions([0] * 16, limit=1000, board=four) == 288  # the known number of 4x4 Sudokus
    with pytest.raises(MaskdiffError, match="choose one of: 4x4, 6x6, 9x9"):
        sudoku.get_board("5x5")
    with pytest.raises(MaskdiffError, match="6x6 Sudoku grid is 36 cells"):
        sudoku.count_solutions([0] * 81, board=sudoku.get_board("6x6"))
