"""One generation for the web page and its JSON API, without any web framework: what a request may ask
(:class:`Limits`), the check of a request against the model before any work (:func:`plan`), the bound
on concurrent work (:class:`Gate`: running slots, a waiting queue, "busy" beyond it), and the run
itself (:func:`run`), which reports every step's newly revealed tokens and stops when asked.

A request is a :class:`~maskdiff.sampling.request.SampleRequest`, checked against the model narrowed to
the server's maximum length (:meth:`maskdiff.pipeline.Pipeline.target`) by the same check as every other
request; the run is :meth:`maskdiff.pipeline.Pipeline.run` of it with a ``callback``: the samplers call it with the
(B, L) state after each step (sampling/common.py), so watching a chain changes none of its draws (the
same seed gives the same tokens as ``maskdiff sample``). Stopping raises :class:`Cancelled` from the
callback, between two steps.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.common import Timer
from maskdiff.sampling.request import CheckedRequest, SampleRequest
from maskdiff.sampling.rows import CheckedRows, Row, RowsRequest


@dataclass
class Limits:
    """What one request may ask and how much work runs at once. A request beyond a limit gets a 4xx
    answer that names the limit; a request beyond the queue gets "busy" (HTTP 503)."""

    max_length: int = 0
    """Tokens per sample; 0: the model's training length L (the most it can take; longer is refused)."""
    max_steps: int = 1024
    """Reverse steps T per request."""
    max_samples: int = 8
    """Samples per request."""
    max_running: int = 1
    """Generations that run at the same time (each in its own worker thread)."""
    max_waiting: int = 8
    """Requests that wait for a free slot; one more is answered "busy"."""

    def check(self) -> None:
        for name, value in asdict(self).items():
            low = 0 if name in ("max_length", "max_waiting") else 1
            if not isinstance(value, int) or value < low:
                raise MaskdiffError(f"limit {name} must be an integer >= {low}, got {value!r}")


class Busy(Exception):
    """Every running slot and every waiting place is taken."""


class Cancelled(Exception):
    """The client went away (or asked to stop): the run ends between two steps."""


@dataclass
class Plan:
    """A request checked against the model and the server's limits."""

    request: CheckedRequest
    """What the sampler runs (num, sampler, steps, start state, options)."""

    @property
    def num(self) -> int:
        return self.request.num

    @property
    def sampler(self) -> str:
        return self.request.sampler

    @property
    def steps(self) -> int:
        return self.request.steps

    @property
    def initial(self) -> List[int]:
        """(length,) token ids of one sample's start state, the mask id at the positions to generate."""
        return self.request.initial


@dataclass
class RowsPlan:
    """A many-prompts request checked against the model and the server's limits."""

    rows: CheckedRows
    """Every row checked (one one-row request each)."""
    sampler: str
    """The sampler's registry name."""
    steps: int
    """Reverse steps T."""


def samplers_of(pipe) -> List[str]:
    """The samplers a loaded model can use (the registry's masked-diffusion samplers, or its own)."""
    return list(pipe.target().samplers)


def max_length(pipe, limits: Limits) -> int:
    L = pipe.config.data.length
    return min(L, limits.max_length) if limits.max_length else L


def plan(pipe, request: dict, limits: Limits) -> Plan:
    """Check a request (a dict of the fields of serve.schema.SampleRequest, types already checked) against
    the model and the limits; every problem is a MaskdiffError that says what is allowed."""
    num, steps = request["num"], request["steps"]
    if num > limits.max_samples:
        raise MaskdiffError(f"num {num} is above this server's limit of {limits.max_samples} samples per request")
    if steps > limits.max_steps:
        raise MaskdiffError(f"steps {steps} is above this server's limit of {limits.max_steps}")
    longest = max_length(pipe, limits)
    options = {name: request[name] for name in ("temperature", "top_p") if request[name] != 1.0}
    wanted = SampleRequest(num=num, sampler=request["sampler"], steps=steps, seed=request["seed"], length=request.get("length"),
                           prompt=request.get("prompt"), template=request.get("template"), options=options)
    return Plan(wanted.check(pipe.target(max_length=longest, semi_autoregressive=False, who="this server's")))


def plan_rows(pipe, request: dict, limits: Limits) -> RowsPlan:
    """Check a many-prompts request (the fields of serve.schema.GenerateRequest, types already checked):
    each row a prompt or a template with its own length and seed, at most ``max_samples`` rows."""
    rows, steps = request["rows"], request["steps"]
    if len(rows) > limits.max_samples:
        raise MaskdiffError(f"{len(rows)} rows is above this server's limit of {limits.max_samples} rows (samples) per request")
    if steps > limits.max_steps:
        raise MaskdiffError(f"steps {steps} is above this server's limit of {limits.max_steps}")
    options = {name: request[name] for name in ("temperature", "top_p") if request[name] != 1.0}
    wanted = RowsRequest([Row(**row) for row in rows], sampler=request["sampler"], steps=steps, seed=request["seed"], options=options,
                         batch_size=request["batch_size"], stop_at_eos=request.get("stop_at_eos"))
    checked = wanted.check(pipe.target(max_length=max_length(pipe, limits), semi_autoregressive=False, who="this server's"))
    return RowsPlan(checked, checked.rows[0].sampler, steps)


class Gate:
    """At most ``running`` generations at once and ``waiting`` requests queued for a slot (first come,
    first served); :meth:`enter` raises :class:`Busy` beyond that. Lives on one event loop."""

    def __init__(self, running: int, waiting: int):
        self.max_running, self.max_waiting = running, waiting
        self.running = self.waiting = 0
        self._slots: Optional[asyncio.Semaphore] = None
        self.counts: Dict[str, int] = {"served": 0, "busy": 0, "cancelled": 0, "failed": 0}

    def enter(self) -> "Ticket":
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            self.counts["busy"] += 1
            raise Busy(f"busy: {self.running} generation(s) running and {self.waiting} waiting, the most this server "
                       f"takes ({self.max_running} running, {self.max_waiting} waiting); retry later")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_running)
        self.waiting += 1
        return Ticket(self)

    def status(self) -> dict:
        return dict(running=self.running, waiting=self.waiting, max_running=self.max_running,
                    max_waiting=self.max_waiting, **self.counts)


class Ticket:
    """A place in the gate: waiting, then running, then released (once, whatever happens)."""

    def __init__(self, gate: Gate):
        self.gate, self.state = gate, "waiting"

    async def turn(self) -> None:
        """Wait for a running slot (cancellable: a cancelled wait leaves the queue)."""
        await self.gate._slots.acquire()
        self.gate.waiting -= 1
        self.gate.running += 1
        self.state = "running"

    def release(self) -> None:
        if self.state == "waiting":
            self.gate.waiting -= 1
        elif self.state == "running":
            self.gate.running -= 1
            self.gate._slots.release()
        self.state = "released"


class RevealTracker:
    """The sampler callback: after each step, the positions unmasked since the previous one, as an event
    ``{"type": "step", "step": k, "reveal": [[sample, position, text], ...]}`` (steps that reveal nothing
    send none); the step at which each position was revealed (0: fixed); raises Cancelled once ``stop``
    is set."""

    def __init__(self, initial: torch.Tensor, decode: Callable[[int], str], mask_id: int,
                 emit: Callable[[dict], None], stop: threading.Event):
        self.previous = initial.clone()  # (B, L) on the CPU
        self.revealed_at = torch.zeros(initial.shape, dtype=torch.long)
        self.decode, self.mask_id, self.emit, self.stop = decode, mask_id, emit, stop
        self.step = 0

    def __call__(self, x: torch.Tensor) -> None:
        self.step += 1
        if self.stop.is_set():
            raise Cancelled()
        x = x.cpu()
        new = (self.previous == self.mask_id) & (x != self.mask_id)  # (B, L)
        if bool(new.any()):
            self.revealed_at[new] = self.step
            where = new.nonzero().tolist()
            self.emit({"type": "step", "step": self.step,
                       "reveal": [[b, p, self.decode(int(x[b, p]))] for b, p in where]})
        self.previous = x.clone()


@dataclass
class TokenText:
    """The text of one token id, decoded once."""

    tokenizer: object
    cache: Dict[int, str] = field(default_factory=dict)

    def __call__(self, i: int) -> str:
        if i not in self.cache:
            self.cache[i] = self.tokenizer.decode([i])
        return self.cache[i]


def run(pipe, the_plan: Plan, emit: Callable[[dict], None], stop: threading.Event, text: Optional[TokenText] = None) -> dict:
    """Generate (blocking; meant for a worker thread). Emits a "start" event with the fixed tokens, one
    "step" event per step that revealed something, and returns the "done" event: texts, NFE per sample,
    seconds, the step at which every position was revealed, and the number of steps taken."""
    text = text or TokenText(pipe.tokenizer)
    mask_id = pipe.tokenizer.mask_id
    initial = torch.tensor(the_plan.initial, dtype=torch.long)[None].repeat(the_plan.num, 1)
    emit({"type": "start", "num": the_plan.num, "length": len(the_plan.initial), "sampler": the_plan.sampler,
          "steps": the_plan.steps, "initial": [None if i == mask_id else text(i) for i in the_plan.initial]})
    tracker = RevealTracker(initial, text, mask_id, emit, stop)
    out = pipe.run(the_plan.request, callback=tracker)
    tokens = out.tokens
    return {"type": "done", "texts": out.texts, "tokens": tokens.tolist(), "nfe": out.nfe.tolist(),
            "seconds": out.seconds, "steps_taken": tracker.step, "revealed_at": tracker.revealed_at.tolist(),
            "sampler": the_plan.sampler, "steps": the_plan.steps}


def run_rows(pipe, the_plan: RowsPlan, emit: Callable[[dict], None], stop: threading.Event) -> dict:
    """Generate every row of a many-prompts plan (blocking; meant for a worker thread). Emits "start"
    (rows), one "row" event per row as its micro-batch finishes, and returns the "done" event with every
    row in input order; raises Cancelled at the next step once ``stop`` is set."""
    def check_stop(_x) -> None:
        if stop.is_set():
            raise Cancelled()

    emit({"type": "start", "rows": len(the_plan.rows.rows), "sampler": the_plan.sampler, "steps": the_plan.steps})
    with Timer() as timer:
        results = pipe.run_rows(the_plan.rows, on_row=lambda r: emit(dict(_row_answer(r), type="row")), callback=check_stop)
    return {"type": "done", "rows": [_row_answer(r) for r in results], "sampler": the_plan.sampler, "steps": the_plan.steps,
            "seconds": timer.seconds}


def _row_answer(result) -> dict:
    return dict(index=result.index, text=result.text, tokens=result.tokens, network_calls=result.network_calls,
                seconds=result.seconds, eos=result.eos, seed=result.seed)
