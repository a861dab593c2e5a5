"""examples/web_mount.py: the service mounted under /tasklog/ of another Starlette app."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

EXAMPLE = Path(__file__).parents[1] / "examples" / "web_mount.py"


def test_mounted_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host app keeps its route; the dashboard and API answer under /tasklog/."""
    monkeypatch.setenv("TASKLOG_REPO", f"sqlite:///{tmp_path / 'mounted.db'}")
    monkeypatch.delenv("TASKLOG_AUTH", raising=False)
    app = runpy.run_path(str(EXAMPLE), run_name="example")["app"]
    with TestClient(app) as client:
        assert client.get("/").text.startswith("My app.")
        deadline = time.monotonic() + 10
        while client.get("/tasklog/healthz").status_code != 200:  # opened again within 1 s
            assert time.monotonic() < deadline
            time.sleep(0.1)
        runs = client.get("/tasklog/api/runs?task=send-invoices").json()["runs"]
        assert [r["outcome"] for r in runs] == ["fail", "success", "success"]
        page = client.get("/tasklog/")
        assert page.status_code == 200
        assert '<base href="/tasklog/">' in page.text
        assert client.get("/tasklog/static/app.js").status_code == 200
