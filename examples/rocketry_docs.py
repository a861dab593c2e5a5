"""Every snippet of Rocketry's "Task Logging" page, with only the imports changed.

The page (shared seed 004) sets up Red Bird repositories behind a
``RepoHandler`` on the ``rocketry.task`` logger and queries them. The mapping:

    rocketry.log.MinimalRecord      -> tasklog.MinimalRecord
    redbird.repos.CSVFileRepo       -> tasklog.repos.CSVFileRepo
    redbird.repos.SQLRepo           -> tasklog.repos.SQLRepo
    redbird.logging.RepoHandler     -> tasklog.RepoHandler
    (Rocketry's TaskAdapter)        -> tasklog.TaskAdapter

Run it with ``python examples/rocketry_docs.py``; it works in a temporary
directory and prints what each query returns.
"""

from __future__ import annotations

import logging
import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="rocketry-docs-"))

# --- "Log Record": the minimal model the page shows -------------------------
from pydantic import BaseModel


class MinimalRecord(BaseModel):
    task_name: str
    action: str
    created: float


# --- "Setting Up Repo to a Logger" ------------------------------------------
logger = logging.getLogger("rocketry.task")

# Rocketry sets the logger's level so that INFO task actions pass.
logger.setLevel(logging.INFO)

# Here is an example to log to a CSV file:
from tasklog import MinimalRecord  # noqa: F811  (was: from rocketry.log import ...)
from tasklog import RepoHandler  # (was: from redbird.logging import RepoHandler)
from tasklog.repos import CSVFileRepo  # (was: from redbird.repos import ...)

# Creating the repo
repo = CSVFileRepo(filename="path/to/repo.csv", model=MinimalRecord)

# Adding the repo to the logger
logger = logging.getLogger("rocketry.task")
handler = RepoHandler(repo=repo)
logger.addHandler(handler)

# Another common pattern is to log the records to a SQL database:
from sqlalchemy import create_engine

from tasklog.repos import SQLRepo  # (was: from redbird.repos import SQLRepo)

engine = create_engine("sqlite:///app.db")
repo = SQLRepo(
    engine=engine, table="tasks", if_missing="create", model=MinimalRecord, id_field="created"
)

handler = RepoHandler(repo=repo)
logger.addHandler(handler)

# What Rocketry's scheduler logs while it runs a task:
for action in ("run", "success", "run", "fail", "run", "success"):
    logger.info(f"Task 'my_task' {action}", extra={"task_name": "my_task", "action": action})
logger.info("Task 'do_things' run", extra={"task_name": "do_things", "action": "run"})

# --- "Querying the Logger" ----------------------------------------------------
logger = logging.getLogger("rocketry.task")
for handler in logger.handlers:
    if hasattr(handler, "repo"):
        break

repo = handler.repo

print("repo:", repo)
print("runs of my_task:", repo.filter_by(task_name="my_task", action="run").all())

# Tasks use a TaskAdapter that injects task_name:
from tasklog import TaskAdapter  # (was Rocketry's own TaskAdapter)

task_logger = TaskAdapter(logging.getLogger("rocketry.task"), "do_things")
print("runs of do_things:", task_logger.filter_by(action="run").all())

# Both handlers got every record: the CSV file has them too.
print("CSV file holds", len(CSVFileRepo(filename="path/to/repo.csv", model=MinimalRecord)),
      "records; the SQL table", len(SQLRepo(engine=engine, table="tasks", model=MinimalRecord)))
