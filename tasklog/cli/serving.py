"""``tasklog serve``: the HTTP API and dashboard (SPEC §7) on uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated

import typer

from .app import CLIError, state

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "KEEP_ALIVE", "is_loopback", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
KEEP_ALIVE = 30
"""Seconds an idle HTTP connection is kept open."""


def is_loopback(host: str) -> bool:
    """Whether *host* names this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on *host*:*port* (a clear error when that is not possible)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        msg = f"Cannot listen on {host}:{port}: {err.strerror or err}."
        raise CLIError(msg) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        msg = f"Cannot listen on {host}:{port}: {err.strerror or err}."
        raise CLIError(msg) from None
    sock.set_inheritable(True)
    return sock


def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", metavar="H", help="Address to listen on.")
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option("--port", "-p", metavar="P", min=0, max=65535, help="TCP port.")
    ] = DEFAULT_PORT,
    auth: Annotated[
        str | None,
        typer.Option(
            "--auth",
            metavar="USER:PASSWORD",
            envvar="TASKLOG_AUTH",
            show_envvar=True,
            help="HTTP Basic credentials required on every page and endpoint.",
        ),
    ] = None,
    allow_admin: Annotated[
        bool,
        typer.Option(
            "--allow-admin",
            help="Add the endpoints that write (prune, mark-crashed, clear); needs --auth.",
        ),
    ] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request on stderr.")
    ] = False,
) -> None:
    """Serve the HTTP API, the dashboard and /metrics (needs tasklog[web]).

    Binds 127.0.0.1:8765 by default. The store may be down when it starts:
    /healthz answers 503 until it can be read.
    """
    try:
        import uvicorn

        from ..web import create_app
    except ImportError:
        msg = "tasklog serve needs the web extra: pip install 'tasklog[web]'."
        raise CLIError(msg) from None
    if allow_admin and not auth:
        msg = "--allow-admin needs --auth: the endpoints that write are never open to everyone."
        raise CLIError(msg)
    current = state(ctx)
    try:
        app = create_app(
            current.url, table=current.table, auth=auth, allow_admin=allow_admin
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    if not is_loopback(host) and not auth:
        typer.echo(
            f"tasklog: warning: serving on {host}, beyond this machine, without --auth: "
            "anyone who can reach it can read the task history.",
            err=True,
        )
    sock = _listen(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    typer.echo(
        f"tasklog: serving {current.url} on http://{shown}:{bound[1]}/ (Ctrl-C to stop)",
        err=True,
    )
    health = None
    try:
        app.state.store.get()
    except Exception as err:
        health = str(err)
    if health is not None:
        typer.echo(f"tasklog: warning: {health}; /healthz answers 503 until it can.", err=True)
    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=3,
        # an idle connection stays open 30 s (uvicorn's default is 5 s): a
        # dashboard or a proxy polling every few seconds keeps reusing it, and
        # a request sent as the server closes an idle connection is rarer
        timeout_keep_alive=KEEP_ALIVE,
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
