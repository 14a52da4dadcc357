"""The ``maskdiff serve`` command: a web page to watch and steer generation (maskdiff.serve)."""
from __future__ import annotations

from pathlib import Path

from maskdiff.cli.args import device_arg, load_run, nonneg_int, positive_int
from maskdiff.cli.sample import add_runtime_flags, runtime_note
from maskdiff.errors import MaskdiffError

DESCRIPTION = """\
Serve a trained model on a web page: type a prompt or a template with [N] spans to fill, choose the
sampler, steps, temperature / top-p and the number of samples, and watch the unmasking step by step,
each token coloured by the step that revealed it, with the network calls (NFE) and the wall-clock; or
tick "one per line" to send several prompts or templates at once and see each row's text as it finishes.
A JSON API sits beside the page: POST /sample, POST /sample/stream (server-sent events), GET /model,
GET /status; its schema is GET /openapi.json (docs/serve.md).

Work is bounded: requests beyond --max-length / --max-steps / --max-samples get a 422 with a message;
--max-running generations run at once and --max-waiting more wait, beyond which the answer is 503
"busy". A browser that disconnects stops its generation.
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("serve", help="a web page to watch and steer generation (and a JSON API)", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_OR_MODEL", help="a run directory (anything maskdiff.load reads)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=nonneg_int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--max-length", type=nonneg_int, default=0, help="tokens per sample (default 0: the model's training length L)")
    p.add_argument("--max-steps", type=positive_int, default=1024, help="reverse steps per request (default: 1024)")
    p.add_argument("--max-samples", type=positive_int, default=8, help="samples per request (default: 8)")
    p.add_argument("--max-running", type=positive_int, default=1, help="generations running at once (default: 1)")
    p.add_argument("--max-waiting", type=nonneg_int, default=8, help="requests waiting for a slot before the answer is 'busy' (default: 8)")
    device_arg(p)
    p.add_argument("--checkpoint", type=Path, help="a checkpoint directory (default: the run's newest valid one)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of their EMA")
    add_runtime_flags(p)
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: warning; info logs every request)")


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MaskdiffError("maskdiff serve needs FastAPI and uvicorn: pip install -e '.[serve]'") from None
    from maskdiff.serve import Limits, create_app, listen, serve

    limits = Limits(max_length=args.max_length, max_steps=args.max_steps, max_samples=args.max_samples,
                    max_running=args.max_running, max_waiting=args.max_waiting)
    limits.check()
    sock = listen(args.host, args.port)  # fail on a taken port before loading anything
    try:
        pipe = load_run(args)
        pipe.set_runtime(args.precision, args.compile)
        app = create_app(pipe, run=str(args.run_dir), limits=limits)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"serving {args.run_dir} ({pipe.kind}, step {pipe.step}{runtime_note(args)}) at http://{shown}:{port}/  (Ctrl-C stops)", flush=True)
        try:
            serve(app, sock, log_level=args.log_level)
        except KeyboardInterrupt:  # uvicorn shuts down gracefully, then passes Ctrl-C on: the normal way to stop
            print("stopped", flush=True)
    finally:
        sock.close()
    return 0
