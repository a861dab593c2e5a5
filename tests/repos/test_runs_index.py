"""The SQL stores' runs index (``tasklog/repos/sql_runs.py``).

The index is a derived copy: after any sequence of writes, deletes, updates
and prunes it must hold exactly what rebuilding it from the records gives,
and every read about runs must answer as the generic path (reading the
records themselves, :class:`RecordsOnly`) answers for the same history.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import RepoFactory

import tasklog
from tasklog import MinimalRunRecord, TaskRunRecord, history, in_
from tasklog.repos.memory import MemoryRepo
from tasklog.repos.sql import SQLRepo

SQL_STORES = ("sqlite", "postgresql")
NOW = 1_800_000_000.0


class RecordsOnly(MemoryRepo[Any]):
    """A memory store without its runs index: reads about runs take the
    generic path of :mod:`tasklog.history`, over the records."""

    def _runs(self) -> None:
        return None

    def latest_per_task_rows(self) -> None:
        return None


def random_history(seed: int, runs: int = 60) -> list[list[dict[str, Any]]]:
    """Batches of records of *runs* runs over 4 tasks, in a shuffled order, with
    repeated run records, two closings, runs left open, runtimes missing."""
    rnd = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(runs):
        task = f"task-{i % 4}"
        run_id = f"r{i:03d}" if i % 7 else "shared"  # one run id in several tasks
        start = NOW - 3600 + i * 30 + rnd.random()
        base = {"task_name": task, "run_id": run_id, "host": f"h{i % 3}", "process": 100 + i}
        rows.append({**base, "action": "run", "created": start})
        if rnd.random() < 0.1:  # logged twice: the earlier one counts
            rows.append({**base, "action": "run", "created": start - 5, "host": "earlier"})
        rows.append({**base, "action": "log", "created": start + 1, "message": "working"})
        if rnd.random() < 0.8:
            outcome = rnd.choice(("success", "success", "fail", "inaction", "terminate"))
            runtime = None if rnd.random() < 0.3 else timedelta(seconds=rnd.randint(1, 99))
            rows.append({**base, "action": outcome, "created": start + 2, "runtime": runtime})
            if rnd.random() < 0.1:  # a second closing: the first one stored counts
                rows.append({**base, "action": "crash", "created": start + 3})
    rnd.shuffle(rows)
    batches = []
    while rows:
        size = rnd.randint(1, 25)
        batches.append(rows[:size])
        rows = rows[size:]
    return batches


def index_rows(repo: SQLRepo[Any]) -> list[tuple[Any, ...]]:
    """The runs index's rows, then its totals' rows but their versions, sorted
    (times rounded against float noise)."""
    runs = repo._index()
    assert runs is not None
    sums = [col for col in runs.totals.c if col.name != "version"]
    with repo.engine.connect() as conn:
        rows = conn.execute(sa.select(runs.table)).all()
        totals = conn.execute(sa.select(*sums)).all()
    return [
        *sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows),
        ("totals",),
        *sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in totals),
    ]


def rebuilt_rows(repo: SQLRepo[Any]) -> list[tuple[Any, ...]]:
    """The index rows made from the records alone (the index dropped first)."""
    runs = repo._index()
    assert runs is not None
    runs.drop(repo.engine)
    runs.ensure(repo.engine)
    return index_rows(repo)


def answers(repo: tasklog.Repository[Any]) -> dict[str, Any]:
    """What the reads about runs say of *repo*."""
    every = history.list_runs(repo, limit=None)
    pages: list[Any] = []
    cursor = None
    while True:
        page = history.list_runs(repo, limit=7, before=cursor)
        pages.extend(page)
        if len(page) < 7:
            break
        cursor = page[-1].cursor
    figures = tasklog.stats(repo)
    return {
        "runs": [(r.task_name, r.run_id, r.start, r.end, r.runtime, r.outcome, r.host)
                 for r in every],
        "pages": [(r.task_name, r.run_id) for r in pages],
        "fail": [r.run_id for r in history.list_runs(repo, outcome=["fail", "crash"])],
        "running": [r.run_id for r in history.list_runs(repo, outcome="running",
                                                         task_name=["task-1", "task-2"])],
        "window": [r.run_id for r in history.list_runs(repo, since=NOW - 3000, until=NOW - 2000)],
        "get": [(r.task_name, r.outcome) for r in
                filter(None, (history.get_run(repo, rid) for rid in ("shared", "r001", "r013")))],
        "open": sorted((r.task_name, r.run_id) for r in history.open_runs(repo)),
        "recent": history.recent_runs(repo, ["task-0", "task-3", "task-8"], 3),
        "ended": history.newest_closed(repo, ["task-0", "task-1", "task-2", "task-3", "x"]),
        "succeeded": history.newest_closed(repo, ["task-0", "task-1", "task-2"], "success"),
        "failed": history.newest_closed(repo, ["task-0", "task-3"], ["fail", "crash"]),
        "buckets": history.outcome_counts(repo, origin=NOW - 3000, step=450),
        "buckets_task": history.outcome_counts(
            repo, origin=NOW - 3000, step=450, task_name="task-1"
        ),
        "stats": figures,
        "stats_task": tasklog.stats(repo, task_name="task-2"),
        "stats_since": tasklog.stats(repo, since=NOW - 1800),
    }


def both(make_repo: RepoFactory, store: str) -> tuple[SQLRepo[Any], tasklog.Repository[Any]]:
    sql = make_repo(store, model=TaskRunRecord)
    assert isinstance(sql, SQLRepo)
    return sql, RecordsOnly(TaskRunRecord)


def write(repos: tuple[tasklog.Repository[Any], ...], batches: list[list[dict[str, Any]]]) -> None:
    for batch in batches:
        for repo in repos:
            repo.add_many([dict(row) for row in batch])


@pytest.mark.parametrize("store", SQL_STORES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_index_kept_by_writes_equals_one_rebuilt(
    make_repo: RepoFactory, store: str, seed: int
) -> None:
    """Batches in any order (run records after their closings, duplicates):
    the index folded batch by batch is the index built from the records, and
    the runs read from it are the generic path's."""
    sql, memory = both(make_repo, store)
    write((sql, memory), random_history(seed))
    kept = index_rows(sql)
    assert kept, "the history has runs"
    assert kept == rebuilt_rows(sql)
    assert answers(sql) == answers(memory)


@pytest.mark.parametrize("store", SQL_STORES)
@pytest.mark.parametrize("window", [0, 50_000], ids=["by-the-database", "from-the-rows"])
def test_figures_over_a_window_either_way(
    make_repo: RepoFactory, store: str, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stats(since=)`` sums a short window's runs itself and has the database
    sum a long one: both answer as the records do."""
    from tasklog.repos import sql_run_reads as sql_module

    monkeypatch.setattr(sql_module, "_WINDOW", window)
    sql, generic = both(make_repo, store)
    write((sql, generic), random_history(8))
    for since in (NOW - 3600, NOW - 1800, NOW - 600, NOW + 10):
        assert tasklog.stats(sql, since=since) == tasklog.stats(generic, since=since)
        assert tasklog.stats(sql, since=since, task_name="task-1") == (
            tasklog.stats(generic, since=since, task_name="task-1")
        )


@pytest.mark.parametrize("store", SQL_STORES)
def test_deletes_updates_and_prunes_keep_the_index_true(
    make_repo: RepoFactory, store: str
) -> None:
    """Each change to the records recomputes the runs it touched, in its transaction."""
    sql, memory = both(make_repo, store)
    write((sql, memory), random_history(4))
    changes = [
        lambda r: r.filter_by(run_id="r003", action="run").delete(),  # a run loses its start
        lambda r: r.filter_by(run_id="r005").delete(),  # a whole run goes
        lambda r: r.filter_by(run_id="r009", action="success").update(action="fail"),
        lambda r: r.filter_by(run_id="r010").update(run_id="moved"),  # keys move
        lambda r: r.filter_by(run_id="r011").update(task_name="task-9"),
        lambda r: r.filter_by(run_id="r012", action="log").update(message="no index change"),
        lambda r: r.filter_by(action="terminate").delete(),  # runs reopen
        lambda r: r.prune(keep_runs=9),
        lambda r: r.prune(older_than=NOW - 2500),
    ]
    for change in changes:
        assert change(sql) == change(memory)
        assert index_rows(sql) == rebuilt_rows(sql)
        assert answers(sql) == answers(memory)


@pytest.mark.parametrize("store", SQL_STORES)
def test_figures_kept_between_reads_follow_every_change(
    make_repo: RepoFactory, store: str
) -> None:
    """The percentiles of all time are kept until a task's runs change: a change
    that leaves the counts and the sum of runtimes as they were, one made by
    another repository (another process), a task whose runs all go and come
    back, and a rebuilt index are each seen by the next read."""
    sql, generic = both(make_repo, store)
    other = SQLRepo(engine=sql.engine, table=sql.table_name, model=TaskRunRecord)

    def run(task: str, run_id: str, start: float, seconds: float) -> list[dict[str, Any]]:
        base = {"task_name": task, "run_id": run_id}
        return [{**base, "action": "run", "created": start},
                {**base, "action": "success", "created": start + seconds,
                 "runtime": timedelta(seconds=seconds)}]

    history_ = [*run("a", "a1", NOW, 1.0), *run("a", "a2", NOW + 10, 2.0),
                *run("a", "a3", NOW + 20, 9.0), *run("b", "b1", NOW, 4.0)]
    write((sql, generic), [history_])
    assert tasklog.stats(sql) == tasklog.stats(generic)  # read, and kept
    kept = sql._runs.figures_kept if sql._runs is not None else {}
    assert "a" in kept, "a task's figures of all time are kept"
    assert None in kept, "the total's figures of all time are kept"
    changes = [
        # 1 s and 2 s become 1.5 s and 1.5 s: same count, same sum, other median
        lambda r: r.filter_by(run_id=in_(["a1", "a2"]), action="success").update(
            runtime=timedelta(seconds=1.5)),
        lambda r: r.filter_by(task_name="b").delete(),  # task b goes ...
        lambda r: r.add_many(run("b", "b2", NOW + 30, 7.0)),  # ... and comes back
    ]
    for change in changes:
        change(sql)
        change(generic)
        assert tasklog.stats(sql) == tasklog.stats(generic)
        assert tasklog.stats(sql, task_name="a") == tasklog.stats(generic, task_name="a")
    # another repository on the same table changes a run, and folds it in itself
    other.filter_by(run_id="a3", action="success").update(runtime=timedelta(seconds=0.5))
    generic.filter_by(run_id="a3", action="success").update(runtime=timedelta(seconds=0.5))
    assert tasklog.stats(other) == tasklog.stats(generic)
    assert tasklog.stats(sql) == tasklog.stats(generic)
    # a rebuilt index (dropped, as by another version): the kept figures are not used
    other.add_many(run("a", "a4", NOW + 40, 30.0))
    generic.add_many(run("a", "a4", NOW + 40, 30.0))
    runs = other._index()
    assert runs is not None
    runs.drop(other.engine)
    runs.ensure(other.engine)
    assert tasklog.stats(sql) == tasklog.stats(generic)
    other.close()


def test_recent_runs_without_json_each(make_repo: RepoFactory) -> None:
    """An SQLite without ``json_each`` reads each task's newest runs with one
    ``LIMIT`` per task instead, and answers the same."""
    sql, generic = both(make_repo, "sqlite")
    write((sql, generic), random_history(5))
    tasks = ["task-0", "task-1", "task-3", "task-8"]
    fast = history.recent_runs(sql, tasks, 4)
    sql._json_each = False
    assert history.recent_runs(sql, tasks, 4) == fast == history.recent_runs(generic, tasks, 4)


@pytest.mark.parametrize("store", SQL_STORES)
def test_a_change_makes_no_index_but_keeps_one_made_elsewhere(
    make_repo: RepoFactory, store: str
) -> None:
    """A delete on a store without an index makes none (the first read does);
    a repository that never read runs still keeps an index another one made."""
    sql, memory = both(make_repo, store)
    write((sql, memory), random_history(7))
    runs = sql._runs
    assert runs is not None
    sql.filter_by(run_id="r002").delete()
    memory.filter_by(run_id="r002").delete()
    assert not runs.exists(sql.engine)
    other = SQLRepo(sql.engine, table=sql.table_name, model=TaskRunRecord)
    try:
        assert answers(other) == answers(memory)  # made by this first read
        sql.filter_by(run_id="r004").delete()  # sql has not read runs itself
        memory.filter_by(run_id="r004").delete()
        assert index_rows(other) == rebuilt_rows(sql)
        assert answers(other) == answers(memory)
    finally:
        other.close()


@pytest.mark.parametrize("store", SQL_STORES)
def test_missing_index_is_built_from_the_records(
    make_repo: RepoFactory, store: str
) -> None:
    """A store written before the index existed (its table dropped here) gets
    one on first use, with every run; a records table dropped and made again
    under an old index does not inherit its runs."""
    sql, memory = both(make_repo, store)
    write((sql, memory), random_history(5))
    expected = answers(memory)
    runs = sql._index()
    assert runs is not None
    runs.drop(sql.engine)
    assert not runs.exists(sql.engine)
    reopened = SQLRepo(sql.engine, table=sql.table_name, model=TaskRunRecord)
    try:
        assert answers(reopened) == expected
        assert runs.exists(sql.engine)
    finally:
        reopened.close()
    sql.table.drop(sql.engine)  # the records go, the index stays behind
    fresh = SQLRepo(sql.engine, table=sql.table_name, model=TaskRunRecord)
    try:
        assert [] == history.list_runs(fresh)
        assert 0 == tasklog.stats(fresh).total.runs
    finally:
        fresh.close()


@pytest.mark.parametrize("store", SQL_STORES)
def test_richer_model_widens_the_index(make_repo: RepoFactory, store: str) -> None:
    """An index made for ``MinimalRunRecord`` (no host) is made again with the
    columns ``TaskRunRecord`` adds, so the runs show their host."""
    sql = make_repo(store, model=MinimalRunRecord)
    sql.add_many([
        {"task_name": "t", "run_id": "a", "action": "run", "created": NOW},
        {"task_name": "t", "run_id": "a", "action": "success", "created": NOW + 1},
    ])
    assert ["success"] == [r.outcome for r in history.list_runs(sql)]
    wide = SQLRepo(sql.engine, table=sql.table_name, model=TaskRunRecord)
    try:
        wide.add_many([{"task_name": "t", "run_id": "b", "action": "run", "created": NOW + 2,
                        "host": "box"}])
        found = {r.run_id: r for r in history.list_runs(wide)}
        assert {"a", "b"} == set(found)
        assert "box" == found["b"].host
        assert found["b"].running
    finally:
        wide.close()


@pytest.mark.parametrize("store", SQL_STORES)
def test_records_written_after_a_read_are_folded_in(make_repo: RepoFactory, store: str) -> None:
    """Writing does not touch the index; the next read (from this repository or
    another one on the same table) folds in what was stored since, once."""
    writer, memory = both(make_repo, store)
    reader = SQLRepo(writer.engine, table=writer.table_name, model=TaskRunRecord)
    batches = random_history(6)
    try:
        for at, batch in enumerate(batches):
            write((writer, memory), [batch])
            if at % 5 == 0:
                assert answers(reader) == answers(memory)
        runs = reader._index()
        assert runs is not None
        with writer.engine.connect() as conn:
            folded = conn.execute(sa.select(runs.state.c.folded)).scalar_one()
            top = conn.execute(sa.select(sa.func.max(writer.table.c._id))).scalar_one()
        assert folded == top
        assert index_rows(reader) == rebuilt_rows(writer)
    finally:
        reader.close()


@pytest.mark.parametrize("store", SQL_STORES)
def test_concurrent_writers_and_readers_miss_no_run(make_repo: RepoFactory, store: str) -> None:
    """Four threads write batches while two read (and so fold) all along: no
    record stored in a transaction that was still open during a fold is
    skipped — the index ends equal to one rebuilt from the records."""
    import threading

    sql = make_repo(store, model=TaskRunRecord)
    assert isinstance(sql, SQLRepo)
    repos = [SQLRepo(sql.engine, table=sql.table_name, model=TaskRunRecord) for _ in range(6)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(repo: SQLRepo[Any], seed: int) -> None:
        try:
            for batch in random_history(seed, runs=40):
                repo.add_many([{**row, "run_id": f"{seed}-{row['run_id']}"} for row in batch])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader(repo: SQLRepo[Any]) -> None:
        try:
            while not stop.is_set():
                history.list_runs(repo, limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(repos[i], 10 + i)) for i in range(4)]
    readers = [threading.Thread(target=reader, args=(repos[4 + i],)) for i in range(2)]
    for thread in (*readers, *writers):
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors, errors
    assert index_rows(repos[4]) == rebuilt_rows(sql)
    started = {(r.task_name, r.run_id) for r in sql.filter_by(action="run").all()}
    assert len(started) == len(history.list_runs(sql, limit=None))
    for repo in repos:
        repo.close()


@pytest.mark.parametrize("store", SQL_STORES)
def test_first_reads_at_once_all_answer(make_repo: RepoFactory, store: str) -> None:
    """A server's first requests arrive together on a store without an index
    (its threads share one repository): every one gets the runs from the index
    made once — none fails on a table another thread made meanwhile (the
    making is slowed here so that they all try at once)."""
    import threading
    import time

    sql, memory = both(make_repo, store)
    write((sql, memory), random_history(6))
    expected = history.list_runs(memory, limit=None)
    runs = sql._index()
    assert runs is not None
    runs.drop(sql.engine)
    shared = SQLRepo(sql.engine, table=sql.table_name, model=TaskRunRecord)
    assert shared._runs is not None
    callers = iter(range(100))

    def slow_mark(*_: Any, **__: Any) -> None:  # the others look before the first makes it
        time.sleep(0.1 if next(callers) == 0 else 0.2)

    sa.event.listen(shared._runs.state, "before_create", slow_mark)
    sa.event.listen(shared._runs.table, "before_create", lambda *_, **__: time.sleep(0.5))
    start = threading.Barrier(4)
    got: list[Any] = []
    errors: list[BaseException] = []

    def read() -> None:
        start.wait()
        try:
            got.append(history.list_runs(shared, limit=None))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert ([], True) == (errors, shared._runs_ready)  # not answered from the records
        assert [expected] * 4 == got
    finally:
        shared.close()


def test_a_fold_waits_for_writes_in_flight_on_postgresql(make_repo: RepoFactory) -> None:
    """On PostgreSQL a record key can be handed out before a smaller one is
    committed; the fold waits for open writing transactions, so the record of
    the slower one is not passed over."""
    import threading

    sql = make_repo("postgresql", model=TaskRunRecord)
    assert isinstance(sql, SQLRepo)
    sql.add({"task_name": "t", "run_id": "first", "action": "run", "created": NOW})
    assert ["first"] == [r.run_id for r in history.list_runs(sql)]  # the index exists
    runs = sql._index()
    assert runs is not None
    slow = sql.engine.connect()
    transaction = slow.begin()
    runs.writing(slow)  # as insert_rows does first
    slow.execute(sql.table.insert(), [{"task_name": "t", "run_id": "slow", "action": "run",
                                       "created": NOW + 1, "name": "n", "message": ""}])
    sql.add({"task_name": "t", "run_id": "quick", "action": "run", "created": NOW + 2})
    reader = SQLRepo(sql.engine, table=sql.table_name, model=TaskRunRecord)
    seen: list[list[str]] = []
    thread = threading.Thread(target=lambda: seen.append(
        [r.run_id for r in history.list_runs(reader)]))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), "the fold waits for the open writing transaction"
    transaction.commit()
    slow.close()
    thread.join(10)
    assert [["quick", "slow", "first"]] == seen
    assert index_rows(sql) == rebuilt_rows(sql)
    reader.close()


def test_a_read_only_database_is_read_from_the_records(tmp_path: Any) -> None:
    """A database tasklog may not write (its runs index cannot be made or
    brought up to date) still answers every read about runs, from the records."""
    path = tmp_path / "ro.db"
    writer = tasklog.open_repo(f"sqlite:///{path}", model=TaskRunRecord)
    writer.add_many([
        {"task_name": "t", "run_id": "a", "action": "run", "created": NOW},
        {"task_name": "t", "run_id": "a", "action": "fail", "created": NOW + 2},
        {"task_name": "t", "run_id": "b", "action": "run", "created": NOW + 3},
    ])
    writer.close()
    reader = tasklog.open_repo(f"sqlite:///file:{path}?mode=ro&uri=true", model=TaskRunRecord)
    try:
        assert [("b", None), ("a", "fail")] == [
            (r.run_id, r.outcome) for r in history.list_runs(reader)]
        assert 2 == tasklog.stats(reader).total.runs
        assert not sa.inspect(reader.engine).has_table("task_log_runs")
    finally:
        reader.close()
