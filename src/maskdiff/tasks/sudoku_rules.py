"""A Sudoku denoiser that knows the rules and nothing else: at each masked cell, mu is uniform over the
digits that the cell's row, column and box leave open in the current state (clues and the cells filled
so far); a filled cell carries its value. No learning: it shows what the order of decoding alone does
when the per-cell laws are right but local, the regime where adaptive orders help most (a cell with one
open digit has margin 1; two open digits, margin 0).

    denoise(x_t (B, 81), t (B,)) -> log mu (B, 81, 10)    the mask id is 10, the blank 0 never drawn
"""
from __future__ import annotations

import torch
from torch import Tensor

from maskdiff.tasks.sudoku import CELLS, VOCAB, candidates


class RulesDenoiser:
    """mu uniform over each masked cell's open digits (all nine where none is open: a contradiction)."""

    vocab_size = VOCAB
    time_independent = True

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        mu = torch.zeros(x_t.shape[0], CELLS, VOCAB, dtype=torch.float32)
        for b, row in enumerate(x_t.tolist()):
            state = [0 if d == VOCAB else d for d in row]  # masked cells read as blanks
            for i, (d, open_digits) in enumerate(zip(row, candidates(state))):
                if d != VOCAB:
                    mu[b, i, d] = 1.0
                else:
                    digits = open_digits or list(range(1, 10))
                    mu[b, i, digits] = 1.0 / len(digits)
        return mu.log().to(x_t.device)


def left_to_right(denoise, x_init: Tensor) -> Tensor:
    """Fill the masked cells in reading order, each with the argmax of mu given everything before and the
    clues (the order an autoregressive model writes in). (B, 81) -> (B, 81)."""
    x = x_init.clone()
    mask_id = denoise.vocab_size
    t = torch.ones(x.shape[0])
    for i in range(x.shape[1]):
        rows = (x[:, i] == mask_id).nonzero().flatten()
        if len(rows):
            x[rows, i] = denoise(x[rows], t[rows])[:, i].argmax(-1)
    return x
