"""The ASGI application: routes, error handling, authentication."""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..repos import Repository
from ..stats import mark_crashed, stats, task_stats
from . import _executions, _read
from ._auth import BasicAuth, parse_credentials
from ._events import Feed
from ._metrics import make_registry, metrics_text
from ._params import MAX_LIMIT, BadRequest, NotFound, Params
from ._read import CLOSING_ACTIONS, LOST, RUNNING
from ._render import JSON, error
from ._store import Store, describe_error, is_unavailable

__all__ = ["create_app"]

log = logging.getLogger("tasklog.web")

STATIC = Path(__file__).parent / "static"
_STATUSES = (*CLOSING_ACTIONS, RUNNING, LOST)
_PAGES = ("/", "/task", "/run", "/errors")
_MAX_BUCKETS = 2000

Endpoint = Callable[[Request], Response]


def _guarded(func: Callable[[Request, Any], Response]) -> Endpoint:
    """A sync endpoint (run in the threadpool) whose errors become JSON 400/404/503.

    Anything unexpected is logged and answered with a 500 that carries no
    traceback.
    """

    @functools.wraps(func)
    def endpoint(request: Request) -> Response:
        store: Store = request.app.state.store
        try:
            try:
                return func(request, store.get())
            except Exception as err:
                if not getattr(err, "connection_invalidated", False):
                    raise
                # a pooled connection died with the server: the pool is renewed, try once more
                return func(request, store.get())
        except BadRequest as err:
            return error(400, str(err))
        except NotFound as err:
            return error(404, str(err.args[0] if err.args else err))
        except Exception as err:
            if is_unavailable(err):
                return error(503, describe_error(err))
            if isinstance(err, (ValueError, TypeError, OverflowError)) or _bad_value(err):
                return error(400, describe_error(err))
            log.exception("tasklog.web: %s %s failed", request.method, request.url.path)
            return error(500, f"Internal error ({type(err).__name__}); see the server's log.")

    return endpoint


def _bad_value(err: BaseException) -> bool:
    """A database refused a value from the request (out of range, not a number)."""
    import sqlalchemy.exc as sa_exc

    return isinstance(err, sa_exc.DataError) or (
        isinstance(err, sa_exc.StatementError) and isinstance(err.orig, OverflowError)
    )


def _limit(params: Params, default: int = 100) -> int:
    return params.integer("limit", default, low=1, high=MAX_LIMIT)


def _statuses(params: Params) -> list[str] | None:
    found = params.texts("status")
    if found is None:
        return None
    for status in found:
        if status not in _STATUSES:
            msg = f"Invalid status {status!r}; valid: {', '.join(_STATUSES)}."
            raise BadRequest(msg)
    return found


# ------------------------------------------------------------------ reads


@_guarded
def api_tasks(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/tasks``: each task's last action and time."""
    Params(request.query_params, ())
    return JSON([
        {
            "task_name": r.task_name,
            "last_action": str(r.action),
            "last_created": _read.iso_timestamp(r.created),
        }
        for r in _read.latest_per_task(repo)
    ])


@_guarded
def api_overview(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/overview``: what the dashboard's first page shows, in one call."""
    params = Params(request.query_params, ("since", "runs"))
    since = params.moment("since")
    n = params.integer("runs", 20, low=1, high=100)
    figures = task_stats(repo, since=since)
    latest = _read.latest_per_task(repo)
    recent = _read.recent_runs(repo, [str(r.task_name) for r in latest], n)
    tasks = []
    for r in latest:
        runs = recent[str(r.task_name)]
        found = figures.get(r.task_name)
        tasks.append({
            "task_name": r.task_name,
            "last_action": str(r.action),
            "last_created": _read.iso_timestamp(r.created),
            "stats": None if found is None else found.as_json(),
            "recent": [run.as_json() for run in runs],
        })
    return JSON({"tasks": tasks})


@_guarded
def api_runs(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/runs``: runs newest first, a page at a time."""
    params = Params(request.query_params, ("task", "status", "since", "until", "limit", "before"))
    runs, cursor = _read.list_runs(
        repo,
        task_name=params.names("task"),
        outcome=_statuses(params),
        since=params.moment("since"),
        until=params.moment("until"),
        limit=_limit(params),
        before=params.text("before"),
    )
    return JSON({"runs": [run.as_json() for run in runs], "next": cursor})


_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


@_guarded
def api_run(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/runs/{run_id}``: the run and its records (``?format=text``: its log)."""
    params = Params(request.query_params, ("format",))
    fmt = params.text("format") or "json"
    if fmt not in ("json", "text"):
        msg = f"Invalid format {fmt!r}; valid: json, text."
        raise BadRequest(msg)
    run_id = request.path_params["run_id"]
    run = _read.get_run(repo, run_id)
    if run is None:
        msg = f"Unknown run {run_id!r}."
        raise NotFound(msg)
    records = _read.run_records(run)
    if fmt == "text":
        name = _FILENAME.sub("_", f"{run.task_name}-{run.run_id}")[:120] or "run"
        return PlainTextResponse(
            _read.run_output(records) + "\n",
            headers={"content-disposition": f'attachment; filename="{name}.log"'},
        )
    return JSON({"run": run.as_json(), "records": [_read.record_json(r) for r in records]})


@_guarded
def api_stats(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/stats``: the ``stats --json`` document."""
    params = Params(request.query_params, ("task", "since"))
    return JSON(stats(repo, task_name=params.text("task"), since=params.moment("since")).as_json())


@_guarded
def api_errors(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/errors``: the last fail/crash records with their tracebacks, oldest first."""
    params = Params(request.query_params, ("task", "since", "limit"))
    found = _read.errors(
        repo, task_name=params.text("task"), since=params.moment("since"),
        limit=_limit(params, 10),
    )
    return JSON([_read.record_json(r) for r in found])


_RECORDS_RESERVED = ("order_by", "limit")


@_guarded
def api_records(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/records``: the query syntax over HTTP (``FIELD=V``, ``FIELD__OP=V``)."""
    params = Params(request.query_params, _RECORDS_RESERVED, strict=False)
    limit = _limit(params)
    conditions = params.conditions(repo.schema.fields, _RECORDS_RESERVED)
    result = repo.filter_by(**conditions)
    order = params.texts("order_by")
    if order:
        result = result.order_by(*order)
    return JSON([_read.record_json(r) for r in result.limit(limit)])


@_guarded
def api_history(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/history``: runs per outcome per time bucket."""
    params = Params(request.query_params, ("task", "since", "interval"))
    interval = params.duration("interval", timedelta(hours=1))
    assert interval is not None
    since = params.moment("since") or timedelta(days=1)
    span = _read.span_seconds(since)
    if span / interval.total_seconds() > _MAX_BUCKETS:
        msg = (
            f"Too many buckets ({span / interval.total_seconds():.0f}); give a longer interval "
            f"or a later since (at most {_MAX_BUCKETS} buckets)."
        )
        raise BadRequest(msg)
    return JSON(
        _read.history_buckets(
            repo, task_name=params.text("task"), since=since, interval=interval
        )
    )


# --------------------------------------------------------- ScheduleZero


@_guarded
def executions(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/executions``: ScheduleZero's execution history."""
    params = Params(request.query_params, ("limit", "handler_id", "job_id", "status"))
    limit = _limit(params)
    status = params.text("status")
    valid = ("success", "error", "running", "timeout", *CLOSING_ACTIONS)
    if status is not None and status not in valid:
        msg = f"Invalid status {status!r}; valid: {', '.join(dict.fromkeys(valid))}."
        raise BadRequest(msg)
    job = params.text("job_id")
    handler = params.text("handler_id")
    if job is not None and handler is not None and job != handler:
        records: list[dict[str, Any]] = []
    else:
        records = _executions.executions(
            repo, limit=limit, task_name=job or handler, status=status
        )
    return JSON({"count": len(records), "limit": limit, "records": records})


@_guarded
def execution_stats(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/executions/stats``."""
    Params(request.query_params, ())
    return JSON(_executions.execution_stats(repo))


@_guarded
def execution_errors(request: Request, repo: Repository[Any]) -> Response:
    """``GET /api/executions/errors``: the newest failed runs."""
    params = Params(request.query_params, ("limit",))
    limit = _limit(params, 50)
    found = _executions.executions(repo, limit=limit, status="error")
    return JSON({"count": len(found), "limit": limit, "errors": found})


# ----------------------------------------------------------------- admin


@_guarded
def clear_executions(request: Request, repo: Repository[Any]) -> Response:
    """``POST /api/executions/clear``: delete every record (admin)."""
    Params(request.query_params, ())
    n = repo.filter_by().delete()
    return JSON(
        {"status": "success", "message": "Execution history cleared", "records_cleared": n}
    )


@_guarded
def prune(request: Request, repo: Repository[Any]) -> Response:
    """``POST /api/prune?keep_runs=&older_than=&task=``: retention (admin)."""
    params = Params(request.query_params, ("keep_runs", "older_than", "task"))
    keep = params.text("keep_runs")
    keep_runs = None if keep is None else params.integer("keep_runs", 0, low=0, high=10**9)
    older_than = params.moment("older_than")
    if keep_runs is None and older_than is None:
        msg = "Nothing to prune: give keep_runs=N and/or older_than=AGE."
        raise BadRequest(msg)
    n = repo.prune(keep_runs=keep_runs, older_than=older_than, task_name=params.text("task"))
    return JSON({"deleted": n})


@_guarded
def crashed(request: Request, repo: Repository[Any]) -> Response:
    """``POST /api/mark-crashed?older_than=``: log ``crash`` for dead runs (admin)."""
    params = Params(request.query_params, ("older_than",))
    return JSON({"marked": mark_crashed(repo, older_than=params.moment("older_than"))})


# --------------------------------------------------------------- service


def healthz(request: Request) -> Response:
    """``GET /healthz``: 200 while the store answers, else 503."""
    store: Store = request.app.state.store
    try:
        store.check()
    except Exception as err:
        return JSON({"status": "unavailable", "error": describe_error(err)}, status_code=503)
    return JSON({"status": "ok"})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format."""
    try:
        Params(request.query_params, ())
    except BadRequest as err:
        return error(400, str(err))
    body = await run_in_threadpool(metrics_text, request.app.state.registry)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def events(request: Request) -> Response:
    """``GET /api/events``: Server-Sent Events, one ``record`` event per new record."""
    try:
        params = Params(request.query_params, ("task",))
    except BadRequest as err:
        return error(400, str(err))
    feed: Feed = request.app.state.feed
    return StreamingResponse(
        feed.subscribe(params.text("task")),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


_INDEX: str | None = None


def page(request: Request) -> Response:
    """The dashboard's single page (it reads its view from the URL)."""
    global _INDEX
    if _INDEX is None:
        _INDEX = (STATIC / "index.html").read_text(encoding="utf-8")
    base = html.escape(request.scope.get("root_path", "").rstrip("/") + "/", quote=True)
    body = _INDEX.replace("{{base}}", base)
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={
            "content-security-policy": (
                "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
            ),
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        },
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal error."
    if status == 404:
        detail = f"Not found: {request.url.path}"
    return error(status, str(detail), getattr(exc, "headers", None))


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette, store: Store) -> AsyncIterator[None]:
    """Close the store the application opened when the server stops."""
    try:
        yield
    finally:
        store.close()


def create_app(
    repo: Repository[Any] | str | Path,
    *,
    auth: str | Sequence[str] | None = None,
    allow_admin: bool = False,
    table: str | None = None,
    poll_interval: float = 0.5,
) -> Starlette:
    """The tasklog web service as an ASGI application (Starlette).

    Args:
        repo: a repository, or a URL of an existing store (read with the
            model its columns describe). A store that cannot be reached yet
            does not stop the application: ``/healthz`` answers 503 and the
            API 503 until it can be read.
        auth: ``"user:password"`` (or a pair): HTTP Basic authentication on
            every page and endpoint.
        allow_admin: add the endpoints that write (``POST /api/prune``,
            ``/api/mark-crashed``, ``/api/executions/clear``); needs *auth*.
        table: the SQL table when *repo* is a URL (else ``?table=`` or ``task_log``).
        poll_interval: seconds between reads of the store for ``/api/events``.

    Raises:
        ValueError: *repo* is a URL that can never work, *auth* is malformed,
            or *allow_admin* is given without *auth*.
    """
    credentials = None if auth is None else parse_credentials(auth)
    if allow_admin and credentials is None:
        msg = "allow_admin needs auth: the endpoints that write are never open to everyone."
        raise ValueError(msg)
    store = Store(repo, table=table)
    routes: list[BaseRoute] = [
        Route("/api/tasks", api_tasks),
        Route("/api/overview", api_overview),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/stats", api_stats),
        Route("/api/errors", api_errors),
        Route("/api/records", api_records),
        Route("/api/history", api_history),
        Route("/api/events", events),
        Route("/api/executions", executions),
        Route("/api/executions/stats", execution_stats),
        Route("/api/executions/errors", execution_errors),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        *(Route(path, page) for path in _PAGES),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if allow_admin:
        routes += [
            Route("/api/executions/clear", clear_executions, methods=["POST"]),
            Route("/api/prune", prune, methods=["POST"]),
            Route("/api/mark-crashed", crashed, methods=["POST"]),
        ]
    middleware = []
    if credentials is not None:
        middleware.append(Middleware(BasicAuth, user=credentials[0], password=credentials[1]))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _not_found},
        lifespan=functools.partial(_lifespan, store=store),
    )
    app.state.store = store
    app.state.registry = make_registry(store)
    app.state.feed = Feed(store, poll_interval)
    app.state.admin = allow_admin
    return app
