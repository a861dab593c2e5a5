"""The HTTP API (SPEC §7) on every store: shapes, filters, paging, bad input, auth, admin."""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from _web import HOSTILE_TASK, write_history
from conftest import RepoFactory, store_url
from starlette.testclient import TestClient

from tasklog import MemoryRepo, Repository, TaskRunRecord, open_repo, stats
from tasklog.web import create_app

RUN_KEYS = {"run_id", "task_name", "start", "end", "runtime", "outcome"}
EXECUTION_KEYS = {
    "job_id", "handler_id", "method_name", "started_at", "completed_at", "duration_ms",
    "status", "result", "error", "attempt_number",
}


@pytest.fixture(name="history")
def _history(make_repo: RepoFactory, store: str) -> tuple[Repository[Any], dict[str, Any]]:
    repo = make_repo(store, model=TaskRunRecord)
    return repo, write_history(repo)


@pytest.fixture(name="client")
def _client(history: tuple[Repository[Any], dict[str, Any]]) -> TestClient:
    return TestClient(create_app(history[0]))


def ok(client: TestClient, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, (url, response.text)
    return response.json()


class TestReads:
    def test_tasks_are_the_cli_shape(self, client: TestClient) -> None:
        """/api/tasks lists each task with its last action and time, sorted by name."""
        tasks = ok(client, "/api/tasks")
        assert [t["task_name"] for t in tasks] == sorted(
            [HOSTILE_TASK, "cleanup-tmp", "fetch-prices", "nightly-report"]
        )
        assert all(set(t) == {"task_name", "last_action", "last_created"} for t in tasks)
        by_name = {t["task_name"]: t for t in tasks}
        assert by_name["fetch-prices"]["last_action"] == "fail"
        assert by_name["nightly-report"]["last_action"] == "run"
        assert by_name["cleanup-tmp"]["last_created"].endswith("+00:00")

    def test_runs_newest_first_with_outcomes(
        self, client: TestClient, history: tuple[Repository[Any], dict[str, Any]]
    ) -> None:
        """/api/runs gives every run, newest start first, with its outcome (null while open)."""
        written = history[1]["runs"]
        page = ok(client, "/api/runs")
        assert page["next"] is None
        assert [(r["task_name"], r["run_id"], r["outcome"]) for r in page["runs"]] == [
            tuple(w) for w in reversed(written)
        ]
        assert all(set(r) == RUN_KEYS for r in page["runs"])
        open_run = page["runs"][0]
        assert open_run["end"] is None
        assert open_run["runtime"] is None
        done = page["runs"][1]
        assert done["runtime"] >= 0
        assert done["end"] >= done["start"]

    def test_runs_pages_follow_the_cursor(
        self, client: TestClient, history: tuple[Repository[Any], dict[str, Any]]
    ) -> None:
        """Pages of 2 chained by ``next`` give every run once, in order."""
        seen: list[str] = []
        url = "/api/runs?limit=2"
        while True:
            page = ok(client, url)
            assert len(page["runs"]) <= 2
            seen += [r["run_id"] for r in page["runs"]]
            if page["next"] is None:
                break
            url = f"/api/runs?limit=2&before={quote(page['next'])}"
        assert seen == [w[1] for w in reversed(history[1]["runs"])]

    def test_runs_filters(self, client: TestClient) -> None:
        """task, status (an outcome or running, repeated or comma-separated) and since."""
        fails = ok(client, "/api/runs?status=fail")["runs"]
        assert [r["task_name"] for r in fails] == ["fetch-prices", "fetch-prices"]
        assert {r["outcome"] for r in ok(client, "/api/runs?status=fail,inaction")["runs"]} == {
            "fail", "inaction"
        }
        running = ok(client, "/api/runs?status=running")["runs"]
        assert [(r["task_name"], r["outcome"]) for r in running] == [("nightly-report", None)]
        report = ok(client, "/api/runs?task=nightly-report")["runs"]
        assert len(report) == 4
        assert {r["task_name"] for r in report} == {"nightly-report"}
        both = ok(client, "/api/runs?task=nightly-report&task=cleanup-tmp&status=success")
        assert len(both["runs"]) == 3
        hostile = ok(client, f"/api/runs?task={quote(HOSTILE_TASK)}")["runs"]
        assert [r["task_name"] for r in hostile] == [HOSTILE_TASK]
        assert ok(client, "/api/runs?since=1h")["runs"]
        assert ok(client, "/api/runs?until=2000-01-01")["runs"] == []
        assert ok(client, "/api/runs?since=2000-01-01T00:00:00Z")["runs"]

    def test_lost_runs(
        self, client: TestClient, history: tuple[Repository[Any], dict[str, Any]]
    ) -> None:
        """status=lost gives open runs whose process is gone on this host (alone or with others)."""
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        history[0].add({
            "task_name": "cleanup-tmp", "action": "run", "created": time.time(),
            "run_id": "lost-1", "host": socket.gethostname(), "process": dead.pid,
        })
        lost = ok(client, "/api/runs?status=lost")
        assert [r["run_id"] for r in lost["runs"]] == ["lost-1"]
        assert lost["next"] is None
        assert ok(client, "/api/runs?status=lost&task=fetch-prices")["runs"] == []
        mixed = ok(client, "/api/runs?status=lost,fail")["runs"]
        assert [r["outcome"] for r in mixed] == [None, "fail", "fail"]
        assert client.get("/api/runs?status=lost&before=x").status_code == 400

    def test_run_page_and_download(self, client: TestClient) -> None:
        """/api/runs/{id} gives the run and its records; ?format=text its log lines."""
        failed = ok(client, "/api/runs?status=fail&limit=1")["runs"][0]
        doc = ok(client, f"/api/runs/{failed['run_id']}")
        assert set(doc) == {"run", "records"}
        assert doc["run"] == failed
        actions = [r["action"] for r in doc["records"]]
        assert actions == ["run", "log", "fail"]
        assert "ConnectionError: warehouse.example.com" in doc["records"][-1]["exc_text"]
        text = client.get(f"/api/runs/{failed['run_id']}?format=text")
        assert text.status_code == 200
        assert text.headers["content-type"].startswith("text/plain")
        assert "attachment" in text.headers["content-disposition"]
        lines = text.text.splitlines()
        assert re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \[INFO\] \[fetch-prices\] "
                        r"Run started", lines[0])
        assert any("[ERROR] [fetch-prices] Run failed" in line for line in lines)
        assert lines[-1] == "ConnectionError: warehouse.example.com: connection refused"

    def test_stats_is_the_library_document(
        self, client: TestClient, history: tuple[Repository[Any], dict[str, Any]]
    ) -> None:
        """/api/stats is ``stats(repo).as_json()``; ?task= narrows it."""
        assert ok(client, "/api/stats") == json.loads(json.dumps(stats(history[0]).as_json()))
        one = ok(client, "/api/stats?task=fetch-prices&since=1d")
        assert [t["task_name"] for t in one["tasks"]] == ["fetch-prices"]
        assert one["total"]["failures"] == 2
        assert "task_name" not in one["total"]

    def test_errors(self, client: TestClient) -> None:
        """/api/errors gives the fail records with tracebacks, oldest first, limited."""
        found = ok(client, "/api/errors")
        assert [r["action"] for r in found] == ["fail", "fail"]
        assert all("Traceback" in r["exc_text"] for r in found)
        assert found[0]["created"] < found[1]["created"]
        assert len(ok(client, "/api/errors?limit=1")) == 1
        assert ok(client, "/api/errors?task=cleanup-tmp") == []

    def test_records_query_syntax(self, client: TestClient) -> None:
        """FIELD=VALUE and FIELD__OP=VALUE for every operator, order_by and limit."""
        def tasks(url: str) -> list[str]:
            return [r["task_name"] for r in ok(client, url)]

        assert tasks("/api/records?action=inaction") == ["cleanup-tmp"]
        assert set(tasks("/api/records?action=run&task_name__ne=nightly-report")) == {
            "fetch-prices", "cleanup-tmp", HOSTILE_TASK
        }
        assert len(tasks("/api/records?action__in=fail,inaction")) == 3
        assert "nightly-report" not in tasks("/api/records?task_name__not_in=nightly-report")
        assert tasks("/api/records?message__contains=250%20prices") == ["fetch-prices"]
        assert tasks("/api/records?message__contains=slow&limit=2") == ["nightly-report"] * 2
        records = ok(client, "/api/records?order_by=-created&limit=3")
        assert [r["created"] for r in records] == sorted(
            (r["created"] for r in records), reverse=True
        )
        first = ok(client, "/api/records?limit=1")[0]["created"]
        assert len(ok(client, f"/api/records?created__le={first!r}")) >= 1
        assert ok(client, f"/api/records?created__lt={first!r}") == []
        assert len(ok(client, f"/api/records?created__gt={first!r}&limit=1000")) > 5
        assert len(ok(client, f"/api/records?created__between={first!r},{first + 3600!r}")) > 5
        assert ok(client, f"/api/records?created__ge={first + 3600!r}") == []
        assert len(ok(client, "/api/records?process__gt=0&limit=5")) == 5

    def test_history_buckets(self, client: TestClient) -> None:
        """/api/history counts each run once, under its outcome, in the bucket of its start."""
        doc = ok(client, "/api/history?since=2h&interval=15m")
        assert doc["interval"] == 900.0
        assert 8 <= len(doc["buckets"]) <= 9
        totals: dict[str, int] = {}
        for bucket in doc["buckets"]:
            assert bucket["runs"] == sum(bucket["counts"].values())
            for name, n in bucket["counts"].items():
                totals[name] = totals.get(name, 0) + n
        assert totals["success"] == 5
        assert totals["fail"] == 2
        assert totals["inaction"] == 1
        assert totals["running"] == 1
        one = ok(client, "/api/history?task=fetch-prices")
        assert sum(b["runs"] for b in one["buckets"]) == 3

    def test_overview(self, client: TestClient) -> None:
        """/api/overview gives each task's figures and newest runs, for the dashboard."""
        doc = ok(client, "/api/overview?runs=2")
        by_name = {t["task_name"]: t for t in doc["tasks"]}
        prices = by_name["fetch-prices"]
        assert [r["outcome"] for r in prices["recent"]] == ["fail", "fail"]
        assert prices["stats"]["runs"] == 3
        assert prices["stats"]["failures"] == 2

    def test_metrics(self, client: TestClient) -> None:
        """/metrics is Prometheus text with runs by outcome, running runs and runtimes."""
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert "tasklog_store_up 1.0" in text
        assert 'tasklog_runs{outcome="failure",task="fetch-prices"} 2.0' in text
        assert 'tasklog_runs{outcome="success",task="nightly-report"} 3.0' in text
        assert 'tasklog_running_runs{task="nightly-report"} 1.0' in text
        assert 'tasklog_last_run_success{task="fetch-prices"} 0.0' in text
        assert re.search(r'tasklog_last_success_timestamp_seconds\{task="nightly-report"\} '
                         r'1\.\d+e\+09', text)
        assert 'tasklog_run_duration_seconds{quantile="0.95",task="fetch-prices"}' in text
        assert 'task="<script>alert(1)</script>"' in text

    def test_healthz(self, client: TestClient) -> None:
        """/healthz answers 200 while the store answers."""
        assert ok(client, "/healthz") == {"status": "ok"}


class TestScheduleZero:
    def test_executions_shape(self, client: TestClient) -> None:
        """/api/executions maps runs onto ScheduleZero's records, newest first."""
        doc = ok(client, "/api/executions")
        assert set(doc) == {"count", "limit", "records"}
        assert doc["limit"] == 100
        assert doc["count"] == len(doc["records"]) == 9
        assert all(set(r) == EXECUTION_KEYS for r in doc["records"])
        running, hostile = doc["records"][0], doc["records"][1]
        assert running["status"] == "running"
        assert running["completed_at"] is None
        assert running["duration_ms"] is None
        assert hostile["job_id"] == hostile["handler_id"] == HOSTILE_TASK
        assert hostile["status"] == "success"
        assert hostile["attempt_number"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", hostile["started_at"])
        assert isinstance(hostile["duration_ms"], int)
        statuses = {r["status"] for r in doc["records"]}
        assert statuses == {"running", "success", "error", "inaction"}

    def test_executions_filters(self, client: TestClient) -> None:
        """job_id, handler_id (the task), status and limit."""
        errors = ok(client, "/api/executions?status=error")["records"]
        assert len(errors) == 2
        assert {e["error"] for e in errors} == {
            "ConnectionError: warehouse.example.com: connection refused"
        }
        assert len(ok(client, "/api/executions?job_id=nightly-report")["records"]) == 4
        assert len(ok(client, "/api/executions?handler_id=nightly-report&limit=2")["records"]) == 2
        assert ok(client, "/api/executions?status=timeout")["records"] == []

    def test_stats_and_errors(self, client: TestClient) -> None:
        """/api/executions/stats in percent with by_handler; /errors the failed runs."""
        doc = ok(client, "/api/executions/stats")
        assert set(doc) == {
            "total_executions", "success_count", "error_count", "success_rate",
            "average_duration_ms", "by_handler", "buffer_utilization",
        }
        assert doc["total_executions"] == 9
        assert doc["success_count"] == 5
        assert doc["error_count"] == 2
        assert doc["success_rate"] == round(100 * 5 / 7, 2)
        prices = doc["by_handler"]["fetch-prices"]
        assert set(prices) == {"total", "success", "error", "success_rate", "avg_duration_ms"}
        assert prices["success_rate"] == 33.33
        errors = ok(client, "/api/executions/errors?limit=1")
        assert errors["count"] == 1
        assert errors["limit"] == 1
        assert errors["errors"][0]["status"] == "error"

    def test_buffer_utilization_of_a_bounded_memory_store(self) -> None:
        """buffer_utilization is the share of a bounded memory store in use, else null."""
        repo = MemoryRepo(model=TaskRunRecord, max_size=40)
        write_history(repo)
        doc = TestClient(create_app(repo)).get("/api/executions/stats").json()
        assert doc["buffer_utilization"] == round(len(repo) / 40, 4)

    def test_attempt_number_from_the_model(self, make_repo: RepoFactory, store: str) -> None:
        """A model with an ``attempt`` field gives ``attempt_number``."""
        from pydantic import BaseModel

        class Attempted(TaskRunRecord):
            attempt: int | None = None

        assert issubclass(Attempted, BaseModel)
        repo = make_repo(store, model=Attempted)
        repo.add({"task_name": "t", "action": "run", "created": time.time(), "run_id": "r1",
                  "attempt": 3})
        repo.add({"task_name": "t", "action": "fail", "created": time.time(), "run_id": "r1",
                  "attempt": 3, "exc_text": "Traceback...\nValueError: nope"})
        record = TestClient(create_app(repo)).get("/api/executions").json()["records"][0]
        assert record["attempt_number"] == 3
        assert record["error"] == "ValueError: nope"


# ----------------------------------------------------------- bad input

BAD = [
    ("/api/runs?limit=0", 400, "limit"),
    ("/api/runs?limit=1001", 400, "limit"),
    (f"/api/runs?limit={10**30}", 400, "limit"),
    ("/api/runs?limit=ten", 400, "limit"),
    ("/api/runs?since=yesterday", 400, "since"),
    ("/api/runs?since=5x", 400, "since"),
    ("/api/runs?status=exploded", 400, "status"),
    ("/api/runs?before=garbage", 400, "cursor"),
    ("/api/runs?tsk=x", 400, "tsk"),
    ("/api/runs/no-such-run", 404, "no-such-run"),
    ("/api/runs/x?format=pdf", 400, "format"),
    ("/api/records?nosuchfield=1", 400, "valid fields: task_name"),
    ("/api/records?created__approx=1", 400, "operator"),
    ("/api/records?created=abc", 400, "created"),
    ("/api/records?created__between=1", 400, "between"),
    ("/api/records?order_by=nosuch", 400, "nosuch"),
    ("/api/records?limit=-1", 400, "limit"),
    ("/api/history?interval=0s", 400, "interval"),
    ("/api/history?interval=1s&since=30d", 400, "buckets"),
    ("/api/history?interval=fast", 400, "interval"),
    ("/api/stats?since=-1d", 400, "since"),
    ("/api/errors?limit=1e3", 400, "limit"),
    ("/api/executions?status=exploded", 400, "status"),
    ("/api/executions/errors?limit=99999999999999999999", 400, "limit"),
    ("/api/nothing", 404, "Not found"),
]


@pytest.mark.parametrize(("url", "status", "named"), BAD)
def test_bad_input_is_a_json_error(client: TestClient, url: str, status: int, named: str) -> None:
    """Each bad parameter is a 400 (an unknown run a 404) naming the problem."""
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert named in body["error"]
    assert "Traceback" not in body["error"]


HOSTILE = [
    "", " ", "-1", "0", "1e309", "nan", "inf", str(10**30), "-" + str(10**30), "1.5",
    "'; DROP TABLE task_log; --", "%", "_", "\\", "\x00", "a\nb", "\u202e\u0000",
    "<script>alert(1)</script>", "../../etc/passwd", "a,b,c", ",", "x" * 5000,
    "2024-13-45", "9999-12-31T23:59:59", "1d" * 50, "💥", "null", "true", "[]", "{}",
]
ENDPOINTS = {
    "/api/tasks": ["x"],
    "/api/overview": ["since", "runs"],
    "/api/runs": ["task", "status", "since", "until", "limit", "before"],
    "/api/stats": ["task", "since"],
    "/api/errors": ["task", "since", "limit"],
    "/api/records": ["task_name", "created", "created__gt", "process__in", "message__contains",
                     "run_id__between", "order_by", "limit", "runtime__le", "start__ge"],
    "/api/history": ["task", "since", "interval"],
    "/api/executions": ["limit", "handler_id", "job_id", "status"],
    "/api/executions/stats": ["x"],
    "/api/executions/errors": ["limit"],
    "/metrics": ["x"],
    "/healthz": [],
}


def test_hostile_values_never_break_an_endpoint(
    client: TestClient, history: tuple[Repository[Any], dict[str, Any]]
) -> None:
    """Every parameter of every endpoint, with hostile values: 200, 400 or 404, never 500."""
    repo = history[0]
    before = len(repo)
    for path, names in ENDPOINTS.items():
        for name in names:
            for value in HOSTILE:
                response = client.get(path, params={name: value})
                assert response.status_code in (200, 400, 404), (path, name, value, response.text)
                if response.status_code != 200:
                    assert set(response.json()) == {"error"}, (path, name, value)
                elif path.startswith("/api"):
                    response.json()
    for value in filter(None, HOSTILE):
        response = client.get(f"/api/runs/{quote(value, safe='')}")
        assert response.status_code in (404, 400), (value, response.text)
        response = client.get(f"/api/runs/{quote(value, safe='')}?format=text")
        assert response.status_code in (404, 400), (value, response.text)
    assert len(repo) == before  # nothing was written or deleted
    assert ok(client, "/api/tasks")


def test_special_floats_are_valid_json(make_repo: RepoFactory, store: str) -> None:
    """A stored NaN or infinity is sent as the string "NaN" / "Infinity" (JSON has neither)."""
    from tasklog import TaskRunRecord

    class Measured(TaskRunRecord):
        value: float | None = None

    repo = make_repo(store, model=Measured)
    for value in (math.nan, math.inf, -math.inf, 1.5):
        repo.add({"task_name": "m", "action": "log", "created": time.time(), "value": value})
    response = TestClient(create_app(repo)).get("/api/records?task_name=m")
    assert response.status_code == 200
    names = {math.inf: "Infinity", -math.inf: "-Infinity"}

    def shown(v: float | None) -> Any:
        if v is None or math.isfinite(v):
            return v
        return "NaN" if math.isnan(v) else names[v]

    expected = [shown(r.value) for r in repo.filter_by(task_name="m")]
    assert expected[1:] == ["Infinity", "-Infinity", 1.5]  # NaN reads back as null on SQLite
    assert [r["value"] for r in json.loads(response.text)] == expected


# --------------------------------------------------------- unreachable store


def test_a_missing_store_starts_and_recovers(tmp_path: Path, make_repo: RepoFactory) -> None:
    """create_app on a store that does not exist yet starts; /healthz is 503 until it does."""
    url = f"sqlite:///{tmp_path / 'later.db'}"
    with TestClient(create_app(url)) as client:
        check_recovery(client, url)


def check_recovery(client: TestClient, url: str) -> None:
    health = client.get("/healthz")
    assert health.status_code == 503
    assert "later.db" in health.json()["error"]
    response = client.get("/api/runs")
    assert response.status_code == 503
    assert set(response.json()) == {"error"}
    assert "tasklog_store_up 0.0" in client.get("/metrics").text
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    time.sleep(1.1)  # the store is opened again at most once a second
    assert client.get("/healthz").status_code == 200
    assert len(client.get("/api/runs").json()["runs"]) == 9
    repo.close()


@pytest.mark.postgres
def test_a_database_that_goes_down_is_503(
    postgres_server: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """While PostgreSQL is down, /healthz and the API answer 503; after, 200 again."""
    url = store_url("postgresql", tmp_path, request)
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    with TestClient(create_app(url)) as client:
        check_outage(client, postgres_server)
    repo.close()


def check_outage(client: TestClient, postgres_server: Any) -> None:
    assert client.get("/healthz").status_code == 200
    postgres_server.stop_only()
    try:
        assert client.get("/healthz").status_code == 503
        down = client.get("/api/runs")
        assert down.status_code == 503
        assert set(down.json()) == {"error"}
        assert "tasklog_store_up 0.0" in client.get("/metrics").text
    finally:
        postgres_server.start_again()
    for _ in range(50):
        if client.get("/healthz").status_code == 200:
            break
        time.sleep(0.2)
    response = client.get("/api/runs")
    assert response.status_code == 200, response.text


def test_a_url_that_can_never_work_raises() -> None:
    """An unknown scheme is an error at create_app, naming the problem."""
    with pytest.raises(ValueError, match="not a repository URL"):
        create_app("nosuchscheme.db")


# ------------------------------------------------------------------ auth

PROTECTED = [
    "/", "/task?name=x", "/run?id=x", "/errors", "/static/app.js", "/api/tasks", "/api/runs",
    "/api/runs/x", "/api/stats", "/api/errors", "/api/records", "/api/history", "/api/events",
    "/api/overview", "/api/executions", "/api/executions/stats", "/api/executions/errors",
    "/metrics", "/healthz", "/nothing",
]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class TestAuth:
    @pytest.fixture(name="guarded")
    def _guarded(self) -> TestClient:
        repo = MemoryRepo(model=TaskRunRecord)
        write_history(repo)
        return TestClient(create_app(repo, auth="admin:s3cr:et"))

    @pytest.mark.parametrize("path", PROTECTED)
    def test_every_page_and_endpoint_needs_the_credentials(
        self, guarded: TestClient, path: str
    ) -> None:
        """Without them, or with wrong ones, 401 with a Basic challenge."""
        for headers in ({}, basic("admin", "wrong"), basic("nobody", "s3cr:et"),
                        {"Authorization": "Bearer s3cr:et"}, {"Authorization": "Basic !!!"},
                        basic("admin", "s3cr:e"), basic("admin", "s3cr:et ")):
            response = guarded.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"].startswith("Basic realm=")
            assert response.json() == {"error": "Authentication required (HTTP Basic)."}

    def test_the_right_credentials_pass(self, guarded: TestClient) -> None:
        """With them, pages and endpoints answer (a password may hold a colon)."""
        headers = basic("admin", "s3cr:et")
        for path in ("/", "/api/tasks", "/metrics", "/healthz", "/static/app.js"):
            assert guarded.get(path, headers=headers).status_code == 200, path

    def test_bad_auth_values_raise(self) -> None:
        """auth must be USER:PASSWORD with both parts."""
        repo = MemoryRepo(model=TaskRunRecord)
        for bad in ("nocolon", ":pw", "user:", ("a",)):
            with pytest.raises(ValueError, match="auth"):
                create_app(repo, auth=bad)  # type: ignore[arg-type]

    def test_compare_is_constant_time(self) -> None:
        """The credentials are compared with hmac.compare_digest."""
        import inspect

        from tasklog.web import _auth

        assert "hmac.compare_digest" in inspect.getsource(_auth.BasicAuth.allowed)


class TestAdmin:
    def test_admin_needs_auth(self) -> None:
        """allow_admin without auth is refused."""
        with pytest.raises(ValueError, match="allow_admin needs auth"):
            create_app(MemoryRepo(model=TaskRunRecord), allow_admin=True)

    def test_no_admin_endpoints_without_allow_admin(self) -> None:
        """Without allow_admin the endpoints that write do not exist."""
        repo = MemoryRepo(model=TaskRunRecord)
        write_history(repo)
        n = len(repo)
        client = TestClient(create_app(repo, auth="a:b"))
        for path in ("/api/executions/clear", "/api/prune?keep_runs=0", "/api/mark-crashed"):
            response = client.post(path, headers=basic("a", "b"))
            assert response.status_code in (404, 405), path
            assert set(response.json()) == {"error"}
        assert len(repo) == n

    def test_admin_endpoints(self, make_repo: RepoFactory, store: str) -> None:
        """With allow_admin and auth: prune, mark-crashed and clear work (and need auth)."""
        repo = make_repo(store, model=TaskRunRecord)
        write_history(repo)
        client = TestClient(create_app(repo, auth="a:b", allow_admin=True))
        headers = basic("a", "b")
        assert client.post("/api/prune?keep_runs=0").status_code == 401
        assert client.post("/api/prune", headers=headers).status_code == 400
        assert client.post("/api/prune?keep_runs=x", headers=headers).status_code == 400
        pruned = client.post("/api/prune?keep_runs=1&task=nightly-report", headers=headers)
        assert pruned.status_code == 200
        assert pruned.json()["deleted"] > 0
        assert len(client.get("/api/runs?task=nightly-report", headers=headers)
                   .json()["runs"]) == 1
        marked = client.post("/api/mark-crashed?older_than=0s", headers=headers)
        assert marked.status_code == 200
        assert isinstance(marked.json()["marked"], list)
        n = len(repo)
        cleared = client.post("/api/executions/clear", headers=headers).json()
        assert cleared == {
            "status": "success", "message": "Execution history cleared", "records_cleared": n
        }
        assert len(repo) == 0
