"""A Celery app whose task executions are stored as runs.

    pip install 'tasklog[celery]' redis
    cd examples
    CELERY_BROKER_URL=redis://localhost:6379/0 \\
        celery -A celery_tasks worker --pool=prefork --concurrency=2 --loglevel=INFO
    # in another shell (same directory and broker):
    python celery_tasks.py

``python celery_tasks.py`` sends three tasks (one succeeds, one fails, one
needs a retry), waits for their runs and prints them from the store
(``TASKLOG_REPO``, default ``sqlite:///celery_runs.db``).
"""

from __future__ import annotations

import logging
import os
import time

from celery import Celery
from celery.utils.log import get_task_logger

import tasklog
from tasklog.contrib.celery import install

app = Celery("celery_tasks", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"))
app.conf.broker_connection_retry_on_startup = True

# The worker imports this module: configure tasklog and install the hooks here.
# capture=True: lines of any logger inside a task go into its run, too.
tasklog.basic_config(
    os.environ.get("TASKLOG_REPO", "sqlite:///celery_runs.db"),
    model=tasklog.TaskRunRecord, capture=True,
)
install(app)

log = get_task_logger(__name__)
http = logging.getLogger("example.http")


@app.task
def resize(image: str) -> str:
    """Succeeds, logging through Celery's task logger."""
    log.info("resizing %s", image)
    return f"{image}.small.png"


@app.task
def charge(customer: int) -> None:
    """Fails."""
    log.info("charging customer %d", customer)
    msg = f"card of customer {customer} declined"
    raise ValueError(msg)


@app.task(bind=True, max_retries=2)
def sync(self: object) -> str:
    """Needs one retry; its library logs a warning."""
    request = self.request  # type: ignore[attr-defined]
    if request.retries == 0:
        http.warning("GET https://example.com/feed -> 503")
        raise self.retry(exc=ConnectionError("feed unavailable"), countdown=1)  # type: ignore[attr-defined]
    return "synced"


def main() -> None:
    """Send the tasks, wait for their runs, print them."""
    ids = [resize.delay("cat.png").id, charge.delay(42).id, sync.delay().id]
    repo = tasklog.get_task_logger("x").repo
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = [i for i in ids if repo.filter_by(run_id=i, action=tasklog.in_(
            ["success", "fail", "terminate"])).count()]
        if len(done) == len(ids):
            break
        time.sleep(0.2)
    for task_id in ids:
        print(tasklog.runs.format_records(repo.filter_by(run_id=task_id).all()))
        print()


if __name__ == "__main__":
    main()
