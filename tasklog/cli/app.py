"""The ``tasklog`` application: its root options, its error guard and ``main``.

Errors a user can fix are one line on stderr and exit status 2: tasklog's
own errors (:class:`~tasklog.exceptions.TasklogError`, which
:class:`CLIError` is), a bad option value (whatever click finds), and an
unreachable store (the store itself says an error is transient). Anything
else is a bug in tasklog and is reported as one (exit status 1).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from ..config import DEFAULT_REPO, ENV_REPO, repo_url, resolve_repo
from ..exceptions import TasklogError
from ..records import TaskRunRecord
from ..repos import Repository, open_repo

__all__ = ["EXIT_USAGE", "CLIError", "State", "app", "fail", "main", "register", "state"]

EXIT_USAGE = 2
ENV_DEBUG = "TASKLOG_DEBUG"
"""Set to 1 to see the traceback of an internal error."""

F = TypeVar("F", bound=Callable[..., Any])

_HELP = f"""Read, watch and manage the history of recurring tasks stored by tasklog.

The repository is chosen in this order: --repo URL; else the environment
variable {ENV_REPO}; else `repo` under [tool.tasklog] in ./pyproject.toml; else
a top-level `repo` in ./tasklog.toml; else {DEFAULT_REPO}.

URLs: memory://, csv:///path/file.csv (or a path ending in .csv),
sqlite:///file.db, postgresql+psycopg://user@host/db, any SQLAlchemy URL,
with ?table=NAME for SQL (default task_log).
"""


class CLIError(TasklogError):
    """A problem the user can fix; printed as one line, exit status 2."""


def one_line(text: str) -> str:
    """*text* with its white space (newlines too) folded to single spaces."""
    return " ".join(str(text).split())


def fail(message: str) -> NoReturn:
    """Print *message* as one error line on stderr and exit with status 2."""
    typer.echo(f"tasklog: error: {one_line(message)}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _bad_usage(err: Any) -> NoReturn:
    """A usage error click found (a bad option value, an unknown option): one line."""
    fail(err.format_message())


class _Group(TyperGroup):
    """The root command: click's usage errors become one line, exit status 2."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; a usage error is one line on stderr and exit status 2."""
        from typer._click.exceptions import ClickException, NoArgsIsHelpError

        try:
            code = super().main(
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
        except TasklogError as err:  # a value an option's parser refused
            if not standalone_mode:
                raise
            try:
                fail(str(err))
            except typer.Exit as done:
                code = done.exit_code
        except NoArgsIsHelpError as err:  # ``tasklog`` alone: the help, exit status 2
            if not standalone_mode:
                raise
            err.show()
            code = err.exit_code
        except ClickException as err:
            if not standalone_mode:
                raise
            try:
                _bad_usage(err)
            except typer.Exit as done:
                code = done.exit_code
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("Aborted.", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code if isinstance(code, int) else 0)
        return code


app = typer.Typer(
    name="tasklog",
    cls=_Group,
    help=_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ------------------------------------------------------------------ state


class State:
    """What the top-level options chose, for the commands; the stores they opened."""

    def __init__(self, repo: str | None, table: str | None) -> None:
        self.repo_option = repo
        self.table = table
        self._url: str | None = None
        self.repos: list[Repository[Any]] = []

    @property
    def url(self) -> str:
        """The repository URL (``--repo``, the environment, a config file or the default)."""
        if self._url is None:
            self._url = repo_url(resolve_repo(self.repo_option)[0])
        return self._url

    def open_for_reading(self) -> Repository[Any]:
        """The existing store, with a model inferred from its columns (never created)."""
        from ..repos import open_existing

        return self.opened(open_existing(self.url, table=self.table))

    def open_for_writing(self) -> Repository[Any]:
        """The store, created with :class:`~tasklog.TaskRunRecord` when missing."""
        from ..exceptions import StoreNotFoundError

        try:
            return self.open_for_reading()
        except StoreNotFoundError:
            options: dict[str, Any] = {} if self.table is None else {"table": self.table}
            return self.opened(open_repo(self.url, model=TaskRunRecord, **options))

    def still_there(self) -> None:
        """Check that the store still exists (``tail -f``: it may be deleted meanwhile).

        Raises:
            CLIError: it does not (a deleted file, a dropped table).
        """
        from ..exceptions import StoreNotFoundError
        from ..repos import open_existing

        try:
            open_existing(self.url, table=self.table).close()
        except StoreNotFoundError as err:
            msg = f"The store is gone (deleted or moved): {err}"
            raise CLIError(msg) from None

    def opened(self, repo: Repository[Any]) -> Repository[Any]:
        """Remember *repo* (to close it, and to ask it about its errors)."""
        self.repos.append(repo)
        return repo

    def close(self) -> None:
        """Close the stores the command opened."""
        for repo in self.repos:
            with contextlib.suppress(Exception):
                repo.close()
        self.repos.clear()


_CURRENT: list[State] = []
"""The state of the command being run (for the error guard)."""


def state(ctx: typer.Context) -> State:
    """The :class:`State` of the command line *ctx* belongs to."""
    found = ctx.find_root().obj
    if not isinstance(found, State):  # pragma: no cover  (always set by the callback)
        found = State(None, None)
    return found


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"tasklog {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            "-r",
            metavar="URL",
            help=f"Repository URL (else ${ENV_REPO}, pyproject.toml, tasklog.toml, "
            f"{DEFAULT_REPO}).",
        ),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option("--table", "-t", metavar="T", help="SQL table (default task_log)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    current = State(repo, table)
    ctx.obj = current
    _CURRENT[:] = [current]
    ctx.call_on_close(current.close)


# ------------------------------------------------------------------ guard


def _store_outage(err: BaseException) -> str | None:
    """A one-line description of *err* when an opened store calls it transient."""
    for current in _CURRENT:
        for repo in current.repos:
            with contextlib.suppress(Exception):
                if repo.is_transient(err):
                    cause = getattr(err, "orig", None) or err
                    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
                    return f"Cannot read the store {current.url}: {first}"
    return None


def _guarded(func: F) -> F:
    """Run a command: tasklog's own errors become one line on stderr and exit 2.

    A broken pipe (``tasklog tail | head``) ends quietly. Any other exception
    is a bug and reaches :func:`main`, which reports it as one.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(0) from None
        except TasklogError as err:
            fail(str(err) or type(err).__name__)
        except Exception as err:
            outage = _store_outage(err)
            if outage is None:
                raise
            fail(outage)

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the final flush is quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def register(*commands: Callable[..., Any]) -> None:
    """Add *commands* to the application, each under the error guard.

    A command is a function with typer annotations; its name (``_`` as
    ``-``) is the command's name.
    """
    for command in commands:
        name = command.__name__.strip("_").replace("_", "-")
        app.command(name=name)(_guarded(command))


# ------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    """Run the command line (the ``tasklog`` console script)."""
    try:
        app(args=argv, prog_name="tasklog")
    except KeyboardInterrupt:
        typer.echo("", err=True)
        sys.exit(130)
    except Exception as err:  # a bug: said so, in one line (the traceback on request)
        if os.environ.get(ENV_DEBUG):
            traceback.print_exc()
        typer.echo(
            f"tasklog: internal error (a bug in tasklog; {ENV_DEBUG}=1 shows the traceback): "
            f"{type(err).__name__}: {one_line(str(err))}",
            err=True,
        )
        sys.exit(1)
