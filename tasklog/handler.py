"""``RepoHandler``: a stdlib logging handler that stores records in a repository.

``emit`` turns the :class:`logging.LogRecord` into a row of the model's fields
(:mod:`tasklog.mapper`) and puts it to the handler's writer
(:mod:`tasklog.writer`: sync, buffer or background, chosen once from
:class:`~tasklog.writer.WriterOptions` and the store's write profile), which
stores it through ``Repository.insert_rows``. Failures never reach the code
that logs: they are counted in :attr:`RepoHandler.counts` and reported on
stderr once per cause.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from . import lifecycle
from .lifecycle import add_sigterm_hook as add_sigterm_hook  # where it used to live
from .mapper import RowMapper
from .mapper import fast_plan as _fast_plan  # noqa: F401  (tests import it from here)
from .repos import Repository, open_repo
from .writer import Mode, Overflow, Row, Writer, WriterOptions, make_writer, writing

__all__ = ["ActionFilter", "RepoHandler", "WriterOptions", "resolve_model"]

ErrorPolicy = Literal["warn", "ignore", "raise"]


def resolve_model(model: type[BaseModel] | str | None) -> type[BaseModel] | None:
    """Return a model class given as a class or a dotted path (``"pkg.mod.Model"``).

    Raises:
        ValueError: the path does not name a pydantic model class.
    """
    if model is None or isinstance(model, type):
        return model
    module_name, _, attr = str(model).rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError):
        found = None
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        msg = f"Cannot use model {model!r}: give a pydantic model class or its dotted path."
        raise ValueError(msg)
    return found


class ActionFilter(logging.Filter):
    """Pass only records whose ``action`` is one of *actions*.

    Route, for example, ``fail`` and ``crash`` records to a mail or chat handler.
    The actions may also be given as ``actions=[...]``, which is how
    :func:`logging.config.dictConfig` passes them.
    """

    def __init__(self, *args: str, actions: Iterable[str] = ()) -> None:
        super().__init__()
        self.actions = frozenset(str(a) for a in (*args, *actions))

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record's action is one of the chosen ones."""
        action = getattr(record, "action", None)
        return action is not None and str(action) in self.actions



class RepoHandler(logging.Handler):
    """Store log records in a repository.

    Args:
        repo: a repository, or a URL for :func:`tasklog.open_repo`.
        level: the handler's level.
        model: the record model (a class or a dotted path). With a URL it is
            the repository's model; with a repository object, records are
            validated against it before they are added (default: ``repo.model``).
        errors: what to do with a record that does not fit the model:
            ``"warn"`` reports each cause once on stderr, ``"ignore"`` only
            counts, ``"raise"`` raises from ``emit`` (for tests).
        writer: how records are written (:class:`~tasklog.writer.WriterOptions`:
            mode, batch size, queue, timeouts, SIGTERM).
        mode, batch_size, flush_interval, max_queue, overflow, block_timeout,
            retry_max_delay, flush_timeout, close_timeout, backlog,
            handle_sigterm: the same as flat keywords (for ``dictConfig``);
            when given they override *writer*'s.
        **options: passed to :func:`tasklog.open_repo` with a URL.
    """

    def __init__(
        self,
        repo: Repository[Any] | str,
        level: int | str = logging.NOTSET,
        *,
        model: type[BaseModel] | str | None = None,
        errors: ErrorPolicy = "warn",
        writer: WriterOptions | None = None,
        mode: Mode | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        max_queue: int | None = None,
        overflow: Overflow | None = None,
        block_timeout: float | None = None,
        retry_max_delay: float | None = None,
        flush_timeout: float | None = None,
        close_timeout: float | None = None,
        backlog: int | None = None,
        handle_sigterm: bool | None = None,
        **options: Any,
    ) -> None:
        if errors not in ("warn", "ignore", "raise"):
            msg = f"errors must be 'warn', 'ignore' or 'raise', not {errors!r}."
            raise ValueError(msg)
        if writer is not None and not isinstance(writer, WriterOptions):
            msg = f"writer must be a WriterOptions, not {writer!r}."
            raise TypeError(msg)
        chosen = (writer or WriterOptions()).replace(
            mode=mode, batch_size=batch_size, flush_interval=flush_interval,
            max_queue=max_queue, overflow=overflow, block_timeout=block_timeout,
            retry_max_delay=retry_max_delay, flush_timeout=flush_timeout,
            close_timeout=close_timeout, backlog=backlog, handle_sigterm=handle_sigterm,
        )
        resolved = resolve_model(model)
        self._owns_repo = isinstance(repo, str)
        """A repo opened here from a URL is closed by :meth:`close`."""
        if isinstance(repo, str):
            if resolved is not None:
                options["model"] = resolved
            repo = open_repo(repo, **options)
        elif options:
            msg = f"Unknown RepoHandler option(s): {', '.join(options)}."
            raise TypeError(msg)
        # only now, with every argument checked and the store open: a handler that
        # could not be made must not stay in logging's list (flushed and closed at exit)
        super().__init__(level)
        self.repo: Repository[Any] = repo
        self.model: type[BaseModel] = resolved or repo.model
        self.errors: ErrorPolicy = errors
        self._follows_repo = self.model is repo.model
        """Whether the handler writes the repository's own model, and so
        follows it when it is reassigned (``repo.model = RunRecord``)."""
        self._bind_model(self.model)
        self._reported: set[str] = set()
        me = weakref.ref(self)  # the writer must not keep its handler alive

        def validate(items: list[Row]) -> list[Row]:
            handler = me()
            return items if handler is None else handler._rows(items)

        def report(cause: str, text: str) -> None:
            handler = me()
            if handler is not None:
                handler._report(cause, text)

        assert self.lock is not None
        self.writer: Writer = make_writer(repo, chosen, validate, report, self.lock)
        self._put = self.writer.put
        if self.writer.reads_flush:
            repo.add_before_read(self.writer.flush)
        if self.writer.threaded and chosen.handle_sigterm:
            lifecycle.install_sigterm()
        lifecycle.track_writer(self.writer)

    @property
    def background(self) -> bool:
        """Whether a writer thread stores the records."""
        return self.writer.threaded

    @property
    def buffered(self) -> bool:
        """Whether records are held until a batch is full or the store is read."""
        return self.writer.mode == "buffer"

    @property
    def batch_size(self) -> int:
        """Most records per write."""
        return self.writer.batch_size

    def _bind_model(self, model: type[BaseModel]) -> None:
        """Make rows of *model*: the field plan and the one-pass fast path."""
        self.model = model
        self._mapper = RowMapper(model, self.repo)

    @property
    def counts(self) -> Mapping[str, int]:
        """``stored``, ``invalid``, ``dropped``, ``queued``, ``pending`` and ``retries`` so far.

        ``pending`` is what a SIGKILL now would lose: records accepted but not
        yet stored (or given up), i.e. ``queued`` plus the batch being written.
        A buffered handler first writes its buffer, as a read of its store would.
        """
        return self.writer.counts()

    # ---------------------------------------------------------------- emit
    def to_data(self, record: logging.LogRecord) -> dict[str, Any]:
        """The model's fields taken from *record* (not yet validated)."""
        return self._mapper.to_data(self, record)

    def emit(self, record: logging.LogRecord) -> None:
        """Put *record* to the writer as a row. Never raises (unless ``errors="raise"``)."""
        if writing():  # logged by a store while it writes (SQLAlchemy's own logs)
            return
        if self.writer.closing:  # logged after close() or logging.shutdown (from a __del__)
            self.writer.add("dropped")
            self._report(
                "closed",
                "a record was logged after the handler was closed (close() or "
                "logging.shutdown at exit) and is not stored; counted in "
                "handler.counts['dropped']",
            )
            return
        try:
            if self._follows_repo and self.repo.model is not self.model:
                self._bind_model(self.repo.model)  # repo.model was reassigned
            try:
                data = self._mapper.prepare(self, record)
            except RecursionError:
                raise
            except Exception as exc:  # its message cannot be made: wrong format args, __str__
                if self.errors == "raise":
                    raise
                self.writer.add("invalid")
                self._report(
                    f"unmappable:{type(exc).__name__}",
                    f"a record could not be turned into a row ({exc!r}) and is not stored; "
                    "further such records are only counted in handler.counts['invalid']",
                )
                return
            if self.errors == "raise":
                self._mapper.check(data)
            self._put(data)
        except ValidationError:
            if self.errors == "raise":
                raise
            self.writer.add("invalid")
        except RecursionError:  # as logging.StreamHandler does
            raise
        except Exception as exc:
            if self.errors == "raise":
                raise
            self.writer.add("dropped")
            self._report(f"emit:{type(exc).__name__}", f"a record could not be handled: {exc!r}")

    def _rows(self, items: list[Row]) -> list[Row]:
        """Validate queued *items* into rows; count and report the invalid ones."""
        return self._mapper.rows(items, self._invalid_item)

    def _invalid_item(self, exc: ValidationError) -> None:
        self.writer.add("invalid")
        if self.errors == "warn":
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ())) or "record"
            self._report(
                f"invalid:{where}:{err.get('type')}",
                f"a record does not fit {self.model.__name__} and is not stored "
                f"({where}: {err.get('msg')}); further such records are only counted "
                "in handler.counts['invalid']",
            )

    # --------------------------------------------------------- flush & close
    def flush(self) -> None:
        """Return once every record accepted so far is stored (or given up)."""
        self.writer.flush()

    def close(self) -> None:
        """Write what is held (retrying up to ``close_timeout``), stop the writer, close."""
        if not self.writer.closing:
            self.writer.close()
            if self.writer.reads_flush:
                self.repo.remove_before_read(self.writer.flush)
            lifecycle.untrack_writer(self.writer)
            if self._owns_repo:
                with contextlib.suppress(Exception):
                    self.repo.close()
        super().close()

    # ------------------------------------------------------------ reporting
    def _report(self, cause: str, text: str) -> None:
        if self.errors != "warn" or cause in self._reported:
            return
        self._reported.add(cause)
        with contextlib.suppress(Exception):  # stderr itself is gone: nothing left to tell
            sys.stderr.write(f"tasklog: {self.name or 'RepoHandler'} ({self.repo!r}): {text}\n")

    def __repr__(self) -> str:
        """Handler, level and repository."""
        level = logging.getLevelName(self.level)
        return f"<RepoHandler {self.repo!r} ({level})>"
