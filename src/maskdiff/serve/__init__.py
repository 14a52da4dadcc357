"""``maskdiff serve``: a web page to watch and steer generation, with a JSON API beside it.

:mod:`maskdiff.serve.generation` holds the framework-free part (limits, the check of a request, the
queue, one run reporting its steps); :mod:`maskdiff.serve.app` the FastAPI application;
:mod:`maskdiff.serve.schema` the API's types. FastAPI and uvicorn are the ``serve`` extra, imported only
when an application is made.
"""
from maskdiff.serve.generation import Busy, Cancelled, Gate, Limits, plan, run, samplers_of

__all__ = ["Busy", "Cancelled", "Gate", "Limits", "create_app", "plan", "run", "samplers_of", "listen", "serve"]


def create_app(pipe, **kwargs):
    """The FastAPI application for a loaded model: see :func:`maskdiff.serve.app.create_app`."""
    from maskdiff.serve.app import create_app as _create_app

    return _create_app(pipe, **kwargs)


def listen(host: str, port: int):
    """A listening socket on host:port (port 0: any free port), or a MaskdiffError that says why not."""
    import socket

    from maskdiff.errors import MaskdiffError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise MaskdiffError(f"cannot resolve host {host!r} ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise MaskdiffError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app, sock, *, log_level: str = "warning") -> None:
    """Run the application under uvicorn on an already listening socket until Ctrl-C / SIGTERM."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
