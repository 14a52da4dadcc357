"""`maskdiff experiment sudoku` at its test scale: both models train, every decoder answers the held-out
puzzles, the table and the claims are written, and a second call resumes from the records."""
import json

import pytest

from helpers import run_main
from maskdiff.experiments.sudoku import DECODERS, RULES_PREFIX, SUDOKU_SCALES, held_out
from maskdiff.tasks import sudoku


@pytest.mark.slow  # about 5 s of CPU: six tiny models and four decoders
def test_sudoku_experiment_end_to_end(tmp_path):
    assert run_main("experiment", "sudoku", "--scale", "test", "--out", str(tmp_path)).returncode == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    learned = [d[0] for d in DECODERS]
    assert list(summary["rows"]) == learned + [RULES_PREFIX + lab.split(", ", 1)[1] for lab in learned]
    assert summary["rows"][RULES_PREFIX + "largest margin first"]["solved"][0] == 1.0  # easy puzzles: the rules suffice
    for row in summary["rows"].values():
        assert row["seeds"] == 2 and 0.0 <= row["solved"][0] <= 1.0 and 0.0 <= row["cells"][0] <= 1.0
    assert len(summary["claims"]) == 12 and "largest margin first" in (tmp_path / "results.md").read_text()
    records = sorted((tmp_path / "records").glob("*seed*.json"))
    assert len(records) == 4
    before = records[0].read_text()
    assert run_main("experiment", "sudoku", "--scale", "test", "--out", str(tmp_path)).returncode == 0  # resumes: nothing retrained
    assert records[0].read_text() == before


def test_held_out_puzzles_are_unique_and_outside_the_training_pool():
    scale = SUDOKU_SCALES["test"]
    pool = sudoku.random_grids(scale.pool, seed=0)
    test = held_out(scale, pool)
    assert not {tuple(g) for g in pool.tolist()} & {tuple(g) for g in test.solutions.tolist()}
    assert all(sudoku.count_solutions(p) == 1 for p in test.puzzles.tolist())


def test_training_batches_never_hold_a_held_out_grid():
    import torch
    from dataclasses import replace

    from maskdiff.experiments.sudoku import training_batch

    four = sudoku.get_board("4x4")  # 288 grids: a batch of 64 meets the avoided ones often
    scale = replace(SUDOKU_SCALES["test"], board="4x4", batch_size=64, clues=(6, 8))
    pool = sudoku.random_grids(3, seed=0, board=four)
    avoid = frozenset(tuple(g) for g in sudoku.shuffle_grids(pool.repeat(60, 1), torch.Generator().manual_seed(5), four).tolist())
    assert len(avoid) > 100
    for step in range(3):
        x0, valid = training_batch("ar", pool, scale, torch.Generator().manual_seed(step), avoid)
        grids = x0[:, 16:]
        assert not {tuple(g) for g in grids.tolist()} & avoid and valid[:, 16:].all() and not valid[:, :16].any()
        assert all(sudoku.is_solution(p, g, four) for p, g in zip(x0[:, :16].tolist(), grids.tolist()))
