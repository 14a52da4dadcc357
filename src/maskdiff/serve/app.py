"""The web application of ``maskdiff serve`` (FastAPI under uvicorn): one page and a JSON API beside it.

    GET  /               the page: template or prompt, sampler, steps, temperature / top-p, samples;
                         the unmasking drawn live, tokens coloured by the step that revealed them
    GET  /model          the model, its samplers and the server's limits (ModelAnswer)
    GET  /status         generations running and waiting; served, busy, cancelled and failed counts
    POST /sample         SampleRequest -> SampleAnswer (JSON), when the generation is finished
    POST /sample/stream  SampleRequest -> server-sent events: queued, start, step..., then done (or error)
    POST /generate       GenerateRequest (many prompts, each its own length) -> GenerateAnswer, rows in order
    POST /generate/stream  GenerateRequest -> server-sent events: queued, start, row... (as rows finish), done
    GET  /openapi.json   the schema of all of the above

Bad requests get 422 with ``{"error": message}``, a full queue 503 "busy" (``Retry-After: 1``); nothing
answers with a traceback. A client that disconnects stops its generation at the next step, whether it
waits in the queue, streams, or waits for a JSON answer.
"""
import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Optional

from maskdiff.errors import MaskdiffError
from maskdiff.serve.generation import Busy, Cancelled, Gate, Limits, Plan, RowsPlan, TokenText, max_length, plan, plan_rows, run_rows
from maskdiff.serve.generation import samplers_of
from maskdiff.serve.generation import run as run_generation
from maskdiff.serve.schema import ErrorAnswer, GenerateAnswer, GenerateRequest, ModelAnswer, SampleAnswer, SampleRequest

log = logging.getLogger("maskdiff.serve")
POLL_S = 0.2  # how often a waiting JSON request checks that its client is still there


def describe(pipe, run: str, limits: Limits) -> dict:
    """GET /model: what is loaded, in words and in fields."""
    from maskdiff.visualize import MASK_GLYPH

    cfg = pipe.config
    params = sum(p.numel() for _, p in pipe.objective.named_parameters())
    names = samplers_of(pipe)
    default = pipe.target().default_sampler
    words = (f"{pipe.kind} model of {cfg.data.corpus} ({cfg.data.modality}), {params / 1e6:.2f}M parameters "
             f"({cfg.model.depth} x {cfg.model.width}, {cfg.model.heads} heads), L = {cfg.data.length}, "
             f"{pipe.tokenizer.vocab_size} tokens, {cfg.diffusion.schedule} schedule, {pipe.weights} weights of step {pipe.step}")
    limit_values = dict(max_length=max_length(pipe, limits), max_steps=limits.max_steps, max_samples=limits.max_samples,
                        max_running=limits.max_running, max_waiting=limits.max_waiting)
    return dict(description=words, run=run, objective=pipe.kind, modality=cfg.data.modality,
                vocab_size=pipe.tokenizer.vocab_size, length=cfg.data.length, schedule=cfg.diffusion.schedule,
                parameters=params, checkpoint_step=pipe.step, weights=getattr(pipe, "weights", "model"), device=str(pipe.device),
                samplers=names, default_sampler=default, limits=limit_values, mask_glyph=MASK_GLYPH)


def _validation_message(errors) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "body"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], (dict, list)) else ""
        parts.append(f"{where}: {e.get('msg', 'invalid')}{got}")
    return "invalid request: " + "; ".join(parts)


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def create_app(pipe, *, run: str = "", limits: Optional[Limits] = None):
    """The application for a loaded model (:func:`maskdiff.load`). Serve it with uvicorn.

    (This module has no ``from __future__ import annotations``: FastAPI reads the endpoints' parameter
    types, imported lazily here, at definition time.)"""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    from maskdiff.modalities import get_modality

    limits = limits or Limits()
    limits.check()
    if get_modality(pipe.config).renders_images:
        raise MaskdiffError("maskdiff serve shows token sequences (text, DNA); an image run draws its samples with maskdiff sample")
    gate = Gate(limits.max_running, limits.max_waiting)
    pool = ThreadPoolExecutor(max_workers=limits.max_running, thread_name_prefix="maskdiff-generate")
    text = TokenText(pipe.tokenizer)
    model = describe(pipe, run, limits)
    page = resources.files("maskdiff.serve").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="maskdiff serve", version="1", description=__doc__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.gate = gate

    def refuse(status: int, message: str, **headers):
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return refuse(422, _validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(_request, exc: HTTPException):
        return refuse(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_request, exc: Exception):  # a bug: logged here, never sent to the client
        log.exception("internal error")
        return refuse(500, f"internal error ({type(exc).__name__}); the server log has the details")

    def start(ticket, the_plan, emit, stop: threading.Event) -> asyncio.Future:
        """Run the plan (a Plan or a RowsPlan) in a worker thread; the slot is freed when the thread is done, not before."""

        def work():
            try:
                if isinstance(the_plan, RowsPlan):
                    return run_rows(pipe, the_plan, emit, stop)
                return run_generation(pipe, the_plan, emit, stop, text)
            except Cancelled:
                return {"type": "cancelled"}
            except MaskdiffError as err:
                return {"type": "error", "error": str(err)}
            except Exception as err:  # a bug: logged, answered without a traceback
                log.exception("generation failed")
                return {"type": "error", "error": f"internal error ({type(err).__name__}); the server log has the details", "internal": True}

        future = asyncio.get_running_loop().run_in_executor(pool, work)

        def finished(f):
            ticket.release()
            kind = f.result()["type"] if not f.cancelled() and f.exception() is None else "error"
            gate.counts[{"done": "served", "cancelled": "cancelled"}.get(kind, "failed")] += 1

        future.add_done_callback(finished)
        return future

    def checked(req, planner=plan):
        try:
            return planner(pipe, req.model_dump(), limits), None
        except MaskdiffError as err:
            return None, refuse(422, str(err))

    def enter():
        try:
            return gate.enter(), None
        except Busy as err:
            return None, refuse(503, str(err), **{"Retry-After": "1"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return page

    @app.get("/model", response_model=ModelAnswer)
    async def get_model():
        return model

    @app.get("/status")
    async def get_status():
        return gate.status()

    @app.post("/sample", response_model=SampleAnswer,
              responses={422: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}})
    async def sample(req: SampleRequest, request: Request):
        return await answer(checked(req), request)

    @app.post("/generate", response_model=GenerateAnswer,
              responses={422: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}})
    async def generate(req: GenerateRequest, request: Request):
        """Many prompts or templates, each its own length: every row's answer, in the request's order."""
        return await answer(checked(req, plan_rows), request)

    async def answer(planned, request: Request):
        """The JSON answer of a plan (or its refusal) once the generation is finished."""
        the_plan, refusal = planned
        if refusal is None:
            ticket, refusal = enter()
        if refusal is not None:
            return refusal
        stop = threading.Event()
        started = False
        try:
            turn = asyncio.ensure_future(ticket.turn())
            if not await _wait_unless_gone(request, turn, turn.cancel):
                return refuse(499, "the client went away while waiting")
            future = start(ticket, the_plan, lambda event: None, stop)
            started = True
            await _wait_unless_gone(request, future, stop.set)
            result = await future
        finally:
            if not started:  # still queued, or given a slot just as the client left
                ticket.release()
        if result["type"] == "done":
            return result
        if result["type"] == "cancelled":
            return refuse(499, "the client went away; the generation was stopped")
        return refuse(500 if result.get("internal") else 422, result["error"])

    @app.post("/sample/stream", responses={200: {"content": {"text/event-stream": {}}, "description": "queued, start, step..., done | error"},
                                           422: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}})
    async def sample_stream(req: SampleRequest):
        """Server-sent events, each ``data`` a JSON object with a ``type``: ``queued`` (position: its place in
        the queue, 1 = next), ``start``
        (num, length, the fixed tokens: ``initial``, null where masked), ``step`` (step, ``reveal``: [sample,
        position, text] of the tokens unmasked at that step), then ``done`` (as POST /sample) or ``error``."""
        return stream_answer(checked(req))

    @app.post("/generate/stream", responses={200: {"content": {"text/event-stream": {}}, "description": "queued, start, row..., done | error"},
                                             422: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}})
    async def generate_stream(req: GenerateRequest):
        """Server-sent events: ``queued``, ``start`` (rows, sampler, steps), one ``row`` per row as its micro-batch
        finishes (as in POST /generate's rows, in the order they finish), then ``done`` (as POST /generate) or ``error``."""
        return stream_answer(checked(req, plan_rows))

    def stream_answer(planned):
        """The server-sent events of a plan (or its refusal)."""
        the_plan, refusal = planned
        if refusal is None:
            ticket, refusal = enter()
        if refusal is not None:
            return refusal
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(event):  # from the worker thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        async def stream():
            try:
                if gate.running >= gate.max_running:
                    yield _sse({"type": "queued", "position": gate.waiting})
                await ticket.turn()
                future = start(ticket, the_plan, emit, stop)
                future.add_done_callback(lambda f: events.put_nowait(f.result()) if not f.cancelled() and f.exception() is None
                                         else events.put_nowait({"type": "error", "error": "internal error"}))
                while True:
                    event = await events.get()
                    yield _sse(event)
                    if event["type"] in ("done", "error", "cancelled"):
                        break
            finally:  # also when the client disconnects (the response task is cancelled)
                stop.set()
                if ticket.state == "waiting":
                    ticket.release()

        return _TicketStream(stream(), ticket, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    class _TicketStream(StreamingResponse):
        """A stream that frees its queue place even when its body never starts (the client left first)."""

        def __init__(self, content, ticket, **kwargs):
            super().__init__(content, **kwargs)
            self.ticket = ticket

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                if self.ticket.state == "waiting":
                    self.ticket.release()

    return app


async def _wait_unless_gone(request, awaitable: asyncio.Future, on_gone) -> bool:
    """Await ``awaitable`` while checking that the client is still connected; when it is gone call
    ``on_gone`` (stop the run, or leave the queue) and return False once ``awaitable`` has settled."""
    while True:
        done, _ = await asyncio.wait({awaitable}, timeout=POLL_S)
        if done:
            return True
        if await request.is_disconnected():
            on_gone()
            try:
                await awaitable
            except (asyncio.CancelledError, Cancelled):
                pass
            return False
