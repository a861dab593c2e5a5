"""Process-wide lifecycle: fork, exit and SIGTERM, in one place.

Two kinds of things register here, neither importing the other:

- **writers** (:mod:`tasklog.writer`, through :func:`track_writer`): after a fork
  the child resets them (``after_fork_in_child``); at exit their wait for a
  failing store is bounded; on SIGTERM what they hold is stored before the
  process dies of it (:func:`install_sigterm`, :func:`add_sigterm_hook`);
- **anything holding process-bound resources** (SQL engines' connections),
  through :func:`on_fork_in_child`: a bound method called in a forked child,
  held weakly.
"""

from __future__ import annotations

import atexit
import contextlib
import logging  # noqa: F401  first, so _at_exit runs before logging.shutdown
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "add_sigterm_hook",
    "install_sigterm",
    "on_fork_in_child",
    "run_deferred_sigterm",
    "track_writer",
    "untrack_writer",
]


class Writer(Protocol):
    """What the lifecycle needs of a handler's writer."""

    close_timeout: float
    deadline: float
    caller_writing: int | None

    def flush_for_exit(self) -> None: ...
    def after_fork_in_child(self) -> None: ...
    def __hash__(self) -> int: ...


_writers: weakref.WeakSet[Any] = weakref.WeakSet()
_fork_hooks: list[weakref.WeakMethod[Callable[[], object]]] = []
_fork_lock = threading.Lock()
_sigterm_installed = False
_sigterm_deferred = False
"""SIGTERM arrived while this thread wrote a batch from ``emit``: act once it is written."""
_sigterm_hooks: list[tuple[Callable[[], bool], Callable[[], object]]] = []
"""``(pending, hook)``: work to do on SIGTERM before the writers are flushed
(the runs module logs ``terminate`` for the open runs)."""
_sigterm_thread: threading.Thread | None = None


def track_writer(writer: Writer) -> None:
    """Take part in fork, exit and SIGTERM handling (held weakly)."""
    _writers.add(writer)


def untrack_writer(writer: Writer) -> None:
    """Stop taking part (the writer was closed)."""
    _writers.discard(writer)


def _live_writers() -> list[Writer]:
    return list(_writers)


def on_fork_in_child(method: Callable[[], object]) -> None:
    """Call the bound *method* in a forked child (held weakly: it goes with its object)."""
    with _fork_lock:
        _fork_hooks[:] = [ref for ref in _fork_hooks if ref() is not None]
        _fork_hooks.append(weakref.WeakMethod(method))


def install_sigterm() -> None:
    """Put :func:`_on_sigterm` in place of the default SIGTERM action (see ``handle_sigterm``)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
            _sigterm_installed = True
    except (ValueError, OSError, AttributeError):  # pragma: no cover  (no SIGTERM here)
        pass


def add_sigterm_hook(pending: Callable[[], bool], hook: Callable[[], object]) -> None:
    """Run *hook* on SIGTERM, before queued records are stored, when *pending()* is true.

    The hook runs in a thread of its own, not in the signal handler: it may
    log (and so take locks the interrupted main thread holds, which that
    thread releases as it goes on). The process then ends as SIGTERM would.
    """
    if (pending, hook) not in _sigterm_hooks:
        _sigterm_hooks.append((pending, hook))
    install_sigterm()


def run_deferred_sigterm() -> None:
    """Act on a SIGTERM that arrived while this thread wrote a batch (call after writing it)."""
    if _sigterm_deferred:
        _on_sigterm(signal.SIGTERM, None)


def _flush_writers() -> None:
    """Store what the writers hold, with one deadline for all (not one after another)."""
    writers = _live_writers()
    now = time.monotonic()
    for writer in writers:
        writer.deadline = min(writer.deadline, now + writer.close_timeout)
    for writer in writers:
        with contextlib.suppress(Exception):
            writer.flush_for_exit()


def _end_in_thread() -> None:
    """Run the SIGTERM hooks, store what the writers hold, then SIGTERM again."""
    for pending, hook in list(_sigterm_hooks):
        with contextlib.suppress(Exception):
            if pending():
                hook()
    _flush_writers()
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread's handler now lets it end


def _die_of_sigterm() -> None:
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _on_sigterm(signum: int, frame: object) -> None:
    """Store what the writers hold, then die of SIGTERM as with the default action.

    Runs in the main thread between two bytecodes, so it never waits for a lock
    the interrupted code may hold: it only signals the writers and waits on
    their progress with bounded, non-blocking acquires.
    """
    global _sigterm_deferred, _sigterm_thread
    if _sigterm_thread is not None:  # the second SIGTERM, sent by _end_in_thread
        if not _sigterm_thread.is_alive():
            _die_of_sigterm()
        return
    if any(pending() for pending, _ in list(_sigterm_hooks)):
        # runs are open: their terminate records are logged from a thread, since
        # this handler may have interrupted the main thread inside a logging call
        _sigterm_thread = threading.Thread(
            target=_end_in_thread, name="tasklog-sigterm", daemon=True
        )
        _sigterm_thread.start()
        return
    me = threading.get_ident()
    if any(w.caller_writing == me for w in _live_writers()):
        _sigterm_deferred = True  # this thread holds a batch: finish writing it first
        return
    _sigterm_deferred = False
    _flush_writers()
    _die_of_sigterm()


def _after_fork_in_child() -> None:
    global _sigterm_thread, _fork_lock
    _sigterm_thread = None
    _fork_lock = threading.Lock()  # another thread may have held it at the fork
    for writer in _live_writers():
        writer.after_fork_in_child()
    for ref in list(_fork_hooks):
        method = ref()
        if method is not None:
            method()


def _at_exit() -> None:
    """Bound the wait of ``logging.shutdown`` (which runs after this) for a failing store."""
    for writer in _live_writers():
        if writer.deadline == float("inf"):
            writer.deadline = time.monotonic() + writer.close_timeout


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
