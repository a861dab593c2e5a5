"""The service over real sockets: SSE, ``tasklog serve``, ScheduleZero's own client and curl."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from _web import live_server, write_history
from conftest import RepoFactory

from tasklog import RepoHandler, TaskRunRecord, get_task_logger, open_repo
from tasklog.web import create_app

SEED = Path(__file__).parent / "data" / "schedulezero_execution_log_api.md"
SHARED_SEED = Path(__file__).parents[2] / "shared" / "seeds" / "002_bfe477091147c80f.txt"


def read_events(response: Any, want: int, deadline: float) -> list[dict[str, Any]]:
    """Read SSE ``record`` events until *want* arrived (or the deadline passes)."""
    found: list[dict[str, Any]] = []
    event = None
    while len(found) < want and time.monotonic() < deadline:
        line = response.readline().decode()
        if not line:
            break
        line = line.rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "record":
            found.append(json.loads(line[6:]))
        elif not line:
            event = None
    return found


@pytest.mark.parametrize("store", ["memory", "csv", "sqlite", "postgresql", "redis"])
def test_events_stream_new_records(make_repo: RepoFactory, store: str) -> None:
    """/api/events sends each newly stored record once, in order, as it is stored."""
    repo = make_repo(store, model=TaskRunRecord)
    write_history(repo)
    logger = logging.getLogger(f"tasklog.sse.{uuid.uuid4().hex[:6]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = RepoHandler(repo)
    logger.addHandler(handler)
    with (
        live_server(create_app(repo, poll_interval=0.05)) as base,
        urllib.request.urlopen(f"{base}/api/events", timeout=30) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.readline().decode().startswith("retry:")
        time.sleep(0.3)  # the feed has read what was there before
        task = get_task_logger("sse-task", logger=logger)
        with task.run() as run:
            run.info("one <b>line</b>")
        handler.flush()
        events = read_events(response, 3, time.monotonic() + 20)
    assert [(e["task_name"], e["action"]) for e in events] == [
        ("sse-task", "run"), ("sse-task", "log"), ("sse-task", "success")
    ]
    assert events[1]["message"] == "one <b>line</b>"
    assert len({e["run_id"] for e in events}) == 1


def test_events_filter_by_task(make_repo: RepoFactory) -> None:
    """/api/events?task=T sends only that task's records; an unknown parameter is a 400."""
    repo = make_repo("sqlite", model=TaskRunRecord)
    with live_server(create_app(repo, poll_interval=0.05)) as base:
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(f"{base}/api/events?tsk=x", timeout=10)
        assert bad.value.code == 400
        bad.value.close()
        with urllib.request.urlopen(f"{base}/api/events?task=b", timeout=30) as response:
            response.readline()
            time.sleep(0.3)
            now = time.time()
            repo.add_many([
                {"task_name": "a", "action": "log", "created": now, "message": "not this"},
                {"task_name": "b", "action": "log", "created": now, "message": "this"},
            ])
            events = read_events(response, 1, time.monotonic() + 20)
    assert [e["message"] for e in events] == ["this"]


# ------------------------------------------------------------- ScheduleZero


def seed_blocks(kind: str) -> list[str]:
    text = SEED.read_text(encoding="utf-8")
    return re.findall(rf"```{kind}\n(.*?)```", text, flags=re.S)


def test_vendored_seed_is_the_source_document() -> None:
    """tests/data holds ScheduleZero's page as given (when ../shared is beside the clone)."""
    if SHARED_SEED.is_file():
        assert SEED.read_text(encoding="utf-8") == SHARED_SEED.read_text(encoding="utf-8")
    assert "class ScheduleZeroClient" in SEED.read_text(encoding="utf-8")


@pytest.fixture(name="schedulezero")
def _schedulezero(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'sz.db'}"
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    with live_server(create_app(url)) as base:
        yield base
    repo.close()


def test_the_seed_python_client_runs_unchanged(schedulezero: str, tmp_path: Path) -> None:
    """ScheduleZero's Python client (requests), as printed in its docs, reads tasklog."""
    (code,) = [b for b in seed_blocks("python") if "class ScheduleZeroClient" in b]
    script = tmp_path / "client.py"
    script.write_text(code.replace("http://localhost:8888", schedulezero), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Success rate: {100 * 5 / 7:.2f}%"
    assert lines[1] == "Warning: 2 recent errors!"
    assert lines[2:] == [
        "  - fetch-prices.None: ConnectionError: warehouse.example.com: connection refused"
    ] * 2


def curl_examples() -> list[str]:
    commands = []
    for block in seed_blocks("bash"):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.startswith("curl "):
                commands.append(command)
    return commands


def test_the_seed_curl_and_jq_examples_run(schedulezero: str) -> None:
    """Every ``curl | jq`` line of ScheduleZero's docs answers (JSON that jq reads)."""
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{tool} is missing (.ci/run installs it)")
            pytest.skip(f"{tool} is not installed")
    commands = curl_examples()
    assert len(commands) >= 12
    outputs = {}
    for command in commands:
        if "-X POST" in command:
            continue  # the admin endpoint: see test_the_seed_clear_example
        line = command.replace("http://localhost:8888", schedulezero).replace("curl ", "curl -sf ")
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line], capture_output=True, text=True, timeout=60,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs[command] = done.stdout
    rate = outputs['curl "http://localhost:8888/api/executions/stats" | jq .success_rate']
    assert float(rate) == round(100 * 5 / 7, 2)
    slow = outputs[
        "curl \"http://localhost:8888/api/executions\" | jq '.records | sort_by(.duration_ms) "
        "| reverse | .[0:10]'"
    ]
    assert len(json.loads(slow)) == 9


def test_the_seed_clear_example(tmp_path: Path) -> None:
    """``POST /api/executions/clear`` works with allow_admin and auth, and only then."""
    url = f"sqlite:///{tmp_path / 'clear.db'}"
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    n = len(repo)
    with live_server(create_app(url, auth="ops:pw", allow_admin=True)) as base:
        anonymous = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
             f"{base}/api/executions/clear"], capture_output=True, text=True, check=True,
        )
        assert anonymous.stdout == "401"
        done = subprocess.run(
            ["curl", "-s", "-u", "ops:pw", "-X", "POST", f"{base}/api/executions/clear"],
            capture_output=True, text=True, check=True,
        )
    assert json.loads(done.stdout) == {
        "status": "success", "message": "Execution history cleared", "records_cleared": n
    }
    assert len(repo) == 0
    repo.close()


# --------------------------------------------------------------- tasklog serve


def tasklog(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasklog", *args], capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def test_serve_refuses_what_cannot_work(tmp_path: Path) -> None:
    """Bad serve options are one line on stderr and exit status 2."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [
            (["serve", "--allow-admin"], "--allow-admin needs --auth"),
            (["serve", "--auth", "nocolon"], "USER:PASSWORD"),
            (["serve", "--port", "70000"], "--port"),
            (["serve", "--port", "http"], "--port"),
            (["serve", "--port", str(port)], f"Cannot listen on 127.0.0.1:{port}"),
            (["--repo", "nosuch://x", "serve"], "nosuch://x"),
        ]
        for args, named in cases:
            done = tasklog("--repo", f"sqlite:///{tmp_path / 'x.db'}", *args)
            assert done.returncode == 2, (args, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
            assert named in done.stderr, (args, done.stderr)
            assert "Traceback" not in done.stderr


def serve(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``tasklog serve`` on a free port; return it and its base URL once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tasklog", *args, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=2).close()
            break
        except urllib.error.HTTPError as err:
            err.close()
            break  # it answers (503 while the store is missing)
        except OSError:
            time.sleep(0.1)
    return process, base


def test_serve_warns_beyond_loopback_without_auth(tmp_path: Path) -> None:
    """Binding 0.0.0.0 without --auth prints a warning; SIGTERM stops it cleanly."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    repo.close()
    process, base = serve("--repo", url, "serve", "--host", "0.0.0.0", cwd=tmp_path)
    try:
        with urllib.request.urlopen(f"{base}/api/tasks", timeout=10) as response:
            assert len(json.loads(response.read())) == 4
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), out  # uvicorn ends as SIGTERM would
    assert "warning: serving on 0.0.0.0, beyond this machine, without --auth" in out


def test_serve_starts_before_its_store_exists(tmp_path: Path) -> None:
    """A store that does not exist yet: serve starts, /healthz is 503, then 200 once it does."""
    url = f"sqlite:///{tmp_path / 'later.db'}"
    process, base = serve("--repo", url, "serve", cwd=tmp_path)
    try:
        with pytest.raises(urllib.error.HTTPError) as down:
            urllib.request.urlopen(f"{base}/healthz", timeout=10)
        assert down.value.code == 503
        down.value.close()
        repo = open_repo(url, model=TaskRunRecord)
        write_history(repo)
        repo.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
                    assert response.status == 200
                    break
            except urllib.error.HTTPError as err:
                err.close()
                time.sleep(0.2)
        with urllib.request.urlopen(f"{base}/api/runs", timeout=10) as response:
            assert len(json.loads(response.read())["runs"]) == 9
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert "/healthz answers 503 until it can" in out


def test_serve_keeps_an_idle_connection(tmp_path: Path) -> None:
    """A connection left idle longer than uvicorn's default keep-alive (5 s) is
    still open for the next request (a poller's pooled connection)."""
    import http.client

    from tasklog.cli.serving import KEEP_ALIVE

    assert KEEP_ALIVE > 7
    url = f"sqlite:///{tmp_path / 'k.db'}"
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    repo.close()
    process, base = serve("--repo", url, "serve", cwd=tmp_path)
    try:
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        connection.request("GET", "/healthz")
        first = connection.getresponse()
        assert first.status == 200
        first.read()
        sock = connection.sock
        time.sleep(7)
        connection.request("GET", "/api/tasks")  # on the same socket: reconnecting would fail
        again = connection.getresponse()
        assert again.status == 200
        assert connection.sock is sock
        assert json.loads(again.read())
        connection.close()
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_serve_with_auth(tmp_path: Path) -> None:
    """--auth guards every endpoint of the served application."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    repo.close()
    env_auth = "ops:s3cret"
    process, base = serve("--repo", url, "serve", "--auth", env_auth, cwd=tmp_path)
    try:
        for path in ("/healthz", "/metrics", "/api/tasks", "/"):
            with pytest.raises(urllib.error.HTTPError) as denied:
                urllib.request.urlopen(base + path, timeout=10)
            assert denied.value.code == 401
            denied.value.close()
        request = urllib.request.Request(base + "/metrics")
        import base64

        token = base64.b64encode(env_auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b"tasklog_store_up 1.0" in response.read()
    finally:
        process.terminate()
        process.communicate(timeout=30)
