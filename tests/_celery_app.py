"""A Celery app for the prefork worker test (run with ``celery -A _celery_app worker``).

Broker and store come from the environment: ``TASKLOG_CELERY_BROKER`` and
``TASKLOG_CELERY_URL``.
"""

from __future__ import annotations

import logging
import os
import time

from celery import Celery
from celery.utils.log import get_task_logger

import tasklog
from tasklog.contrib.celery import install

app = Celery("tasklog_test", broker=os.environ.get("TASKLOG_CELERY_BROKER", "memory://"))
app.conf.update(broker_connection_retry_on_startup=True, worker_prefetch_multiplier=1)

tasklog.basic_config(
    os.environ.get("TASKLOG_CELERY_URL", "memory://"), model=tasklog.TaskRunRecord,
    mode="sync", capture=True,
)
logging.getLogger("celerylib").setLevel(logging.INFO)
install(app)

task_log = get_task_logger(__name__)


@app.task
def add(x: int, y: int) -> int:
    """Add, logging through Celery's task logger and a library logger."""
    task_log.warning("adding %d and %d in pid %d", x, y, os.getpid())
    logging.getLogger("celerylib.math").warning("library line")
    return x + y


@app.task
def snooze(seconds: float) -> None:
    """Sleep (to be revoked with terminate=True)."""
    task_log.warning("snoozing")
    time.sleep(seconds)
