"""Many prompts per call: a list of rows, each a prompt or an infill template with its own length and seed,
checked once against a model, and the end-of-text cut of each row's text.

    request = RowsRequest([Row(prompt="to be", length=48), Row(template="or not [8] be")], seed=0)
    checked = request.check(target)        # one MaskdiffError naming the row and what is valid
    outs = draw_rows(denoise, schedule, checked, device=device)     # sampling/batch.py

Each row is checked as a one-row :class:`~maskdiff.sampling.request.SampleRequest` (the same check as
every other request), so its law is that request's law. Its randomness is its own: a generator seeded
with :func:`row_seed` (seed, row index), or with the row's own ``seed`` when it gives one. A row's output
therefore depends on its prompt, its length, its seed and the sampler settings only, not on the other rows
nor on how the rows are grouped into micro-batches (sampling/batch.py).

End-of-text: with ``stop_at_eos`` a row's text stops at the first end-of-text token generated after its
last fixed token (:func:`eos_cut`); the token ids are kept whole for inspection.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.request import CheckedRequest, SampleRequest, SamplingTarget


@dataclass
class Row:
    """One row of a :class:`RowsRequest`: a prompt or a template (not both), its length and seed."""

    prompt: Optional[str] = None
    """A fixed prefix; the sampler fills ``length`` minus its tokens after it."""
    template: Optional[str] = None
    """Text with [N] spans of N tokens to fill (it fixes the length)."""
    length: Optional[int] = None
    """Tokens of the row with a prompt (default: the request's length, else the model's L)."""
    seed: Optional[int] = None
    """This row's own seed (default: :func:`row_seed` of the request's seed and the row's index)."""


@dataclass
class RowsRequest:
    """Rows to generate with one sampler and one set of options, micro-batched ``batch_size`` rows at a time."""

    rows: Sequence[Row]
    """The rows, in the order the results come back."""
    sampler: Optional[str] = None
    """A registry name; None: the model's default."""
    steps: int = 256
    """Reverse steps T."""
    seed: int = 0
    """The seed every row's own seed is derived from (:func:`row_seed`)."""
    length: Optional[int] = None
    """The length of a prompted row that gives none (default: the model's L)."""
    block: Optional[int] = None
    """Tokens per window beyond L (semi-autoregressive masked diffusion; default L/4)."""
    options: Dict[str, Any] = field(default_factory=dict)
    """The sampler's options by name (temperature, top_p, ...)."""
    batch_size: int = 8
    """Rows drawn together (their network calls batched); it changes the speed, never the samples."""
    stop_at_eos: Optional[bool] = None
    """Cut each text at its first generated end-of-text token; None: yes where the tokenizer has one."""

    def check(self, model: SamplingTarget) -> "CheckedRows":
        """Every row checked (a one-row SampleRequest each); a problem is one MaskdiffError naming the row."""
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise MaskdiffError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.rows:
            raise MaskdiffError("no rows to generate; give one or more prompts or templates")
        if self.stop_at_eos and model.eos_id is None:
            raise MaskdiffError("this model's tokenizer has no end-of-text token to stop at (GPT-2 BPE, BERT WordPiece and "
                                "Hugging Face tokenizers with an EOS or SEP token have one); leave out stop_at_eos")
        checked = [self._check_row(i, row, model) for i, row in enumerate(self.rows)]
        stop = model.eos_id is not None if self.stop_at_eos is None else self.stop_at_eos
        eos_id = model.eos_id if stop else None
        if eos_id is not None:
            for c in checked:
                if c.block is not None:
                    c.stop_id = eos_id
        return CheckedRows(checked, self.batch_size, eos_id)

    def _check_row(self, index: int, row: Row, model: SamplingTarget) -> CheckedRequest:
        try:
            if row.prompt is None and row.template is None:
                raise MaskdiffError("give a prompt or a template")
            text = row.prompt if row.prompt is not None else row.template
            if not isinstance(text, str) or not text.strip():
                raise MaskdiffError(f"the {'prompt' if row.prompt is not None else 'template'} is empty; give some text"
                                    + (" (an unconditional sample has no prompt: maskdiff sample without one)" if row.prompt is not None else ""))
            if row.prompt is not None and model.encode(row.prompt).numel() == 0:
                raise MaskdiffError(f"the prompt {row.prompt!r} has no tokens in this model's vocabulary")
            if row.seed is not None and (isinstance(row.seed, bool) or not isinstance(row.seed, int) or not 0 <= row.seed < 2**63):
                raise MaskdiffError(f"seed must be an integer in 0..2^63-1, got {row.seed!r}")
            length = row.length if row.length is not None or row.template is not None else self.length
            seed = row_seed(self.seed, index) if row.seed is None else row.seed
            one = SampleRequest(num=1, sampler=self.sampler, steps=self.steps, seed=seed, length=length, prompt=row.prompt,
                                template=row.template, block=self.block, options=dict(self.options))
            return one.check(model)
        except MaskdiffError as err:
            raise MaskdiffError(f"row {index}: {err}") from None


@dataclass
class CheckedRows:
    """Rows checked against a model: one :class:`CheckedRequest` of one row each."""

    rows: List[CheckedRequest]
    """The rows in input order (num 1, each with its own seed)."""
    batch_size: int
    """Rows drawn together."""
    eos_id: Optional[int] = None
    """The end-of-text token each text is cut at; None: no cut."""

    def batches(self) -> List[List[int]]:
        """Row indices grouped into micro-batches: rows of one total length and one kind of run (one window,
        or semi-autoregressive) together, ``batch_size`` at most, shortest first."""
        order = sorted(range(len(self.rows)), key=lambda i: (self._key(i), i))
        out: List[List[int]] = []
        for i in order:
            if out and len(out[-1]) < self.batch_size and self._key(out[-1][0]) == self._key(i):
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def _key(self, i: int) -> Tuple[int, bool]:
        return self.rows[i].length, self.rows[i].block is not None


def row_seed(seed: int, index: int) -> int:
    """The seed of row ``index`` of a request seeded with ``seed``: the first 63 bits of sha256("seed:index")."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def fixed_end(initial: Sequence[int], mask_id: int) -> int:
    """One past the last fixed (not masked) position of a start state: 0 when everything is generated."""
    last = [i for i, v in enumerate(initial) if v != mask_id]
    return last[-1] + 1 if last else 0


def eos_cut(tokens: Tensor, start: int, eos_id: Optional[int]) -> int:
    """How many of a row's (n,) tokens its text keeps: up to (not including) the first ``eos_id`` at or
    after ``start`` (the end of the fixed tokens); all of them without one."""
    if eos_id is None:
        return int(tokens.numel())
    hits = (tokens[start:] == eos_id).nonzero()
    return start + int(hits[0]) if hits.numel() else int(tokens.numel())


def one_row_generator(request: CheckedRequest, device) -> torch.Generator:
    """The row's generator: seeded with its seed on ``device``, as a one-row request's is (objectives/base.py)."""
    return torch.Generator(device=device).manual_seed(request.seed)
