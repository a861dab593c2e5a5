"""tasklog's web service mounted inside your own Starlette (or FastAPI) application.

    pip install 'tasklog[web]'
    python examples/web_mount.py            # then open http://127.0.0.1:8000/tasklog/

Your application keeps its own routes; the dashboard, the JSON API and
/metrics live under /tasklog/. The example logs a few runs first, so there is
something to see. With FastAPI it is the same line: ``app.mount("/tasklog", ...)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import tasklog
from tasklog.web import create_app

DB = os.environ.get("TASKLOG_REPO") or f"sqlite:///{tempfile.gettempdir()}/tasklog-example.db"


def log_some_runs() -> None:
    """Run a task a few times into the store (one run fails)."""
    handler = tasklog.basic_config(DB, model=tasklog.TaskRunRecord)
    job = tasklog.get_task_logger("send-invoices")
    for n in range(3):
        with contextlib.suppress(TimeoutError), job.run() as run:
            run.info("sending %d invoices", 10 * (n + 1))
            if n == 2:
                raise TimeoutError("mail server did not answer")
    handler.flush()


async def home(request: Request) -> PlainTextResponse:
    """Your application's own page."""
    return PlainTextResponse("My app. Task history: /tasklog/\n")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Log after the server configured its logging (uvicorn's set-up closes existing handlers)."""
    log_some_runs()
    yield


app = Starlette(
    routes=[
        Route("/", home),
        # auth= guards every page and endpoint of the mounted service
        Mount("/tasklog", app=create_app(DB, auth=os.environ.get("TASKLOG_AUTH"))),
    ],
    lifespan=lifespan,
)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
