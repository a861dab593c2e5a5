"""Hooks that turn other libraries' executions into tasklog runs.

Each integration is its own module, imported only when used:
:mod:`tasklog.contrib.apscheduler`, :mod:`tasklog.contrib.celery`, and the
pytest plugin :mod:`tasklog.contrib.pytest_plugin`.
"""
