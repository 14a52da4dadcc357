"""Sudoku with exact answers on n x n boards with rectangular boxes (4x4 with 2x2 boxes, 6x6 with 2x3
boxes, 9x9 with 3x3 boxes, the default): a seeded generator of full grids (randomised backtracking) and of
puzzles with a unique solution, a solver that counts solutions, the checker, and the formats a model
reads (tokens, text rows for prompt/response files).

A grid is a list of n * n ints in row-major order: 1..n a digit, 0 (``BLANK``) an empty cell of a puzzle.
As tokens the same ints are the ids (vocabulary ``board.vocab`` = n + 1: the blank and the n digits), so a
puzzle, its solution and a model's answer read the same way. An answer is correct when every row,
column and box holds each digit once and every clue is kept (``is_solution``); puzzles made here
have exactly one solution, so that is also the generator's grid. Every function takes ``board``
(default :data:`NINE`); the module constants ``SIDE``, ``CELLS`` and ``VOCAB`` are 9x9's.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError


@dataclass(frozen=True)
class Board:
    """The shape of a Sudoku: side n = box_rows * box_cols, n boxes of box_rows x box_cols cells."""

    box_rows: int
    """Rows of a box (a band of the board is box_rows rows high; the board has box_cols bands)."""
    box_cols: int
    """Columns of a box (a stack is box_cols columns wide; the board has box_rows stacks)."""
    min_clues: int
    """The fewest clues a puzzle of this board with a unique solution can have (17 for 9x9)."""

    @property
    def side(self) -> int:
        return self.box_rows * self.box_cols

    @property
    def cells(self) -> int:
        return self.side * self.side

    @property
    def vocab(self) -> int:
        """Token ids: 0 the blank, 1..side the digits."""
        return self.side + 1

    @property
    def name(self) -> str:
        return f"{self.side}x{self.side}"


BOARDS: Dict[str, Board] = {"4x4": Board(2, 2, 4), "6x6": Board(2, 3, 8), "9x9": Board(3, 3, 17)}
"""The boards by name; 4x4 has 288 full grids, 6x6 28,200,960, 9x9 about 6.7e21."""
NINE = BOARDS["9x9"]
SIDE, CELLS, BLANK, VOCAB = NINE.side, NINE.cells, 0, NINE.vocab


def get_board(name: str) -> Board:
    """The board ``name``, or a MaskdiffError naming the valid ones."""
    if name not in BOARDS:
        raise MaskdiffError(f"unknown Sudoku board {name!r}; choose one of: {', '.join(BOARDS)}")
    return BOARDS[name]


@functools.lru_cache(maxsize=None)
def units(board: Board) -> Tuple[Tuple[Tuple[int, ...], ...], Tuple[Tuple[int, int, int], ...]]:
    """(the 3n units: rows, columns, boxes, each a tuple of cells; per cell, its row, column and box unit)."""
    n, br, bc = board.side, board.box_rows, board.box_cols
    rows = [tuple(n * r + c for c in range(n)) for r in range(n)]
    cols = [tuple(n * r + c for r in range(n)) for c in range(n)]
    boxes = [tuple(n * (br * i + r) + bc * j + c for r in range(br) for c in range(bc)) for i in range(bc) for j in range(br)]
    cell_units = tuple((i // n, n + i % n, 2 * n + br * ((i // n) // br) + (i % n) // bc) for i in range(board.cells))
    return tuple(rows + cols + boxes), cell_units


def _all_bits(board: Board) -> int:
    return (1 << board.vocab) - 2  # bits 1..n: every digit still possible


def _digits(bits: int, board: Board) -> List[int]:
    return [d for d in range(1, board.vocab) if bits >> d & 1]


def _used(grid: Sequence[int], board: Board) -> List[int]:
    """Per unit, the bit set of the digits it holds."""
    cell_units = units(board)[1]
    used = [0] * (3 * board.side)
    for i, d in enumerate(grid):
        if d:
            for u in cell_units[i]:
                used[u] |= 1 << int(d)
    return used


def _search(grid: List[int], limit: int, rng: Optional[random.Random], found: List[List[int]], board: Board) -> None:
    """Depth-first search over the blank cells, the one with the fewest candidates first; appends each
    solution to ``found`` until it holds ``limit``. ``rng``: try candidates in random order."""
    used, cell_units, full = _used(grid, board), units(board)[1], _all_bits(board)
    best, best_bits, best_n = -1, 0, board.vocab
    for i, d in enumerate(grid):
        if d == BLANK:
            a, b, c = cell_units[i]
            bits = full & ~(used[a] | used[b] | used[c])
            n = bin(bits).count("1")
            if n < best_n:
                best, best_bits, best_n = i, bits, n
                if n <= 1:
                    break
    if best < 0:
        found.append(list(grid))
        return
    options = _digits(best_bits, board)
    if rng is not None:
        rng.shuffle(options)
    for d in options:
        grid[best] = d
        _search(grid, limit, rng, found, board)
        grid[best] = BLANK
        if len(found) >= limit:
            return


def check_grid_shape(grid: Sequence[int], board: Board = NINE) -> None:
    """Refuse anything that is not n * n cells of 0..n."""
    if len(grid) != board.cells or any(not 0 <= int(d) <= board.side for d in grid):
        raise MaskdiffError(f"a {board.name} Sudoku grid is {board.cells} cells of 0 (blank) to {board.side}; got {len(grid)} "
                            f"cells with values {sorted(set(int(d) for d in grid))}")


def count_solutions(puzzle: Sequence[int], limit: int = 2, board: Board = NINE) -> int:
    """How many solutions ``puzzle`` has, counting up to ``limit`` (2 tells unique from ambiguous); 0 when
    the clues already break a rule."""
    check_grid_shape(puzzle, board)
    if not consistent(puzzle, board):
        return 0
    found: List[List[int]] = []
    _search([int(d) for d in puzzle], limit, None, found, board)
    return len(found)


def solve(puzzle: Sequence[int], board: Board = NINE) -> Optional[List[int]]:
    """A solution of ``puzzle`` (the first the search finds), or None."""
    check_grid_shape(puzzle, board)
    found: List[List[int]] = []
    if consistent(puzzle, board):
        _search([int(d) for d in puzzle], 1, None, found, board)
    return found[0] if found else None


def consistent(grid: Sequence[int], board: Board = NINE) -> bool:
    """No digit twice in a row, column or box (blanks ignored)."""
    for unit in units(board)[0]:
        ds = [grid[i] for i in unit if grid[i] != BLANK]
        if len(ds) != len(set(ds)):
            return False
    return True


def is_solution(puzzle: Sequence[int], answer: Sequence[int], board: Board = NINE) -> bool:
    """Exact check: ``answer`` fills every cell with 1..n, each unit holds each digit once, and every clue
    of ``puzzle`` is kept."""
    check_grid_shape(puzzle, board)
    if len(answer) != board.cells or any(not 1 <= int(d) <= board.side for d in answer):
        return False
    if any(p != BLANK and int(p) != int(a) for p, a in zip(puzzle, answer)):
        return False
    return all(len({int(answer[i]) for i in unit}) == board.side for unit in units(board)[0])


def random_grid(rng: random.Random, board: Board = NINE) -> List[int]:
    """A full valid grid by randomised backtracking (candidates in random order)."""
    found: List[List[int]] = []
    _search([BLANK] * board.cells, 1, rng, found, board)
    return found[0]


def make_puzzle(grid: Sequence[int], clues: int, rng: random.Random, board: Board = NINE) -> List[int]:
    """Blank the cells of ``grid`` in random order, each only if the solution stays unique, until
    ``clues`` remain; a cell whose removal would admit a second solution is kept. Raises if fewer than
    ``clues`` cannot be reached that way (only for small ``clues``, near ``board.min_clues``)."""
    if not board.min_clues <= clues <= board.cells:
        raise MaskdiffError(f"clues must be in [{board.min_clues}, {board.cells}] (no {board.name} Sudoku with fewer than "
                            f"{board.min_clues} has a unique solution), got {clues}")
    puzzle = list(grid)
    order = list(range(board.cells))
    rng.shuffle(order)
    given = board.cells
    for i in order:
        if given == clues:
            return puzzle
        puzzle[i] = BLANK
        if count_solutions(puzzle, board=board) == 1:
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
    """(N, n * n) long: 0 blank, 1..n a clue."""
    solutions: Tensor
    """(N, n * n) long: the unique solution of each puzzle."""


def generate(n: int, clues: Sequence[int], seed: int, board: Board = NINE) -> SudokuSet:
    """``n`` puzzles with unique solutions, each from a fresh random grid, the number of clues drawn
    uniformly from ``clues`` = (low, high) inclusive; deterministic in ``seed``."""
    low, high = clues
    if not board.min_clues <= low <= high <= board.cells:
        raise MaskdiffError(f"clues must be a range (low, high) with {board.min_clues} <= low <= high <= {board.cells}, "
                            f"got ({low}, {high})")
    rng = random.Random(seed)
    puzzles, solutions = [], []
    for _ in range(n):
        grid = random_grid(rng, board)
        puzzles.append(make_puzzle(grid, rng.randint(low, high), rng, board))
        solutions.append(grid)
    return SudokuSet(torch.tensor(puzzles, dtype=torch.long).reshape(n, board.cells),
                     torch.tensor(solutions, dtype=torch.long).reshape(n, board.cells))


def random_grids(n: int, seed: int, board: Board = NINE) -> Tensor:
    """(n, n * n) long: full grids from ``random_grid``, deterministic in ``seed``."""
    rng = random.Random(seed)
    return torch.tensor([random_grid(rng, board) for _ in range(n)], dtype=torch.long).reshape(n, board.cells)


def scores(puzzles: Tensor, solutions: Tensor, answers: Tensor, board: Board = NINE) -> Tensor:
    """(N, 2) float64: per puzzle, 1.0 if the answer is an exact solution (``is_solution``) and the
    fraction of its blank cells that hold the (unique) solution's digit."""
    rows = []
    for p, s, a in zip(puzzles.tolist(), solutions.tolist(), answers.tolist()):
        blank = [i for i, d in enumerate(p) if d == BLANK]
        right = sum(a[i] == s[i] for i in blank) / max(1, len(blank))
        rows.append((float(is_solution(p, a, board)), right))
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 2)


def to_text(grid: Sequence[int], board: Board = NINE) -> str:
    """n * n characters: the digits, '.' for a blank (the usual one-line Sudoku format)."""
    check_grid_shape(grid, board)
    return "".join("." if d == BLANK else str(int(d)) for d in grid)


def from_text(text: str, board: Board = NINE) -> List[int]:
    """The grid of an n * n-character line ('.' or '0' a blank); a MaskdiffError names what is wrong."""
    s = text.strip()
    digits = ".0" + "".join(str(d) for d in range(1, board.vocab))
    if len(s) != board.cells or any(ch not in digits for ch in s):
        raise MaskdiffError(f"a {board.name} Sudoku line is {board.cells} characters of 1-{board.side} and '.' or '0' for a "
                            f"blank; got {len(s)} characters")
    return [0 if ch == "." else int(ch) for ch in s]


def prompt_response_rows(data: SudokuSet, board: Board = NINE) -> List[dict]:
    """Rows for a prompt/response file (JSONL): the puzzle line as the prompt, the solution as the response."""
    return [{"prompt": to_text(p, board), "response": to_text(s, board)}
            for p, s in zip(data.puzzles.tolist(), data.solutions.tolist())]


def _within_groups(n: int, groups: int, size: int, generator: torch.Generator) -> Tensor:
    """(n, groups * size) permutations that permute the groups (of ``size`` consecutive indices) and the
    members within each."""
    outer = torch.rand(n, groups, generator=generator).argsort(-1)  # (n, groups)
    inner = torch.rand(n, groups, size, generator=generator).argsort(-1)  # (n, groups, size)
    return (size * outer[:, :, None] + inner.gather(1, outer[:, :, None].expand(-1, -1, size))).reshape(n, groups * size)


def shuffle_grids(grids: Tensor, generator: torch.Generator, board: Board = NINE) -> Tensor:
    """Each grid under a random symmetry of Sudoku that keeps it valid: digits relabelled, rows permuted
    within bands and bands permuted, the same for columns, and (square boxes only) a transpose with
    probability 1/2. (N, n * n) -> (N, n * n), blanks (0) kept blank."""
    n, side = grids.shape[0], board.side
    relabel = torch.cat([torch.zeros(n, 1, dtype=torch.long), 1 + torch.rand(n, side, generator=generator).argsort(-1)], 1)
    g = relabel.gather(1, grids).reshape(n, side, side)
    rows = _within_groups(n, board.box_cols, board.box_rows, generator)
    cols = _within_groups(n, board.box_rows, board.box_cols, generator)
    g = g.gather(1, rows[:, :, None].expand(-1, -1, side)).gather(2, cols[:, None, :].expand(-1, side, -1))
    if board.box_rows == board.box_cols:
        flip = torch.rand(n, generator=generator) < 0.5
        g = torch.where(flip[:, None, None], g.transpose(1, 2), g)
    return g.reshape(n, board.cells)


def blank_cells(grids: Tensor, clues: Sequence[int], generator: torch.Generator) -> Tensor:
    """Puzzles for training: in each grid all but k cells blanked at random, k uniform in ``clues`` =
    (low, high) inclusive (no uniqueness check: cheap, for training only). (N, C) -> (N, C), any board."""
    n = grids.shape[0]
    k = torch.randint(clues[0], clues[1] + 1, (n, 1), generator=generator)
    rank = torch.rand(n, grids.shape[1], generator=generator).argsort(-1).argsort(-1)
    return torch.where(rank < k, grids, torch.zeros_like(grids))


def candidates(puzzle: Sequence[int], board: Board = NINE) -> List[List[int]]:
    """Per cell, the digits its row, column and box leave open (empty for a clue): one look at the
    rules, no search."""
    check_grid_shape(puzzle, board)
    used, cell_units, full = _used(puzzle, board), units(board)[1], _all_bits(board)
    return [[] if d else _digits(full & ~(used[cell_units[i][0]] | used[cell_units[i][1]] | used[cell_units[i][2]]), board)
            for i, d in enumerate(puzzle)]


def one_look_accuracy(puzzles: Tensor, board: Board = NINE) -> float:
    """The cell accuracy of a solver that knows the rules and guesses uniformly among each blank's
    ``candidates``: the mean over blank cells of 1 / (number of candidates), a reference for the models."""
    shares = [1.0 / len(c) for p in puzzles.tolist() for c, d in zip(candidates(p, board), p) if d == BLANK]
    return sum(shares) / len(shares)
