"""A Sudoku denoiser that knows the rules and nothing else: at each masked cell, mu is uniform over the
digits that the cell's row, column and box leave open in the current state (clues and the cells filled
so far); a filled cell carries its value. No learning: it shows what the order of decoding alone does
when the per-cell laws are right but local, the regime where adaptive orders help most (a cell with one
open digit has margin 1; two open digits, margin 0).

    denoise(x_t (B, C), t (B,)) -> log mu (B, C, n + 1)    C = n * n cells; the mask id is n + 1, the blank 0
    never drawn (9x9: C = 81, mask id 10)
"""
from __future__ import annotations

import torch
from torch import Tensor

from maskdiff.tasks.sudoku import NINE, Board, candidates


class RulesDenoiser:
    """mu uniform over each masked cell's open digits (all n where none is open: a contradiction)."""

    time_independent = True

    def __init__(self, board: Board = NINE):
        self.board = board
        self.vocab_size = board.vocab

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        mask_id = self.vocab_size
        mu = torch.zeros(x_t.shape[0], self.board.cells, mask_id, dtype=torch.float32)
        for b, row in enumerate(x_t.tolist()):
            state = [0 if d == mask_id else d for d in row]  # masked cells read as blanks
            for i, (d, open_digits) in enumerate(zip(row, candidates(state, self.board))):
                if d != mask_id:
                    mu[b, i, d] = 1.0
                else:
                    digits = open_digits or list(range(1, mask_id))
                    mu[b, i, digits] = 1.0 / len(digits)
        return mu.log().to(x_t.device)


def left_to_right(denoise, x_init: Tensor) -> Tensor:
    """Fill the masked cells in reading order, each with the argmax of mu given everything before and the
    clues (the order an autoregressive model writes in). (B, C) -> (B, C)."""
    x = x_init.clone()
    mask_id = denoise.vocab_size
    t = torch.ones(x.shape[0])
    for i in range(x.shape[1]):
        rows = (x[:, i] == mask_id).nonzero().flatten()
        if len(rows):
            x[rows, i] = denoise(x[rows], t[rows])[:, i].argmax(-1)
    return x
