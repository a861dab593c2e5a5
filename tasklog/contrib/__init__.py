"""Hooks that turn other libraries' executions into tasklog runs.

Each integration is its own module, imported only when used:
:mod:`tasklog.contrib.apscheduler` and :mod:`tasklog.contrib.celery`. The
pytest plugin is the top-level ``pytest_tasklog`` (so that loading it imports
no part of tasklog) over :mod:`tasklog.testing`.
"""
