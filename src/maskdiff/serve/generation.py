"""One generation for the web page and its JSON API, without any web framework: what a request may ask
(:class:`Limits`), the check of a request against the model before any work (:func:`plan`), the bound
on concurrent work (:class:`Gate`: running slots, a waiting queue, "busy" beyond it), and the run
itself (:func:`run`), which reports every step's newly revealed tokens and stops when asked.

The run is :meth:`maskdiff.pipeline.Pipeline.sample` with a ``callback``: the samplers call it with the
(B, L) state after each step (sampling/common.py), so watching a chain changes none of its draws (the
same seed gives the same tokens as ``maskdiff sample``). Stopping raises :class:`Cancelled` from the
callback, between two steps.
"""
from __future__ import annotations

import asyncio
import inspect
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from maskdiff.errors import MaskdiffError

SPAN = re.compile(r"\[(\d+)\]")  # a template's masked span, as Pipeline.template_ids reads it


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
    """A checked request: the arguments of Pipeline.sample and the start state of one sample."""

    num: int
    sample_kwargs: dict
    initial: List[int]  # (length,) token ids, the mask id at the positions to generate
    sampler: str
    steps: int


def samplers_of(pipe) -> List[str]:
    """The samplers a loaded model can use: every sampler of the library's registry for masked diffusion
    (and SEDD, which samples as masked diffusion), the objective's own sampler otherwise."""
    if pipe.objective.samples_with is not None:
        return [pipe.objective.samples_with]
    from maskdiff.sampling import SAMPLERS

    return list(SAMPLERS)


def _sampler_function(pipe, name: str):
    if pipe.objective.samples_with is not None:
        import maskdiff.sampling as sampling

        return getattr(sampling, f"{name.replace('-', '_')}_sample", None)
    from maskdiff.sampling import get_sampler

    return get_sampler(name)


def _takes(fn, name: str) -> bool:
    """Whether a sampler function accepts the keyword ``name`` (a ``**kwargs`` wrapper is given the benefit)."""
    if fn is None:
        return False
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def max_length(pipe, limits: Limits) -> int:
    L = pipe.config.data.length
    return min(L, limits.max_length) if limits.max_length else L


def plan(pipe, request: dict, limits: Limits) -> Plan:
    """Check a request (a dict of the fields of serve.schema.SampleRequest, types already checked) against
    the model and the limits; every problem is a MaskdiffError that says what is allowed."""
    names = samplers_of(pipe)
    sampler = request["sampler"]
    if sampler not in names:
        raise MaskdiffError(f"unknown sampler {sampler!r}; choose one of: {', '.join(names)}")
    num, steps = request["num"], request["steps"]
    if num > limits.max_samples:
        raise MaskdiffError(f"num {num} is above this server's limit of {limits.max_samples} samples per request")
    if steps > limits.max_steps:
        raise MaskdiffError(f"steps {steps} is above this server's limit of {limits.max_steps}")
    longest = max_length(pipe, limits)
    prompt, template, length = request.get("prompt"), request.get("template"), request.get("length")
    mask_id = pipe.tokenizer.mask_id
    kwargs: dict = dict(steps=steps, sampler=sampler, seed=request["seed"])
    if prompt is not None and template is not None:
        raise MaskdiffError("give either a prompt or a template, not both")
    if template is not None:
        if length is not None:
            raise MaskdiffError("the template fixes the length (its text plus its [N] spans); leave out length")
        spans = [int(m.group(1)) for m in SPAN.finditer(template)]
        if any(n == 0 for n in spans):
            raise MaskdiffError("a template span [0] fills nothing; write [N] with N >= 1")
        if sum(spans) > longest:  # checked before anything of that size is made
            raise MaskdiffError(f"the template's spans ask for {sum(spans)} tokens, more than this server's maximum length {longest}")
        ids = pipe.template_ids(template)
        if ids.numel() > longest:
            raise MaskdiffError(f"the template is {ids.numel()} tokens long, more than this server's maximum length {longest}")
        initial = ids.tolist()
        kwargs["template"] = template
    else:
        length = longest if length is None else length
        if length > longest:
            raise MaskdiffError(f"length {length} is above this server's maximum length {longest} (the model's L is {pipe.config.data.length})")
        prefix = pipe.tokenizer.encode(prompt).tolist() if prompt else []
        if len(prefix) >= length:
            raise MaskdiffError(f"the prompt has {len(prefix)} tokens; the sample length {length} leaves nothing to generate")
        initial = prefix + [mask_id] * (length - len(prefix))
        kwargs.update(length=length, prompt=prompt or None)
    for name in ("temperature", "top_p"):
        value = request[name]
        if value != 1.0:
            if not _takes(_sampler_function(pipe, sampler), name):
                raise MaskdiffError(f"the {sampler} sampler takes no {name}; leave it at 1")
            kwargs[name] = value
    return Plan(num=num, sample_kwargs=kwargs, initial=initial, sampler=sampler, steps=steps)


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
    out = pipe.sample(the_plan.num, callback=tracker, **the_plan.sample_kwargs)
    tokens = out.tokens
    return {"type": "done", "texts": out.texts, "tokens": tokens.tolist(), "nfe": out.nfe.tolist(),
            "seconds": out.seconds, "steps_taken": tracker.step, "revealed_at": tracker.revealed_at.tolist(),
            "sampler": the_plan.sampler, "steps": the_plan.steps}
