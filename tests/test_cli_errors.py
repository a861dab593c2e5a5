"""The ``tasklog`` command never lies or crashes (issue 11 item 4, issue 13 items 7 and 8):
bad option values, huge numbers, odd paths, files written by other programs, awkward task
names, copying a store into itself, CSV exports a spreadsheet would run, a store deleted
under ``tail -f`` — each one line and exit status 2, or shown safely.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_redis_key
from test_cli import (  # the fixtures are shared with test_cli.py
    BASE,
    STORES,
    _isolated,  # noqa: F401
    _make_url,  # noqa: F401
    _record,
    _runner,  # noqa: F401
    _store,  # noqa: F401
    _url,  # noqa: F401
    assert_usage_error,
    run,
    run_json,
    url_of,
    write_history,
)
from typer.main import get_command
from typer.testing import CliRunner

from tasklog import CSVFileRepo, MinimalRecord, TaskRunRecord, open_repo
from tasklog.cli import app, main
from tasklog.cli.managing import defuse
from tasklog.cli.options import MAX_COUNT
from tasklog.exceptions import StoreDataError

# ------------------------------------------------------- option values


def _value_options() -> list[tuple[str, str, str]]:
    """``(command, option, metavar)`` of every option of every command that takes a
    count (metavar N) or an age (metavar AGE)."""
    found = []
    group: Any = get_command(app)
    for name, command in sorted(group.commands.items()):
        for param in command.params:
            if getattr(param, "is_flag", False) or param.param_type_name != "option":
                continue
            if param.metavar in ("N", "AGE"):
                found.append((name, max(param.opts, key=len), param.metavar))
    return found


VALUE_OPTIONS = _value_options()
REQUIRED_ARGS = {"runs": ["alpha"], "logs": ["alpha"]}
BAD_VALUES = {
    "N": ["banana", "-1", "1.5", "99999999999999999999", str(MAX_COUNT + 1)],
    "AGE": ["banana", "99999999999d", "99999999999w", "1e400s", "0001-01-01"],
}


def test_every_count_and_age_option_is_covered() -> None:
    """The enumeration finds the options it should (it cannot silently test nothing)."""
    assert {("runs", "--limit"), ("errors", "--limit"), ("tail", "--lines"),
            ("prune", "--keep-runs"), ("prune", "--older-than"),
            ("stats", "--since")} <= {(c, o) for c, o, _ in VALUE_OPTIONS}


@pytest.mark.parametrize(("command", "option", "kind"), VALUE_OPTIONS)
def test_bad_values_are_one_line(runner: CliRunner, url: str, command: str, option: str,
                                 kind: str) -> None:
    """A word, a negative, a fraction or a number too large for any option of any
    command: one line naming the option, exit 2, no usage block, on every store."""
    for value in BAD_VALUES[kind]:
        result = run(runner, "--repo", url, command, *REQUIRED_ARGS.get(command, []),
                     option, value)
        assert_usage_error(result, option, repr(value))
        assert "Usage:" not in result.output


@pytest.mark.parametrize(("command", "option", "kind"), VALUE_OPTIONS)
def test_missing_value_is_one_line(runner: CliRunner, url: str, command: str, option: str,
                                   kind: str) -> None:
    """An option given without its value: one line, exit 2."""
    result = run(runner, "--repo", url, command, *REQUIRED_ARGS.get(command, []), option)
    assert_usage_error(result, option)


@pytest.mark.parametrize("args", [["tasks", "--bogus"], ["logs"], ["nope"],
                                  ["export", "--format"]])
def test_click_usage_errors_are_one_line(runner: CliRunner, url: str, args: list[str]) -> None:
    """An unknown option, a missing argument, an unknown command: one line, exit 2."""
    assert_usage_error(run(runner, "--repo", url, *args))


def test_largest_values_work_on_every_store(runner: CliRunner, url: str) -> None:
    """The largest accepted counts and ages are read by every store (no overflow, no SQL
    error): everything is kept, everything is counted."""
    assert 2 == len(run_json(runner, "--repo", url, "runs", "alpha", "-n", str(MAX_COUNT)))
    assert 8 == len(run_json(runner, "--repo", url, "tail", "-n", str(MAX_COUNT)))
    figures = run_json(runner, "--repo", url, "stats", "--since", "700000d")
    assert 4 == figures["total"]["runs"]
    figures = run_json(runner, "--repo", url, "stats", "--since", "0001-01-03T00:00:00+00:00")
    assert 4 == figures["total"]["runs"]
    for extra in (["--dry-run"], []):
        result = run(runner, "--repo", url, "prune", "--older-than", "700000d",
                     "--keep-runs", str(MAX_COUNT), *extra)
        assert 0 == result.exit_code, result.output
    assert 8 == len(run_json(runner, "--repo", url, "tail"))


# ------------------------------------------------------ bugs vs. users


def test_a_bug_shows_as_a_bug(url: str, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """An exception that is not tasklog's own user error (here a ValueError from deep
    inside) is an internal error, exit 1 — not passed off as a user error."""
    import tasklog.cli.reading

    def broken(repo: Any) -> Any:
        msg = "an unexpected bug"
        raise ValueError(msg)

    monkeypatch.setattr(tasklog.cli.reading, "latest_per_task", broken)
    with pytest.raises(SystemExit) as done:
        main(["--repo", url, "tasks"])
    assert 1 == done.value.code
    err = capsys.readouterr().err
    assert 1 == len(err.splitlines())
    assert "internal error" in err
    assert "ValueError: an unexpected bug" in err


def test_debug_shows_the_traceback(url: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """TASKLOG_DEBUG=1 prints the traceback of an internal error."""
    import tasklog.cli.reading

    def broken(repo: Any) -> Any:
        raise KeyError("x")

    monkeypatch.setattr(tasklog.cli.reading, "latest_per_task", broken)
    monkeypatch.setenv("TASKLOG_DEBUG", "1")
    with pytest.raises(SystemExit):
        main(["--repo", url, "tasks"])
    assert "Traceback" in capsys.readouterr().err


def test_unreachable_database_is_one_line(runner: CliRunner) -> None:
    """A database server that does not answer: one line, exit 2."""
    result = run(runner, "--repo", "postgresql+psycopg://nobody@127.0.0.1:1/none", "tasks")
    assert_usage_error(result, "127.0.0.1")


# ---------------------------------------------------------- task names


class TestTail:
    def test_unknown_task(self, runner: CliRunner, url: str) -> None:
        """``tail --task nope`` says "Unknown task", like every other command."""
        assert_usage_error(run(runner, "--repo", url, "tail", "--task", "nope"),
                           "Unknown task 'nope'", "alpha")

    def test_known_task(self, runner: CliRunner, url: str) -> None:
        """``tail --task`` shows that task's records only."""
        records = run_json(runner, "--repo", url, "tail", "--task", "beta")
        assert {"beta"} == {r["task_name"] for r in records}


# ------------------------------------------------------------- paths


class TestPaths:
    @pytest.mark.parametrize("name", ["somedir.csv", "somedir.db", "sqlite:///somedir.db"])
    def test_directory(self, runner: CliRunner, tmp_path: Path, name: str) -> None:
        """A directory where a store file goes says it is a directory."""
        (tmp_path / name.removeprefix("sqlite:///")).mkdir()
        assert_usage_error(run(runner, "--repo", name, "tasks"), "is a directory")

    @pytest.mark.parametrize("name", ["cron.db", "jobs.sqlite", "jobs.sqlite3"])
    def test_bare_sqlite_file(self, runner: CliRunner, tmp_path: Path, name: str) -> None:
        """A bare SQLite file name is accepted like a bare ``x.csv``."""
        write_history(f"sqlite:///{tmp_path / name}")
        tasks = run_json(runner, "--repo", name, "tasks")
        assert ["alpha", "beta", "gamma"] == [t["task_name"] for t in tasks]

    def test_bare_sqlite_file_missing(self, runner: CliRunner, tmp_path: Path) -> None:
        """A bare SQLite file name that does not exist: one line, and no file appears."""
        assert_usage_error(run(runner, "--repo", "cron.db", "tasks"), "does not exist")
        assert not (tmp_path / "cron.db").exists()

    def test_bare_sqlite_file_for_demo(self, runner: CliRunner, tmp_path: Path) -> None:
        """``demo`` creates a bare-named SQLite file."""
        assert 0 == run(runner, "--repo", "cron.db", "demo").exit_code
        assert (tmp_path / "cron.db").is_file()


# --------------------------------------------------- files of others


class TestForeignCSV:
    def test_iso_date_in_created(self, runner: CliRunner, tmp_path: Path) -> None:
        """An ISO date where epoch seconds go: one line naming the file, row and column."""
        path = tmp_path / "cron.csv"
        path.write_text(f"task_name,action,created\nok,log,{BASE}\n"
                        "backup,log,2024-03-01T10:00:00\n")
        assert_usage_error(run(runner, "--repo", str(path), "tail"),
                           "cron.csv", "row 2", "'created'", "2024-03-01T10:00:00")

    def test_iso_date_in_created_from_the_library(self, tmp_path: Path) -> None:
        """The store itself raises StoreDataError (a ValueError) with the same facts."""
        path = tmp_path / "cron.csv"
        path.write_text("task_name,action,created\nbackup,log,yesterday\n")
        repo = CSVFileRepo(path, model=MinimalRecord)
        with pytest.raises(StoreDataError, match=r"row 1 .*'created'.*'yesterday'"):
            repo.filter_by().all()
        with pytest.raises(ValueError, match=r"cron\.csv"):
            repo.filter_by(created=1.0).all()

    def test_byte_order_mark(self, runner: CliRunner, tmp_path: Path) -> None:
        """A header saved as "UTF-8 with BOM" is read as the header it is."""
        path = tmp_path / "excel.csv"
        path.write_bytes(f"\ufefftask_name,action,created\nbackup,log,{BASE}\n".encode())
        records = run_json(runner, "--repo", str(path), "tail")
        assert [{"task_name": "backup", "action": "log", "created": BASE}] == records
        assert ["backup"] == [t["task_name"] for t in run_json(runner, "--repo", str(path),
                                                                "tasks")]


# ----------------------------------------------------- awkward names


AWKWARD = ["two\nlines", "a\ttab", "", "esc\x1b[31mred", "[bold]markup[/bold]"]


class TestAwkwardTaskNames:
    @pytest.fixture(name="awkward_url")
    def _awkward_url(self, store: str, make_url: Callable[..., str]) -> str:
        url = make_url(store)
        records = []
        for n, name in enumerate(AWKWARD):
            run_id = f"w{n}"
            records += [_record(name, "run", n, run_id, "Run started"),
                        _record(name, "success", n + 0.5, run_id, "done")]
        write_history(url, records)
        return url

    def test_tables_escape_them(self, runner: CliRunner, awkward_url: str) -> None:
        """``tasks`` and ``stats`` show one row a task: control characters escaped, the
        empty name as "", markup as text."""
        for command in ("tasks", "stats"):
            result = run(runner, "--repo", awkward_url, command)
            assert 0 == result.exit_code, result.output
            text = result.stdout
            for shown in ("two\\nlines", "a\\ttab", '""', "esc\\x1b[31mred",
                          "[bold]markup[/bold]"):
                assert 1 == sum(shown in row for row in text.splitlines()), (shown, text)
            assert "\x1b" not in text
            assert "\t" not in text

    def test_log_lines_escape_them(self, runner: CliRunner, awkward_url: str) -> None:
        """Each record is one log line in ``tail``."""
        result = run(runner, "--repo", awkward_url, "tail")
        assert 10 == len(result.stdout.splitlines())
        assert "[two\\nlines] done" in result.stdout

    def test_json_keeps_them_exact(self, runner: CliRunner, awkward_url: str) -> None:
        """JSON shows the names exactly as stored."""
        names = [t["task_name"] for t in run_json(runner, "--repo", awkward_url, "tasks")]
        assert sorted(AWKWARD) == names

    def test_logs_of_a_name_with_a_newline(self, runner: CliRunner, awkward_url: str) -> None:
        """The task can still be named on the command line."""
        result = run(runner, "--repo", awkward_url, "logs", "two\nlines")
        assert 2 == len(result.stdout.splitlines()), result.output


# ------------------------------------------------------------- copy


class TestCopyIntoItself:
    def _refused(self, runner: CliRunner, src: str, dst: str) -> None:
        assert_usage_error(run(runner, "copy", src, dst), "same store")

    def test_sqlite_spellings(self, runner: CliRunner, tmp_path: Path) -> None:
        """``./c.db``, an absolute path, a bare name and a symlink name one SQLite store."""
        write_history(f"sqlite:///{tmp_path / 'c.db'}")
        (tmp_path / "link.db").symlink_to(tmp_path / "c.db")
        for dst in ("sqlite:///./c.db", f"sqlite:///{tmp_path / 'c.db'}", "c.db",
                    f"sqlite:///{tmp_path / 'link.db'}", "sqlite:///c.db?table=task_log"):
            self._refused(runner, "sqlite:///c.db", dst)
        assert 8 == len(run_json(runner, "--repo", "c.db", "tail", "-n", "100"))

    def test_csv_spellings(self, runner: CliRunner, tmp_path: Path) -> None:
        """A relative path, ``csv://`` with an absolute path and a symlink name one CSV."""
        write_history(f"csv://{tmp_path / 'c.csv'}")
        (tmp_path / "link.csv").symlink_to(tmp_path / "c.csv")
        for dst in ("./c.csv", f"csv://{tmp_path / 'c.csv'}", "link.csv"):
            self._refused(runner, "c.csv", dst)
        assert 8 == len(run_json(runner, "--repo", "c.csv", "tail", "-n", "100"))

    def test_postgresql_spellings(self, runner: CliRunner, make_url: Callable[..., str]) -> None:
        """The same URL, or with other connection options, is the same table."""
        url = make_url("postgresql")
        write_history(url)
        other = url.replace("?table=", "?connect_timeout=9&table=", 1)
        assert other != url
        self._refused(runner, url, url)
        self._refused(runner, url, other)

    def test_another_table_is_another_store(self, runner: CliRunner, tmp_path: Path) -> None:
        """The same database file with another table is copied into."""
        write_history("sqlite:///c.db")
        result = run(runner, "copy", "c.db", "sqlite:///c.db?table=other")
        assert 0 == result.exit_code, result.output
        assert 8 == len(run_json(runner, "--repo", "c.db", "--table", "other", "tail"))


# ------------------------------------------------------------- export


HOSTILE = ["=cmd|' /C calc'!A0", "@SUM(A1)", "+1+1", "-2+3", "\tleading tab", "\rleading cr",
           "=evil()"]


class TestExportFormulas:
    def _history(self, url: str) -> None:
        write_history(url, [
            _record("=evil()", "log", n, None, message, runtime=-1.5) for n, message in
            enumerate(HOSTILE)
        ])

    def test_cells_are_defused(self, runner: CliRunner, store: str,
                               make_url: Callable[..., str]) -> None:
        """Cells a spreadsheet would run get a leading ' ; numbers stay numbers."""
        url = make_url(store)
        self._history(url)
        result = run(runner, "--repo", url, "export", "--format", "csv")
        assert 0 == result.exit_code, result.output
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert ["'" + m for m in HOSTILE] == [r["message"] for r in rows]
        assert {"'=evil()"} == {r["task_name"] for r in rows}
        assert {"-1.5"} == {r["runtime"] for r in rows}
        for row in rows:
            for cell in row.values():
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
                assert not cell.startswith("-") or cell == "-1.5"

    def test_raw_is_exact(self, runner: CliRunner, tmp_path: Path) -> None:
        """``--raw`` writes the cells exactly, and reads back as the same records."""
        url = url_of("sqlite", tmp_path)
        self._history(url)
        out = tmp_path / "raw.csv"
        assert 0 == run(runner, "--repo", url, "export", "--raw", "-o", str(out)).exit_code
        back = run_json(runner, "--repo", str(out), "tail", "-n", "100")
        assert HOSTILE == [r["message"] for r in back]
        assert run_json(runner, "--repo", url, "tail", "-n", "100") == back

    def test_jsonl_is_exact(self, runner: CliRunner, tmp_path: Path) -> None:
        """JSON Lines are not spreadsheets: exact."""
        url = url_of("sqlite", tmp_path)
        self._history(url)
        result = run(runner, "--repo", url, "export", "--format", "jsonl")
        assert HOSTILE == [json.loads(line)["message"] for line in result.stdout.splitlines()]

    def test_the_csv_store_stays_exact(self, tmp_path: Path) -> None:
        """The CSV *store* keeps what was logged, carriage returns too, also after a
        rewrite (a delete)."""
        url = url_of("csv", tmp_path)
        self._history(url)
        repo = open_repo(url, model=TaskRunRecord)
        assert HOSTILE == [r.message for r in repo]
        assert 1 == repo.filter_by(message=HOSTILE[0]).delete()
        assert HOSTILE[1:] == [r.message for r in repo]
        repo.add({"task_name": "t", "action": "log", "created": BASE, "message": "a\rb\r\nc"})
        assert [*HOSTILE[1:], "a\rb\r\nc"] == [r.message for r in repo]
        repo.close()

    @pytest.mark.parametrize(("cell", "expected"), [
        ("=1", "'=1"), ("-1", "-1"), ("+2.5e3", "+2.5e3"), ("-", "'-"), ("-x", "'-x"),
        ("a=b", "a=b"), ("", ""), ("@", "'@"), ("-.5", "-.5"),
    ])
    def test_defuse(self, cell: str, expected: str) -> None:
        """Numbers stay, formulas get a quote, other text is untouched."""
        assert expected == defuse(cell)


# ------------------------------------------------------ tail -f, gone


def _gone(url: str, store: str) -> None:
    """Delete the store at *url*."""
    if store == "postgresql":
        base, table = url.rsplit("?table=", 1)
        engine = sa.create_engine(base)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE "{table}"'))
        engine.dispose()
    elif store == "csv":
        Path(url.removeprefix("csv://")).unlink()
    elif store == "redis":
        from tasklog.repos import open_existing

        repo = open_existing(url)
        drop_redis_key(repo)
        repo.close()
    else:
        path = Path(url.removeprefix("sqlite:///"))
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and file semantics")
@pytest.mark.parametrize("store", STORES)
def test_tail_follow_stops_when_the_store_is_deleted(store: str,
                                                      make_url: Callable[..., str]) -> None:
    """``tail -f`` whose store is deleted says so (one line) and exits 2."""
    url = make_url(store)
    write_history(url)
    env = {**{k: v for k, v in os.environ.items() if k != "TASKLOG_REPO"},
           "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tasklog", "--repo", url, "tail", "-f", "-n", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # following now
        assert "[gamma]" in first
        _gone(url, store)
        _, stderr = child.communicate(timeout=60)  # a guard against hanging
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert 2 == child.returncode, stderr
    lines = stderr.splitlines()
    assert 1 == len(lines), stderr
    assert "gone" in lines[0]
