"""Micro-batches of rows that keep each row's own randomness: every row runs its own one-row sampler with
its own generator (sampling/rows.py), in a thread of its own, and the rows' network calls are gathered
and made as one batched call.

Why threads: every sampler draws the noise of a whole batch from one generator, so rows sampled as one
batch depend on each other's draws. Here each row is a one-row chain, exactly as if it were sampled
alone; only the network calls are shared (:class:`SharedCalls`): a call waits until every row still
running has made its next call (or finished), then one call on the stacked inputs answers them all.
So a row's tokens do not depend on ``batch_size`` nor on the other rows, as long as the network gives
a row the same output in a batch as alone (true of maskdiff's networks on the CPU, which the tests
check; a GPU's batched kernels may round differently, which can change a draw that falls on a
rounding boundary).

The plain ``denoise(x, t, **kwargs)`` and ``denoise.masked_log_probs(x, t, masked, **kwargs)`` are
shared; other calls (a key-value cache's prefill, for example) go to the network directly, per row.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.request import CheckedRequest, draw
from maskdiff.sampling.rows import CheckedRows, one_row_generator


class _Call:
    """One row's pending network call: ``denoise(x, t, **kwargs)``, or ``denoise.masked_log_probs(x, t, masked,
    **kwargs)`` when ``masked`` is given."""

    def __init__(self, x, t, kwargs, masked=None):
        self.x, self.t, self.kwargs, self.masked = x, t, kwargs, masked
        self.out = self.error = None
        self.done = False


class SharedCalls:
    """The network calls of ``rows`` concurrent one-row chains, made together (see the module docstring)."""

    def __init__(self, denoise, rows: int):
        self.denoise = denoise
        self.active = rows
        self.pending: List[_Call] = []
        self.lock = threading.Condition()
        self.calls = 0
        """Batched network calls made."""

    def row_view(self) -> "RowDenoiser":
        return RowDenoiser(self)

    def call(self, x, t, kwargs, masked=None):
        pending = _Call(x, t, kwargs, masked)
        with self.lock:
            self.pending.append(pending)
            self._run_if_all_waiting()
            while not pending.done:
                self.lock.wait()
        if pending.error is not None:
            raise pending.error
        return pending.out

    def leave(self) -> None:
        """A row is finished (or failed): the others no longer wait for it."""
        with self.lock:
            self.active -= 1
            self._run_if_all_waiting()

    def _run_if_all_waiting(self) -> None:
        if not self.pending or len(self.pending) < self.active:
            return
        calls, self.pending = self.pending, []
        groups: Dict[Tuple, List[_Call]] = {}
        for c in calls:  # inputs that stack: the same shape past the batch axis, the same keywords
            key = (tuple(c.x.shape[1:]), c.x.device, tuple(sorted(c.kwargs)), c.masked is None)
            groups.setdefault(key, []).append(c)
        for group in groups.values():
            try:
                kwargs = {k: torch.cat([c.kwargs[k] for c in group]) for k in group[0].kwargs}
                x, t = torch.cat([c.x for c in group]), torch.cat([c.t for c in group])
                if group[0].masked is None:
                    out, sizes = self.denoise(x, t, **kwargs), [c.x.shape[0] for c in group]
                else:  # (N, V) at the masked positions in row-major order: each call's rows stay together
                    masked = torch.cat([c.masked for c in group])
                    out, sizes = self.denoise.masked_log_probs(x, t, masked, **kwargs), [int(c.masked.sum()) for c in group]
                self.calls += 1
                for c, part in zip(group, out.split(sizes)):
                    c.out = part
            except BaseException as err:  # every row of the group sees the failure
                for c in group:
                    c.error = err
        for c in calls:
            c.done = True
        self.lock.notify_all()


class RowDenoiser:
    """What one row's sampler sees: the denoiser, with its plain calls shared with the other rows."""

    def __init__(self, shared: SharedCalls):
        self._shared = shared

    def __call__(self, x, t, **kwargs):
        return self._shared.call(x, t, kwargs)

    def __getattr__(self, name):  # vocab_size, time_independent, block methods...: the denoiser's own
        value = getattr(self._shared.denoise, name)
        if name == "masked_log_probs" and callable(value):  # shared too (first-hitting calls it)
            return lambda x, t, masked, **kwargs: self._shared.call(x, t, kwargs, masked)
        return value


def draw_rows(denoise, schedule, checked: CheckedRows, *, device=None, on_row: Optional[Callable[[int, SampleOutput], None]] = None,
              callback=None) -> List[SampleOutput]:
    """Draw every row of ``checked`` with a masked-diffusion sampler of the registry on ``denoise``, one
    micro-batch after another; ``on_row(index, output)`` for each row once its micro-batch is done; ``callback`` receives each
    row's (1, n) state after every step (and may raise to stop). Outputs in input order, tokens on the CPU."""
    outs: List[Optional[SampleOutput]] = [None] * len(checked.rows)

    def one(i: int, view) -> None:
        request = checked.rows[i]
        with torch.no_grad():
            out = draw(view, schedule, request, generator=one_row_generator(request, device), device=device, callback=callback)
        out.tokens = out.tokens.cpu()
        outs[i] = out

    for batch in checked.batches():
        if len(batch) == 1:
            one(batch[0], denoise)
        else:
            run_together(denoise, batch, one)
        for i in batch:  # from this thread, once the micro-batch is done
            if on_row is not None:
                on_row(i, outs[i])
    return outs  # type: ignore[return-value]


def run_together(denoise, indices: Sequence[int], one: Callable[[int, object], None]) -> None:
    """Run ``one(index, row_denoiser)`` for every index in threads whose network calls are shared; the first
    error of any row is raised once all have stopped."""
    shared = SharedCalls(denoise, len(indices))
    errors: List[BaseException] = []

    def work(i: int) -> None:
        with torch.no_grad():  # grad mode is per thread: the shared call may run from this thread's leave()
            try:
                one(i, shared.row_view())
            except BaseException as err:
                errors.append(err)
            finally:
                shared.leave()

    threads = [threading.Thread(target=work, args=(i,), name=f"maskdiff-row-{i}", daemon=True) for i in indices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
