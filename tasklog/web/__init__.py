"""The tasklog web service: a JSON API, a dashboard and Prometheus metrics (SPEC §7).

Needs the ``web`` extra (``pip install 'tasklog[web]'``)::

    from tasklog.web import create_app

    app = create_app("sqlite:///tasklog.db", auth="admin:secret")

``tasklog serve`` runs it on uvicorn.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as err:  # pragma: no cover  (the extra is not installed)
    msg = "tasklog.web needs the 'web' extra: pip install 'tasklog[web]'."
    raise ImportError(msg) from err

from ._app import create_app

__all__ = ["create_app"]
