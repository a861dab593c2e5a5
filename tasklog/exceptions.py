"""Exceptions of tasklog: errors, and the two exceptions a task raises on purpose."""

from __future__ import annotations

__all__ = [
    "CancelRun",
    "ConfigError",
    "StoreDataError",
    "StoreNotFoundError",
    "TaskInaction",
    "TasklogError",
]


class TasklogError(Exception):
    """Base class of the errors tasklog raises itself."""


class ConfigError(TasklogError, ValueError):
    """A repository URL, option or configuration value is not usable."""


class StoreNotFoundError(ConfigError):
    """The table or file to read does not exist (it is not created for reading)."""


class StoreDataError(TasklogError, ValueError):
    """A value in a store cannot be read as its field's type (a file another program wrote).

    The message names the store, the row and the column.
    """


class TaskInaction(Exception):  # noqa: N818  (Rocketry's name, kept for compatibility)
    """Raised inside a run to say the task had nothing to do.

    The run is logged with action ``inaction`` and the exception is swallowed.
    It derives from :class:`Exception` so that it passes through code that
    catches exceptions it does not know and re-raises them.
    """


class CancelRun(Exception):  # noqa: N818  (a signal, like Runlog's CancelLog)
    """Raised inside a run to forget it: every record of the run is deleted.

    The exception is swallowed by the run that it cancels.
    """
