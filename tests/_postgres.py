"""A throwaway PostgreSQL server for the test suite.

The server runs from a fresh temporary directory (data directory, Unix socket directory and
server log all live inside it), listens on a free TCP port on 127.0.0.1 only, trusts every
local connection and is tuned for speed, not durability (``fsync=off`` and friends), so it
must never hold anything of value.

Where the server comes from, in order:

1. ``TASKLOG_TEST_PG_URL`` -- an SQLAlchemy URL of an existing server; nothing is started.
2. PostgreSQL binaries under ``/usr/lib/postgresql/*/bin`` (newest version wins) or on
   ``PATH``; a private server is started for the test session. When running as root,
   ``initdb`` and ``postgres`` (which refuse to run as root) run as the ``postgres`` OS user
   (``subprocess`` ``user=``/``group=``, the equivalent of ``runuser -u postgres --``).
3. Neither: with ``CI`` set to a true value the tests *fail* (PostgreSQL is mandatory in CI);
   otherwise they are skipped with a reason.

Ready-to-paste ``tests/conftest.py`` snippet (``tests/`` has no ``__init__.py``, so pytest
puts ``tests/`` on ``sys.path`` and the module imports as ``_postgres``)::

    import pytest
    from _postgres import PostgresServer, session_postgres_server, session_postgres_url


    @pytest.fixture(scope="session")
    def postgres_url(request: pytest.FixtureRequest) -> str:
        '''SQLAlchemy URL of a PostgreSQL database for this test session.'''
        return session_postgres_url(request)


    @pytest.fixture(scope="session")
    def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
        '''The session's own server, for fault injection (stop/start it mid-test).'''
        server = session_postgres_server(request)
        if server is None:
            pytest.skip("TASKLOG_TEST_PG_URL points at an external server; cannot stop it")
        return server

Both functions share one server per process, so using both fixtures starts only one server.
A fault-injection test that calls ``server.stop_only()`` must call ``server.start_again()``
before it ends (e.g. in ``try/finally``) because other tests use the same server.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn

if TYPE_CHECKING:
    import pytest

__all__ = [
    "ENV_URL",
    "PostgresServer",
    "PostgresUnavailable",
    "find_pg_bin",
    "postgres_url_from_env",
    "require_postgres",
    "session_postgres_server",
    "session_postgres_url",
]

ENV_URL = "TASKLOG_TEST_PG_URL"
"""Environment variable holding the SQLAlchemy URL of an externally managed server."""

DATABASE = "tasklog_test"
"""Name of the database created in a freshly started server."""

_SUPERUSER = "postgres"
_OS_USER = "postgres"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3

StopMode = Literal["smart", "fast", "immediate"]


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be provided here (no binaries, no ``postgres`` user, or it failed)."""


# --------------------------------------------------------------------------- environment


def postgres_url_from_env() -> str | None:
    """Return the SQLAlchemy URL in ``TASKLOG_TEST_PG_URL``, or ``None`` if unset or blank."""
    url = os.environ.get(ENV_URL, "").strip()
    return url or None


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin`` paths: numeric version parts."""
    version = Path(path).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def _has_server_binaries(bin_dir: str) -> bool:
    return all(os.access(os.path.join(bin_dir, name), os.X_OK) for name in ("initdb", "postgres"))


def find_pg_bin() -> str | None:
    """Return the newest PostgreSQL server bin dir (``/usr/lib/postgresql/*/bin``, then PATH).

    Only directories holding executable ``initdb`` and ``postgres`` count.
    """
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for bin_dir in candidates:
        if _has_server_binaries(bin_dir):
            return bin_dir
    for name in ("postgres", "initdb"):  # Debian's /usr/bin/* are wrappers: resolve links
        found = shutil.which(name)
        if found is not None:
            bin_dir = os.path.dirname(os.path.realpath(found))
            if _has_server_binaries(bin_dir):
                return bin_dir
    return None


def _is_ci() -> bool:
    value = os.environ.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def require_postgres() -> bool:
    """Return True when a missing PostgreSQL must fail the tests (``CI`` is set and truthy).

    Outside CI a missing PostgreSQL only skips the tests that need it.
    """
    return _is_ci()


# --------------------------------------------------------------------------- helpers


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for automatically assigned (client and ``bind(0)``) ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Prefers a port *below* the kernel's ephemeral range: while the server is stopped for
    fault injection, clients keep reconnecting to its port, and a client socket whose
    ephemeral source port happens to equal the server port connects to itself (TCP
    simultaneous open) and then blocks the restart. Falls back to binding port 0.
    """
    low, _high = _ephemeral_range()
    if low > 20000:
        rng = random.Random()
        for _ in range(50):
            port = rng.randint(15000, low - 1)
            if _port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


# --------------------------------------------------------------------------- server


_LIVE: set[PostgresServer] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    """Stop every server still running when the interpreter exits (e.g. a crashed session)."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


_SHUTDOWN_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,  # wait for clients to disconnect
    "fast": signal.SIGINT,  # disconnect clients, checkpoint, exit cleanly
    "immediate": signal.SIGQUIT,  # exit at once, like a crash; recovery runs on next start
}


class PostgresServer:
    """A private PostgreSQL server in a temporary directory, for tests only.

    Typical use::

        with PostgresServer() as server:
            engine = sqlalchemy.create_engine(server.url)
            ...
            server.restart()        # same port, same data
            server.stop_only()      # server down, data kept (fault injection) ...
            server.start_again()    # ... and back on the same port

    The postmaster is a direct child process of the test process (run as the ``postgres``
    OS user when we are root), in its own session so a Ctrl-C aimed at pytest does not
    reach it. ``stop()`` shuts it down and deletes everything; it is idempotent and also
    runs at interpreter exit for servers that were never stopped.

    ``fsync`` and ``full_page_writes`` are off (an OS crash may corrupt the cluster, which
    is fine for a throwaway server). ``synchronous_commit`` stays *on* by default: with
    fsync off it costs nothing measurable, and it keeps every acknowledged commit across
    ``stop_only("immediate")`` (a simulated server crash); with it off, commits from the
    last ~200 ms before an immediate stop are silently lost.
    """

    def __init__(
        self,
        bin_dir: str | None = None,
        database: str = DATABASE,
        *,
        synchronous_commit: bool = True,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        """Prepare (but do not start) a server; ``bin_dir`` defaults to :func:`find_pg_bin`.

        ``extra_settings`` are passed as ``-c name=value`` server options.
        """
        self.bin_dir = bin_dir
        self.database = database
        self.synchronous_commit = synchronous_commit
        self.extra_settings = dict(extra_settings or {})
        self.port: int | None = None
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        """Wall-clock seconds the last start/start_again took (initdb included for start)."""

    # ----------------------------------------------------------------- properties

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (inside :attr:`base_dir`)."""
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        """Directory for the server's Unix socket (inside :attr:`base_dir`)."""
        return self._base() / "sock"

    @property
    def log_path(self) -> Path:
        """The server log file (inside :attr:`base_dir`)."""
        return self._base() / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database, e.g. ``postgresql+psycopg://...``."""
        return f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self._port()}/{self.database}"

    @property
    def dsn(self) -> str:
        """libpq connection string of the test database, for plain ``psycopg.connect``."""
        return self._dsn(self.database)

    @property
    def is_running(self) -> bool:
        """True while the postmaster process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> PostgresServer:
        """Create a fresh cluster on a free port, start it and create the test database.

        Raises :class:`PostgresUnavailable` (with the server log tail) if anything fails;
        in that case nothing is left behind.
        """
        if self.base_dir is not None:
            raise RuntimeError("server already started; use restart() or start_again()")
        began = time.monotonic()
        self._check_prerequisites()
        try:
            self._make_base_dir()
            self._initdb()
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self.port = _free_port()
                try:
                    self._spawn_and_wait()
                    break
                except PostgresUnavailable:
                    # Most likely someone grabbed the port between probe and bind: retry.
                    self._kill()
                    if attempt == _PORT_ATTEMPTS:
                        raise
            self._create_database()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop_only(self, mode: StopMode = "fast") -> None:
        """Stop the server but keep its data directory and port, for :meth:`start_again`.

        ``mode`` has ``pg_ctl stop -m`` semantics: ``fast`` disconnects clients and shuts
        down cleanly; ``immediate`` simulates a crash (recovery runs on the next start);
        ``smart`` waits for clients to disconnect. If the server has not exited after
        30 s it is SIGKILLed. Does nothing if the server is not running.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(_SHUTDOWN_SIGNALS[mode])
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_STOP_TIMEOUT)
        self._kill()  # no-op after a clean stop; reaps and SIGKILLs leftovers otherwise

    def start_again(self) -> None:
        """Start the stopped server again on the same port with the same data."""
        if self.base_dir is None or self.port is None:
            raise RuntimeError("server was never started (or was removed); use start()")
        if self.is_running:
            return
        began = time.monotonic()
        try:
            self._spawn_and_wait()
        except BaseException:
            self._kill()
            raise
        self.start_seconds = time.monotonic() - began

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop the server and start it again on the same port, keeping all data."""
        self.stop_only(mode)
        self.start_again()

    def stop(self) -> None:
        """Stop the server (SIGKILL if it will not stop) and delete its directory. Idempotent."""
        try:
            self.stop_only("fast")
        finally:
            self._kill()
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                self.base_dir = None
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log (for error messages)."""
        if self.base_dir is None:
            return "(server directory already removed)"
        return _tail(self.log_path, lines)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<PostgresServer port={self.port} {state} dir={self.base_dir}>"

    # ----------------------------------------------------------------- internals

    def _base(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("server has no directory (not started, or already stopped)")
        return self.base_dir

    def _port(self) -> int:
        if self.port is None:
            raise RuntimeError("server has no port yet (not started)")
        return self.port

    def _dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self._port()} user={_SUPERUSER} dbname={dbname}"

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return os.path.join(self.bin_dir, name)

    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _check_prerequisites(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = find_pg_bin()
        if self.bin_dir is None or not _has_server_binaries(self.bin_dir):
            raise PostgresUnavailable(
                "PostgreSQL server binaries (initdb, postgres) not found in "
                f"/usr/lib/postgresql/*/bin or on PATH; install PostgreSQL or set {ENV_URL}"
            )
        if self._as_root():
            try:
                pwd.getpwnam(_OS_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root but there is no {_OS_USER!r} OS user to run PostgreSQL "
                    "as (initdb/postgres refuse to run as root)"
                ) from None
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise PostgresUnavailable("psycopg (v3) is not installed") from None

    def _make_base_dir(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="tasklog-pg-", dir="/tmp"))
        self.base_dir = base
        with _LIVE_LOCK:
            _LIVE.add(self)
        base.chmod(0o755)  # the postgres user must be able to traverse it
        self.socket_dir.mkdir(mode=0o755)
        self.log_path.touch(mode=0o644)
        if self._as_root():
            entry = pwd.getpwnam(_OS_USER)
            for path in (base, self.socket_dir, self.log_path):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that run a PostgreSQL program safely (as postgres when root)."""
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": str(self._base())}
        for var in list(env):
            if var.startswith("PG"):  # PGDATA, PGPORT, PGOPTIONS, ... must not leak in
                del env[var]
        kwargs: dict[str, Any] = {
            "cwd": self._base(),  # the postgres user must be able to read its cwd
            "env": env,
            "stdin": subprocess.DEVNULL,
        }
        if self._as_root():
            entry = pwd.getpwnam(_OS_USER)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        return kwargs

    def _initdb(self) -> None:
        argv = [
            self._bin("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=180, check=False, **self._popen_kwargs()
        )
        if proc.returncode != 0:
            raise PostgresUnavailable(
                f"initdb failed with exit code {proc.returncode}: {' '.join(argv)}\n"
                f"--- stdout ---\n{proc.stdout.strip()}\n--- stderr ---\n{proc.stderr.strip()}"
            )

    def _spawn_and_wait(self) -> None:
        """Start the postmaster on :attr:`port` and wait until it accepts connections."""
        argv = [
            self._bin("postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self._port()),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.socket_dir),
        ]
        settings = {
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "on" if self.synchronous_commit else "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            **self.extra_settings,
        }
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== starting: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._popen_kwargs(),
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise PostgresUnavailable(
                    f"postgres exited with code {code} during startup on port {self.port}\n"
                    f"--- server log tail ---\n{self.log_tail()}"
                )
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = exc
                time.sleep(0.05)
        raise PostgresUnavailable(
            f"PostgreSQL on port {self.port} did not accept connections within "
            f"{_START_TIMEOUT:.0f}s: {last}\n--- server log tail ---\n{self.log_tail()}"
        )

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def _kill(self) -> None:
        """SIGKILL the postmaster's process group if anything in it is alive; reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:  # not reaped yet, so proc.pid cannot have been reused
            # The postmaster leads its own process group (start_new_session=True) and its
            # backends stay in it, so killpg gets the backends too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if self.base_dir is not None:
            pid_file = self.data_dir / "postmaster.pid"
            if proc.returncode is not None and proc.returncode < 0:  # killed: stale lock file
                with contextlib.suppress(OSError):
                    pid_file.unlink()


# --------------------------------------------------------------------------- pytest glue

_session_server: PostgresServer | None = None
_session_failure: str | None = None  # why the session server could not start (not retried)
_session_lock = threading.Lock()


def _unavailable(reason: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) because PostgreSQL cannot be provided."""
    import pytest

    if require_postgres():
        pytest.fail(
            f"PostgreSQL is required in CI (CI={os.environ.get('CI')!r}) but unavailable: {reason}",
            pytrace=False,
        )
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def session_postgres_server(request: pytest.FixtureRequest) -> PostgresServer | None:
    """Start (once per process) and return the session's server; ``None`` if the env URL is set.

    Registers the server's stop as a finalizer on ``request``. If no server can be started it
    calls ``pytest.fail`` when ``CI`` is set and ``pytest.skip`` otherwise; a failed start is
    remembered, so later tests fail/skip at once instead of trying again.
    """
    global _session_server, _session_failure
    if postgres_url_from_env() is not None:
        return None
    with _session_lock:
        if _session_server is not None and _session_server.base_dir is not None:
            return _session_server
        failure = _session_failure
        if failure is None:
            server = PostgresServer()
            try:
                server.start()
            except PostgresUnavailable as exc:
                failure = _session_failure = str(exc)
            else:
                _session_server = server
    if failure is not None:
        _unavailable(failure)

    def _finalize() -> None:
        global _session_server
        server.stop()
        with _session_lock:
            if _session_server is server:
                _session_server = None

    request.addfinalizer(_finalize)
    return server


def session_postgres_url(request: pytest.FixtureRequest) -> str:
    """Return ``TASKLOG_TEST_PG_URL`` if set, else the URL of the session's own server.

    Shares the server with :func:`session_postgres_server`; fails in CI / skips elsewhere
    when PostgreSQL cannot be provided.
    """
    env_url = postgres_url_from_env()
    if env_url is not None:
        return env_url
    server = session_postgres_server(request)
    assert server is not None
    return server.url
