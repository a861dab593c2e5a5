"""A throwaway ``redis-server`` for the test suite.

The server listens on a free TCP port on 127.0.0.1 only, runs from a fresh temporary
directory and keeps nothing on disk (``--save '' --appendonly no``) unless a test asks for
persistence (``RedisServer(persistent=True)``: an append-only file fsynced on every write,
so that a restart keeps every acknowledged write).

Where the server comes from, in order:

1. ``TASKLOG_TEST_REDIS_URL`` -- the URL of an existing server; nothing is started (tests
   use keys of their own and delete them).
2. ``redis-server`` on ``PATH`` or ``/usr/bin/redis-server`` (Debian's ``redis-server``
   package); a private server is started for the test session.
3. Neither: with ``CI`` set to a true value the tests *fail* (Redis is mandatory in CI);
   otherwise they are skipped with a reason.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from _postgres import _free_port, _is_ci, _tail

if TYPE_CHECKING:
    import pytest

__all__ = ["ENV_URL", "RedisServer", "RedisUnavailable", "find_redis_server", "session_redis_url"]

ENV_URL = "TASKLOG_TEST_REDIS_URL"
_START_TIMEOUT = 20.0
_PORT_ATTEMPTS = 3


class RedisUnavailable(RuntimeError):
    """Redis cannot be provided here (no ``redis-server``, no redis-py, or it failed)."""


def find_redis_server() -> str | None:
    """The ``redis-server`` executable, or None."""
    found = shutil.which("redis-server")
    if found is None and os.access("/usr/bin/redis-server", os.X_OK):
        found = "/usr/bin/redis-server"
    return found


_LIVE: set[RedisServer] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class RedisServer:
    """A private ``redis-server`` in a temporary directory, for tests only.

    ``stop_only()`` / ``start_again()`` stop the server and start it on the same port
    (with ``persistent=True`` the data comes back from the append-only file).
    """

    def __init__(self, *, persistent: bool = False) -> None:
        self.persistent = persistent
        self.port: int | None = None
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server log."""
        assert self.base_dir is not None
        return self.base_dir / "redis.log"

    @property
    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start on a free port. Raises :class:`RedisUnavailable` (with the log tail)."""
        binary = find_redis_server()
        if binary is None:
            raise RedisUnavailable("redis-server not found on PATH or at /usr/bin/redis-server")
        try:
            import redis  # noqa: F401
        except ImportError:
            raise RedisUnavailable("redis-py is not installed (pip install 'tasklog[redis]')") \
                from None
        self._binary = binary
        self.base_dir = Path(tempfile.mkdtemp(prefix="tasklog-redis-", dir="/tmp"))
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self.port = _free_port()
                try:
                    self._spawn_and_wait()
                    break
                except RedisUnavailable:
                    self._kill()
                    if attempt == _PORT_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_and_wait(self) -> None:
        assert self.base_dir is not None
        argv = [
            self._binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.base_dir), "--logfile", str(self.log_path),
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
        ]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.base_dir,
        )
        import redis

        deadline = time.monotonic() + _START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise RedisUnavailable(
                    f"redis-server exited with code {code} on port {self.port}\n"
                    f"--- server log tail ---\n{_tail(self.log_path)}"
                )
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
            try:
                if client.ping():
                    return
            except redis.RedisError as exc:  # not listening yet, or loading its data
                last = exc
            finally:
                client.close()
            time.sleep(0.02)
        raise RedisUnavailable(
            f"redis-server on port {self.port} did not answer within {_START_TIMEOUT:.0f}s: "
            f"{last}\n--- server log tail ---\n{_tail(self.log_path)}"
        )

    def stop_only(self) -> None:
        """Stop the server (SIGTERM: a clean shutdown), keeping its directory and port."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        self._kill()

    def start_again(self) -> None:
        """Start the stopped server again on the same port."""
        if self.is_running:
            return
        self._spawn_and_wait()

    def stop(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        try:
            self.stop_only()
        finally:
            self._kill()
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                self.base_dir = None
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<RedisServer port={self.port} {state} dir={self.base_dir}>"


_session_server: RedisServer | None = None
_session_failure: str | None = None
_session_lock = threading.Lock()


def unavailable(reason: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) because Redis cannot be provided."""
    import pytest

    if _is_ci():
        pytest.fail(
            f"Redis is required in CI (CI={os.environ.get('CI')!r}) but unavailable: {reason}",
            pytrace=False,
        )
    pytest.skip(f"Redis unavailable: {reason}")


def session_redis_url(request: pytest.FixtureRequest) -> str:
    """``TASKLOG_TEST_REDIS_URL`` if set, else the URL of the session's own server."""
    global _session_server, _session_failure
    env = os.environ.get(ENV_URL, "").strip()
    if env:
        return env
    with _session_lock:
        if _session_server is not None and _session_server.base_dir is not None:
            return _session_server.url
        failure = _session_failure
        if failure is None:
            server = RedisServer()
            try:
                server.start()
            except RedisUnavailable as exc:
                failure = _session_failure = str(exc)
            else:
                _session_server = server
    if failure is not None:
        unavailable(failure)

    def _finalize() -> None:
        global _session_server
        server.stop()
        with _session_lock:
            if _session_server is server:
                _session_server = None

    request.addfinalizer(_finalize)
    return server.url
