"""9x9 Sudoku with exact answers: a seeded generator of full grids (randomised backtracking) and of
puzzles with a unique solution, a solver that counts solutions, the checker, and the formats a model
reads (tokens, text rows for prompt/response files).

A grid is a list of 81 ints in row-major order: 1..9 a digit, 0 (``BLANK``) an empty cell of a puzzle.
As tokens the same ints are the ids (vocabulary ``VOCAB`` = 10: the blank and the nine digits), so a
puzzle, its solution and a model's answer read the same way. An answer is correct when every row,
column and 3x3 box holds each digit once and every clue is kept (``is_solution``); puzzles made here
have exactly one solution, so that is also the generator's grid.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

SIDE, CELLS, BLANK, VOCAB = 9, 81, 0, 10
ALL = (1 << 10) - 2  # bits 1..9: every digit still possible

# the 27 units (rows, columns, boxes) and each cell's three units
UNITS = [[9 * r + c for c in range(9)] for r in range(9)] + [[9 * r + c for r in range(9)] for c in range(9)] + \
        [[9 * (3 * br + r) + 3 * bc + c for r in range(3) for c in range(3)] for br in range(3) for bc in range(3)]
CELL_UNITS = [(i // 9, 9 + i % 9, 18 + 3 * (i // 27) + (i % 9) // 3) for i in range(CELLS)]


def _digits(bits: int) -> List[int]:
    return [d for d in range(1, 10) if bits >> d & 1]


def _search(grid: List[int], limit: int, rng: Optional[random.Random], found: List[List[int]]) -> None:
    """Depth-first search over the blank cells, the one with the fewest candidates first; appends each
    solution to ``found`` until it holds ``limit``. ``rng``: try candidates in random order."""
    used = [0] * 27
    for i, d in enumerate(grid):
        if d:
            for u in CELL_UNITS[i]:
                used[u] |= 1 << d
    best, best_bits, best_n = -1, 0, 10
    for i, d in enumerate(grid):
        if d == BLANK:
            a, b, c = CELL_UNITS[i]
            bits = ALL & ~(used[a] | used[b] | used[c])
            n = bin(bits).count("1")
            if n < best_n:
                best, best_bits, best_n = i, bits, n
                if n <= 1:
                    break
    if best < 0:
        found.append(list(grid))
        return
    options = _digits(best_bits)
    if rng is not None:
        rng.shuffle(options)
    for d in options:
        grid[best] = d
        _search(grid, limit, rng, found)
        grid[best] = BLANK
        if len(found) >= limit:
            return


def check_grid_shape(grid: Sequence[int]) -> None:
    """Refuse anything that is not 81 cells of 0..9."""
    if len(grid) != CELLS or any(not 0 <= int(d) <= 9 for d in grid):
        raise MaskdiffError(f"a Sudoku grid is 81 cells of 0 (blank) to 9; got {len(grid)} cells with values "
                            f"{sorted(set(int(d) for d in grid))}")


def count_solutions(puzzle: Sequence[int], limit: int = 2) -> int:
    """How many solutions ``puzzle`` has, counting up to ``limit`` (2 tells unique from ambiguous); 0 when
    the clues already break a rule."""
    check_grid_shape(puzzle)
    if not consistent(puzzle):
        return 0
    found: List[List[int]] = []
    _search([int(d) for d in puzzle], limit, None, found)
    return len(found)


def solve(puzzle: Sequence[int]) -> Optional[List[int]]:
    """A solution of ``puzzle`` (the first the search finds), or None."""
    check_grid_shape(puzzle)
    found: List[List[int]] = []
    if consistent(puzzle):
        _search([int(d) for d in puzzle], 1, None, found)
    return found[0] if found else None


def consistent(grid: Sequence[int]) -> bool:
    """No digit twice in a row, column or box (blanks ignored)."""
    for unit in UNITS:
        ds = [grid[i] for i in unit if grid[i] != BLANK]
        if len(ds) != len(set(ds)):
            return False
    return True


def is_solution(puzzle: Sequence[int], answer: Sequence[int]) -> bool:
    """Exact check: ``answer`` fills every cell with 1..9, each unit holds each digit once, and every clue
    of ``puzzle`` is kept."""
    check_grid_shape(puzzle)
    if len(answer) != CELLS or any(not 1 <= int(d) <= 9 for d in answer):
        return False
    if any(p != BLANK and int(p) != int(a) for p, a in zip(puzzle, answer)):
        return False
    return all(len({int(answer[i]) for i in unit}) == SIDE for unit in UNITS)


def random_grid(rng: random.Random) -> List[int]:
    """A full valid grid by randomised backtracking (candidates in random order)."""
    found: List[List[int]] = []
    _search([BLANK] * CELLS, 1, rng, found)
    return found[0]


def make_puzzle(grid: Sequence[int], clues: int, rng: random.Random) -> List[int]:
    """Blank the cells of ``grid`` in random order, each only if the solution stays unique, until
    ``clues`` remain; a cell whose removal would admit a second solution is kept. Raises if fewer than
    ``clues`` cannot be reached that way (only for small ``clues``: about 17 is the least possible)."""
    if not 17 <= clues <= CELLS:
        raise MaskdiffError(f"clues must be in [17, 81] (no 9x9 Sudoku with fewer than 17 has a unique solution), got {clues}")
    puzzle = list(grid)
    order = list(range(CELLS))
    rng.shuffle(order)
    given = CELLS
    for i in order:
        if given == clues:
            return puzzle
        puzzle[i] = BLANK
        if count_solutions(puzzle) == 1:
            given -= 1
        else:
            puzzle[i] = grid[i]
    if given != clues:
        raise MaskdiffError(f"could not reach {clues} clues with a unique solution (stopped at {given}); ask for more clues")
    return puzzle


@dataclass
class SudokuSet:
    """Puzzles with their unique solutions, as token tensors."""

    puzzles: Tensor
    """(N, 81) long: 0 blank, 1..9 a clue."""
    solutions: Tensor
    """(N, 81) long: the unique solution of each puzzle."""


def generate(n: int, clues: Sequence[int], seed: int) -> SudokuSet:
    """``n`` puzzles with unique solutions, each from a fresh random grid, the number of clues drawn
    uniformly from ``clues`` = (low, high) inclusive; deterministic in ``seed``."""
    low, high = clues
    if not 17 <= low <= high <= CELLS:
        raise MaskdiffError(f"clues must be a range (low, high) with 17 <= low <= high <= 81, got ({low}, {high})")
    rng = random.Random(seed)
    puzzles, solutions = [], []
    for _ in range(n):
        grid = random_grid(rng)
        puzzles.append(make_puzzle(grid, rng.randint(low, high), rng))
        solutions.append(grid)
    return SudokuSet(torch.tensor(puzzles, dtype=torch.long).reshape(n, CELLS),
                     torch.tensor(solutions, dtype=torch.long).reshape(n, CELLS))


def random_grids(n: int, seed: int) -> Tensor:
    """(n, 81) long: full grids from ``random_grid``, deterministic in ``seed``."""
    rng = random.Random(seed)
    return torch.tensor([random_grid(rng) for _ in range(n)], dtype=torch.long).reshape(n, CELLS)


def scores(puzzles: Tensor, solutions: Tensor, answers: Tensor) -> Tensor:
    """(N, 2) float64: per puzzle, 1.0 if the answer is an exact solution (``is_solution``) and the
    fraction of its blank cells that hold the (unique) solution's digit."""
    rows = []
    for p, s, a in zip(puzzles.tolist(), solutions.tolist(), answers.tolist()):
        blank = [i for i, d in enumerate(p) if d == BLANK]
        right = sum(a[i] == s[i] for i in blank) / max(1, len(blank))
        rows.append((float(is_solution(p, a)), right))
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 2)


def to_text(grid: Sequence[int]) -> str:
    """81 characters: the digits, '.' for a blank (the usual one-line Sudoku format)."""
    check_grid_shape(grid)
    return "".join("." if d == BLANK else str(int(d)) for d in grid)


def from_text(text: str) -> List[int]:
    """The grid of an 81-character line ('.' or '0' a blank); a MaskdiffError names what is wrong."""
    s = text.strip()
    if len(s) != CELLS or any(ch not in ".0123456789" for ch in s):
        raise MaskdiffError(f"a Sudoku line is 81 characters of 1-9 and '.' or '0' for a blank; got {len(s)} characters")
    return [0 if ch == "." else int(ch) for ch in s]


def prompt_response_rows(data: SudokuSet) -> List[dict]:
    """Rows for a prompt/response file (JSONL): the puzzle line as the prompt, the solution as the response."""
    return [{"prompt": to_text(p), "response": to_text(s)} for p, s in zip(data.puzzles.tolist(), data.solutions.tolist())]


def _within_groups(n: int, generator: torch.Generator) -> Tensor:
    """(n, 9) permutations of 0..8 that permute the three groups of three and the members within each."""
    outer = torch.rand(n, 3, generator=generator).argsort(-1)  # (n, 3)
    inner = torch.rand(n, 3, 3, generator=generator).argsort(-1)  # (n, 3, 3)
    return (3 * outer[:, :, None] + inner.gather(1, outer[:, :, None].expand(-1, -1, 3))).reshape(n, 9)


def shuffle_grids(grids: Tensor, generator: torch.Generator) -> Tensor:
    """Each grid under a random symmetry of Sudoku that keeps it valid: digits relabelled, rows permuted
    within bands and bands permuted, the same for columns, and a transpose with probability 1/2.
    (N, 81) -> (N, 81), blanks (0) kept blank."""
    n = grids.shape[0]
    relabel = torch.cat([torch.zeros(n, 1, dtype=torch.long), 1 + torch.rand(n, 9, generator=generator).argsort(-1)], 1)
    g = relabel.gather(1, grids).reshape(n, 9, 9)
    rows, cols = _within_groups(n, generator), _within_groups(n, generator)
    g = g.gather(1, rows[:, :, None].expand(-1, -1, 9)).gather(2, cols[:, None, :].expand(-1, 9, -1))
    flip = torch.rand(n, generator=generator) < 0.5
    g = torch.where(flip[:, None, None], g.transpose(1, 2), g)
    return g.reshape(n, CELLS)


def blank_cells(grids: Tensor, clues: Sequence[int], generator: torch.Generator) -> Tensor:
    """Puzzles for training: in each grid all but k cells blanked at random, k uniform in ``clues`` =
    (low, high) inclusive (no uniqueness check: cheap, for training only). (N, 81) -> (N, 81)."""
    n = grids.shape[0]
    k = torch.randint(clues[0], clues[1] + 1, (n, 1), generator=generator)
    rank = torch.rand(n, CELLS, generator=generator).argsort(-1).argsort(-1)
    return torch.where(rank < k, grids, torch.zeros_like(grids))


def candidates(puzzle: Sequence[int]) -> List[List[int]]:
    """Per cell, the digits its row, column and box leave open (empty for a clue): one look at the
    rules, no search."""
    check_grid_shape(puzzle)
    used = [0] * 27
    for i, d in enumerate(puzzle):
        if d:
            for u in CELL_UNITS[i]:
                used[u] |= 1 << int(d)
    return [[] if d else _digits(ALL & ~(used[CELL_UNITS[i][0]] | used[CELL_UNITS[i][1]] | used[CELL_UNITS[i][2]]))
            for i, d in enumerate(puzzle)]


def one_look_accuracy(puzzles: Tensor) -> float:
    """The cell accuracy of a solver that knows the rules and guesses uniformly among each blank's
    ``candidates``: the mean over blank cells of 1 / (number of candidates), a reference for the models."""
    shares = [1.0 / len(c) for p in puzzles.tolist() for c, d in zip(candidates(p), p) if d == BLANK]
    return sum(shares) / len(shares)
