"""RedisRepo specifics: the indexes stay exact, queries use them, batches count once.

The conformance suite (test_conformance.py) runs on Redis like on every store;
these tests check what only Redis has: index keys that always agree with the
rows (through adds, deletes, updates, prunes and ring evictions), counts and
queries answered from the indexes, a batch retried after a lost reply stored
once, the change feed, several processes writing one key, and a restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _redis import RedisServer, RedisUnavailable, unavailable
from _workers import log_records
from conftest import drop_redis_key

from tasklog import (
    MemoryRepo,
    MinimalRunRecord,
    RepoHandler,
    RunRecord,
    TaskRunRecord,
    between,
    greater_equal,
    in_,
    less_than,
    not_equal,
)
from tasklog.repos import open_existing
from tasklog.repos.base import PartlyStored
from tasklog.repos.redis_store import RedisRepo

pytestmark = pytest.mark.redis


@pytest.fixture(name="rrepo")
def _rrepo(redis_url: str) -> Iterator[RedisRepo[Any]]:
    """A fresh RedisRepo (MinimalRunRecord) under a key of its own, dropped afterwards."""
    repo: RedisRepo[Any] = RedisRepo(redis_url, key=f"t_{uuid.uuid4().hex[:12]}")
    yield repo
    drop_redis_key(repo)
    repo.close()


def _fresh(redis_url: str, **options: Any) -> RedisRepo[Any]:
    return RedisRepo(redis_url, key=f"t_{uuid.uuid4().hex[:12]}", **options)


def check_indexes(repo: RedisRepo[Any]) -> None:
    """Assert that every index key holds exactly what the stored rows imply, and no
    other key exists under the store's prefix."""
    client = repo.client
    p = repo._prefix
    rows = {int(k): v for k, v in client.hgetall(p + "rows").items()}
    want: dict[str, Any] = {}
    zsets: dict[str, dict[int, float]] = {p + "ids": {}}
    listed: dict[str, set[str]] = {}
    runs: dict[str, dict[str, int]] = {}
    for row_id, value in rows.items():
        layout, row = repo._decode(value)
        zsets[p + "ids"][row_id] = row_id
        for slot, name in enumerate(("task_name", "action", "run_id")):
            if layout.head[slot] is None and name in layout.kinds:
                continue
            v = row.get(name)
            key = p + (f"z:{name}" if v is None else f"x:{name}:{v}")
            zsets.setdefault(key, {})[row_id] = row_id
            if v is not None and name in ("task_name", "action"):
                listed.setdefault(p + f"v:{name}", set()).add(str(v))
        task, action = row.get("task_name"), row.get("action")
        if task is not None and action is not None and None not in layout.head[:2]:
            key = p + f"p:{len(str(task).encode())}:{task}:{action}"
            zsets.setdefault(key, {})[row_id] = row_id
        created = row.get("created")
        if layout.scored and created is not None and created == created:
            zsets.setdefault(p + "created", {})[row_id] = float(created)
        if row.get("run_id") is not None:
            task = row.get("task_name")
            key = p + ("rz" if task is None else f"r:{task}")
            members = runs.setdefault(key, {})
            members[row["run_id"]] = max(members.get(row["run_id"], 0), row_id)
    got_keys = {k.decode() for k in client.scan_iter(match=p + "*", count=1000)}
    fixed = {p + n for n in ("seq", "rows", "tok", "feed", "meta", "layouts")}
    for key, members in zsets.items():
        if members:
            want[key] = {str(m): s for m, s in members.items()}
    for key, values in listed.items():
        want[key] = values
    for key, members in runs.items():
        want[key] = {r: float(i) for r, i in members.items()}
    assert set(want) == got_keys - fixed, "index keys"
    for key, expected in want.items():
        if isinstance(expected, set):
            got: Any = {m.decode() for m in client.smembers(key)}
        elif key.startswith((p + "r:", p + "rz")):
            got = {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}
        else:
            got = {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}
        assert expected == got, key


def _random_ops(repo: Any, mirror: MemoryRepo[Any], seed: int) -> None:
    rnd = random.Random(seed)
    tasks, actions = ["a", "b", "c", "d"], ["run", "success", "fail", "log"]
    runs = ["r0", "r1", "r2", "r3", None]
    for step in range(14):
        batch = [
            {"task_name": rnd.choice(tasks[:3]), "action": rnd.choice(actions),
             "created": float(step * 100 + i), "run_id": rnd.choice(runs)}
            for i in range(rnd.randint(1, 90))
        ]
        for target in (repo, mirror):
            target.add_many(batch)
        kind = step % 4
        if kind == 1:
            task, action = rnd.choice(tasks), rnd.choice(actions)
            assert mirror.filter_by(task_name=task, action=action).delete() == repo.filter_by(
                task_name=task, action=action).delete()
        elif kind == 2:
            run, action = rnd.choice(runs[:2]), rnd.choice(actions)
            assert mirror.filter_by(run_id=run).update(task_name="d", action=action) == \
                repo.filter_by(run_id=run).update(task_name="d", action=action)
        elif kind == 3:
            keep = rnd.randint(0, 3)
            cutoff = float(step * 100 - rnd.randint(0, 300))
            assert mirror.prune(keep_runs=keep, older_than=cutoff) == repo.prune(
                keep_runs=keep, older_than=cutoff)
        check_indexes(repo)
        assert mirror.filter_by().all() == repo.filter_by().all()
        for field, values in (("task_name", tasks), ("action", actions), ("run_id", runs)):
            for value in values:
                assert mirror.filter_by(**{field: value}).all() == repo.filter_by(
                    **{field: value}).all(), (field, value)
                assert mirror.filter_by(**{field: value}).count() == repo.filter_by(
                    **{field: value}).count()
        for conditions in (
            {"task_name": "a", "action": "log"},
            {"task_name": in_(["a", "b"]), "action": in_(["run", "fail"])},
            {"run_id": in_([None, "r1"]), "created": greater_equal(step * 50.0)},
            {"created": between(100.0, 450.0), "task_name": "c"},
            {"created": less_than(200.0)},
            {"action": not_equal("log"), "task_name": "b"},
        ):
            want = mirror.filter_by(**conditions)
            got = repo.filter_by(**conditions)
            assert (want.all(), want.count(), want.last(), want.first(), want.limit(3)) == (
                got.all(), got.count(), got.last(), got.first(), got.limit(3)), conditions


class TestIndexes:
    """The indexes agree with the rows, and queries agree with the memory store."""

    @pytest.mark.parametrize("seed", [1, 2])
    def test_random_operations_match_memory(self, rrepo: RedisRepo[Any], seed: int) -> None:
        """Adds, deletes, index-moving updates and prunes keep every index exact and
        give the same answers as MemoryRepo."""
        _random_ops(rrepo, MemoryRepo(), seed)

    def test_ring_matches_memory(self, redis_url: str) -> None:
        """With max_size (a ring) evictions keep the indexes exact too."""
        repo = _fresh(redis_url, max_size=150)
        try:
            _random_ops(repo, MemoryRepo(max_size=150), 3)
        finally:
            drop_redis_key(repo)
            repo.close()

    def test_ring_cap_is_kept_in_redis(self, redis_url: str) -> None:
        """max_size is the key's: a second writer without max_size honours it."""
        capped = _fresh(redis_url, max_size=3)
        other: RedisRepo[Any] = RedisRepo(redis_url, key=capped.key)
        try:
            for i in range(5):
                other.add({"task_name": "t", "action": "log", "created": float(i)})
            assert ([2.0, 3.0, 4.0], 3) == ([r.created for r in capped], len(capped))
            check_indexes(capped)
        finally:
            drop_redis_key(capped)
            capped.close()
            other.close()

    def test_keep_runs_interleaved(self, rrepo: RedisRepo[Any]) -> None:
        """keep_runs ranks runs by their newest record, like every store (plan_prune)."""
        records = [
            ("a", "run", "r1"), ("a", "run", "r2"), ("a", "log", "r1"), ("a", "log", None),
            ("b", "run", "r1"), ("a", "success", "r2"), ("b", "log", None),
        ]
        items = [{"task_name": t, "action": a, "created": float(i), "run_id": r}
                 for i, (t, a, r) in enumerate(records)]
        mirror = MemoryRepo()
        mirror.add_many(items)
        rrepo.add_many(items)
        assert (mirror.prune(keep_runs=1), mirror.filter_by().all()) == (
            rrepo.prune(keep_runs=1), rrepo.filter_by().all())
        check_indexes(rrepo)


class TestQueriesUseIndexes:
    """Selective queries and counts read only what the indexes point to."""

    @pytest.fixture(name="spied")
    def _spied(self, rrepo: RedisRepo[Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        rrepo.add_many(
            [{"task_name": f"t{i % 50}", "action": "fail" if i % 500 == 7 else "log",
              "created": float(i), "run_id": f"r{i // 10}"} for i in range(5000)]
        )
        calls: list[tuple[str, int]] = []
        real = rrepo._call

        def spy(op: str, *args: Any) -> Any:
            out = real(op, *args)
            rows = int(out[1]) if op == "page" and len(out) > 2 else 0  # values returned
            calls.append((op, rows))
            return out

        monkeypatch.setattr(rrepo, "_call", spy)
        return {"repo": rrepo, "calls": calls}

    def test_selective_query_fetches_only_matches(self, spied: dict[str, Any]) -> None:
        """task_name + action: the rows fetched are the matches, nothing more."""
        repo, calls = spied["repo"], spied["calls"]
        got = repo.filter_by(task_name="t7", action="fail").all()
        fetched = sum(n for op, n in calls if op == "page")
        assert (10, 10) == (len(got), fetched)

    def test_last_reads_one_row(self, spied: dict[str, Any]) -> None:
        """.last() of an equality reads one row."""
        repo, calls = spied["repo"], spied["calls"]
        last = repo.filter_by(task_name="t3").last()
        assert (4953.0, 1) == (last.created, sum(n for op, n in calls if op == "page"))

    def test_created_range_fetches_only_the_range(self, spied: dict[str, Any]) -> None:
        """A created range is read from its index."""
        repo, calls = spied["repo"], spied["calls"]
        got = repo.filter_by(created=between(100.0, 119.0)).all()
        assert (20, 20) == (len(got), sum(n for op, n in calls if op == "page"))

    def test_counts_fetch_no_rows(self, spied: dict[str, Any]) -> None:
        """Counts of indexed conditions never fetch rows."""
        repo, calls = spied["repo"], spied["calls"]
        counts = (
            len(repo),
            repo.filter_by(task_name="t1").count(),
            repo.filter_by(task_name="t7", action="fail").count(),
            repo.filter_by(task_name=in_(["t1", "t2"]), action="log").count(),
            repo.filter_by(created=greater_equal(4000.0)).count(),
            repo.filter_by(created=greater_equal(4000.0), action="log").count(),
        )
        assert ((5000, 100, 10, 200, 1000, 998), 0) == (
            counts, sum(n for op, n in calls if op == "page"))


class TestBatches:
    """One batch: one atomic call, stored once even when retried."""

    def test_lost_reply_retried_once(self, rrepo: RedisRepo[Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
        """A batch whose reply is lost (the script ran) and that is retried is stored once."""
        real = rrepo._script
        lost = {"n": 0}

        def flaky(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            if kwargs["args"][0] == "add" and lost["n"] == 0:
                lost["n"] += 1
                raise redis.ConnectionError("reply lost")
            return out

        monkeypatch.setattr(rrepo, "_script", flaky)
        rows = [rrepo.schema.row(MinimalRunRecord(task_name="t", action="log", created=1.0))]
        with pytest.raises(redis.ConnectionError):
            rrepo.insert_rows(rows)
        rrepo.insert_rows(rows)  # the handler's retry: the same list
        rrepo.insert_rows(list(rows))  # a new batch with the same content
        assert (1, 2) == (lost["n"], len(rrepo))

    @staticmethod
    def _rows(repo: RedisRepo[Any], n: int) -> list[dict[str, Any]]:
        return [
            repo.schema.row(MinimalRunRecord(task_name=f"t{i % 3}", action="log",
                                             created=float(i), run_id=f"r{i}"))
            for i in range(n)
        ]

    @pytest.mark.parametrize("error", [redis.ConnectionError("reply lost"),
                                       redis.ResponseError("OOM command not allowed")],
                             ids=["lost", "oom"])
    def test_big_batch_stored_in_parts_once(self, rrepo: RedisRepo[Any],
                                            monkeypatch: pytest.MonkeyPatch,
                                            error: Exception) -> None:
        """A batch of more than 1,000 rows goes in parts (each packed while Redis
        stores the one before); when a middle part fails for a passing reason
        (its reply lost, Redis out of memory), the retried batch stores every
        part once, in order."""
        real = redis.connection.Connection.read_response
        replies = {"n": 0}

        def lossy(conn: Any, *args: Any, **kwargs: Any) -> Any:
            out = real(conn, *args, **kwargs)
            replies["n"] += 1
            if replies["n"] == 2:  # the second part ran; the caller sees it fail
                raise error
            return out

        rows = self._rows(rrepo, 2500)
        rrepo.create()  # the layout registered: from now on, only the parts are read
        monkeypatch.setattr(redis.connection.Connection, "read_response", lossy)
        with pytest.raises(type(error)):
            rrepo.insert_rows(rows)
        assert 2500 == len(rrepo)  # the third part was in flight, after a stored one
        rrepo.insert_rows(rows)  # the handler's retry: the same list
        created = [r.created for r in rrepo.filter_by().all()]
        assert (list(map(float, range(2500))), 2500) == (created, rrepo.position())

    @pytest.mark.parametrize("overlapped", [True, False], ids=["overlapped", "in_turn"])
    def test_failing_part_keeps_the_parts_before(self, rrepo: RedisRepo[Any],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 overlapped: bool) -> None:
        """When a later part cannot be written, the parts before stay stored,
        ``PartlyStored`` says how many rows they hold, and a handler stores
        the rest: only the bad record is lost, none is stored twice (parts
        packed while Redis stores the one before, or sent in turn as on a
        Cluster client)."""
        monkeypatch.setattr(rrepo, "_overlaps", lambda: overlapped)
        real = rrepo._pack

        def picky(rows: list[dict[str, Any]], layout: Any) -> list[bytes]:
            if any(row["run_id"] == "r1500" for row in rows):
                raise ValueError("cannot pack r1500")
            return real(rows, layout)

        monkeypatch.setattr(rrepo, "_pack", picky)
        with pytest.raises(PartlyStored) as info:
            rrepo.insert_rows(self._rows(rrepo, 2500))
        assert (1000, 1000, "cannot pack r1500") == (
            info.value.stored, len(rrepo), str(info.value.__cause__))
        drop_redis_key(rrepo)
        handler = RepoHandler(rrepo, mode="buffer", batch_size=5000, errors="ignore")
        logger = logging.getLogger(f"parts.{uuid.uuid4().hex}")
        logger.propagate = False
        logger.addHandler(handler)
        for i in range(2500):
            logger.warning("x", extra={"task_name": "t", "action": "log", "run_id": f"r{i}"})
        handler.flush()
        ids = [r.run_id for r in rrepo.filter_by().all()]
        assert ([f"r{i}" for i in range(2500) if i != 1500], 2499, 1) == (
            ids, handler.counts["stored"], handler.counts["invalid"])
        handler.close()

    def test_part_after_a_refused_part_is_not_stored(
        self, rrepo: RedisRepo[Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The part sent while Redis refuses the one before it is not stored
        (the script checks the token of the part before): the batch leaves its
        first part only, and PartlyStored says so."""
        real = rrepo._pack

        def broken(rows: list[dict[str, Any]], layout: Any) -> list[bytes]:
            values = real(rows, layout)
            if rows[0]["run_id"] == "r1000":  # the second part: a header Lua cannot read
                values[0] = b"1|3|" + b"\x00" * 3 + b"[]"
            return values

        monkeypatch.setattr(rrepo, "_pack", broken)
        with pytest.raises(PartlyStored) as info:
            rrepo.insert_rows(self._rows(rrepo, 3000))
        runs = [r.run_id for r in rrepo.filter_by().all()]
        assert (1000, [f"r{i}" for i in range(1000)]) == (info.value.stored, runs)
        check_indexes(rrepo)

    def test_big_batch_after_script_flush(self, rrepo: RedisRepo[Any]) -> None:
        """A server that lost its scripts (a restart, ``SCRIPT FLUSH``) gets the
        script again in the middle of a batch sent in parts."""
        rrepo.insert_rows(self._rows(rrepo, 1500))
        rrepo.client.script_flush()
        rrepo.insert_rows(self._rows(rrepo, 2500))
        created = [r.created for r in rrepo.filter_by().all()]
        assert [*map(float, range(1500)), *map(float, range(2500))] == created

    def test_is_transient(self, rrepo: RedisRepo[Any]) -> None:
        """Connection, timeout, loading, failover and OOM errors are retried; others not."""
        assert ([True] * 6, [False, False]) == (
            [rrepo.is_transient(e) for e in (
                redis.ConnectionError("x"), redis.TimeoutError("x"),
                redis.BusyLoadingError("x"), redis.exceptions.ReadOnlyError("x"),
                redis.ResponseError("OOM command not allowed"), ConnectionRefusedError())],
            [rrepo.is_transient(e) for e in (redis.ResponseError("WRONGTYPE"), ValueError())],
        )

    def test_unreachable_server_is_transient(self) -> None:
        """A server that is not there raises an error the handler retries."""
        repo: RedisRepo[Any] = RedisRepo("redis://127.0.0.1:1/0", key="nowhere")
        with pytest.raises(redis.ConnectionError) as info:
            repo.add({"task_name": "t", "action": "log", "created": 1.0})
        assert repo.is_transient(info.value)


class TestFeed:
    """records_after: new records after a position, waiting on the stream."""

    def test_records_after(self, rrepo: RedisRepo[Any]) -> None:
        """Only records stored after the position come back, with the new position."""
        rrepo.add_many([{"task_name": "t", "action": "log", "created": float(i)}
                        for i in range(3)])
        start = rrepo.position()
        rrepo.add_many([{"task_name": "t", "action": "log", "created": float(i)}
                        for i in range(3, 6)])
        got, pos = rrepo.records_after(start, limit=2)
        rest, end = rrepo.records_after(pos)
        none, same = rrepo.records_after(end)
        assert ([3.0, 4.0], [5.0], [], end, end) == (
            [r.created for r in got], [r.created for r in rest], none, same, rrepo.position())

    def test_wait_wakes_on_a_new_batch(self, rrepo: RedisRepo[Any]) -> None:
        """A waiting reader gets a batch another writer stores meanwhile."""
        start = rrepo.position()
        other: RedisRepo[Any] = RedisRepo(rrepo.url, key=rrepo.key)

        def write() -> None:
            time.sleep(0.3)
            other.add({"task_name": "t", "action": "log", "created": 7.0})

        thread = threading.Thread(target=write)
        thread.start()
        got, _ = rrepo.records_after(start, wait=20)
        thread.join()
        other.close()
        assert [7.0] == [r.created for r in got]


class TestStores:
    """Opening, several writers, and a restart."""

    def test_open_existing_finds_the_model(self, redis_url: str) -> None:
        """Reading a key without a model gives records with every stored field."""
        repo = _fresh(redis_url, model=RunRecord)
        try:
            repo.add(RunRecord(task_name="t", action="fail", created=1.0, name="n", msg="m",
                               levelname="ERROR", levelno=40, pathname="p", filename="f",
                               module="m", lineno=1, funcName="f", msecs=0.0,
                               relativeCreated=0.0, thread=1, threadName="T",
                               processName="P", process=1, message="boom",
                               formatted_message="boom", exc_text="Traceback"))
            found = open_existing(f"{redis_url}?key={repo.key}")
            record = found.filter_by().first()
            found.close()
            assert (RunRecord, "Traceback", "ERROR") == (
                found.model, record.exc_text, record.levelname)
        finally:
            drop_redis_key(repo)
            repo.close()

    def test_missing_key_is_not_found(self, redis_url: str) -> None:
        """open_existing on an empty key says the store is not there."""
        from tasklog.exceptions import StoreNotFoundError

        with pytest.raises(StoreNotFoundError, match="nothing_here"):
            open_existing(f"{redis_url}?key=nothing_here")

    def test_invalid_key_and_url(self, redis_url: str) -> None:
        """A key with braces, or a bad max_size in the URL, is a clear error."""
        from tasklog import open_repo
        from tasklog.exceptions import ConfigError

        with pytest.raises(ConfigError, match="braces"):
            RedisRepo(redis_url, key="a{b}")
        with pytest.raises(ConfigError, match="max_size"):
            open_repo(f"{redis_url}?max_size=lots")

    @pytest.mark.slow
    @pytest.mark.parametrize("method", ["fork", "spawn"])
    def test_four_processes_one_key(self, redis_url: str, method: str) -> None:
        """4 processes writing one key lose and duplicate nothing."""
        key = f"mp_{uuid.uuid4().hex[:12]}"
        url = f"{redis_url}?key={key}"
        ctx = multiprocessing.get_context(method)
        procs = [ctx.Process(target=log_records, args=(w, 400, [url])) for w in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        repo: RedisRepo[Any] = RedisRepo(redis_url, key=key)
        try:
            ids = sorted(r.run_id for r in repo)
            check_indexes(repo)
            assert ([0] * 4, sorted(f"{w}-{i}" for w in range(4) for i in range(400))) == (
                [p.exitcode for p in procs], ids)
        finally:
            drop_redis_key(repo)
            repo.close()


@pytest.mark.slow
def test_restart_mid_logging_loses_nothing() -> None:
    """Records logged before, during and after a Redis restart are all stored, once each."""
    server = RedisServer(persistent=True)
    try:
        server.start()
    except RedisUnavailable as exc:
        unavailable(str(exc))
    try:
        repo: RedisRepo[TaskRunRecord] = RedisRepo(server.url, key="restart",
                                                   model=TaskRunRecord)
        handler = RepoHandler(repo, flush_interval=0.05, retry_max_delay=0.2)
        logger = logging.getLogger(f"tasklog.redis.{uuid.uuid4().hex[:8]}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)

        def log(numbers: range) -> None:
            for i in numbers:
                logger.info("record", extra={"task_name": "job", "action": "log",
                                             "run_id": str(i)})

        log(range(300))
        handler.flush()
        server.stop_only()
        try:
            log(range(300, 600))
            deadline = time.monotonic() + 15
            while handler.counts["retries"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            server.start_again()
        log(range(600, 900))
        handler.flush()
        counts = dict(handler.counts)
        logger.removeHandler(handler)
        handler.close()
        stored = sorted(int(r.run_id) for r in repo)
        check_indexes(repo)
        repo.close()
        assert (True, 900, 0, list(range(900))) == (
            counts["retries"] > 0, counts["stored"], counts["dropped"], stored)
    finally:
        server.stop()


def test_latest_per_task_from_the_indexes(rrepo: RedisRepo[Any]) -> None:
    """The newest record of each task comes from the top of each task's index."""
    from tasklog.history import latest_per_task

    rrepo.add_many([{"task_name": t, "action": "log", "created": float(i)}
                    for i, t in enumerate(["b", "a", "b", "c", "a"])])
    rrepo.filter_by(created=4.0).delete()
    from tasklog.history import RunQueries

    assert isinstance(rrepo, RunQueries)  # so history asks latest_per_task_rows first
    mirror = MemoryRepo()
    mirror.add_many([r.model_dump() for r in rrepo])
    assert ([("a", 1.0), ("b", 2.0), ("c", 3.0)], latest_per_task(mirror)) == (
        [(r.task_name, r.created) for r in latest_per_task(rrepo)], latest_per_task(rrepo))


@pytest.mark.slow
def test_full_redis_refuses_whole_batches() -> None:
    """With maxmemory reached (noeviction) a batch is refused whole with OOM, which
    is transient; what was stored stays consistent and readable."""
    server = RedisServer()
    try:
        server.start()
    except RedisUnavailable as exc:
        unavailable(str(exc))
    try:
        repo: RedisRepo[Any] = RedisRepo(server.url, key="full")
        used = int(repo.client.info("memory")["used_memory"])
        repo.client.config_set("maxmemory", str(used + 3_000_000))
        repo.client.config_set("maxmemory-policy", "noeviction")
        stored, refused = 0, None
        for batch in range(400):
            rows = [{"task_name": f"t{i % 7}", "action": "log", "created": float(i),
                     "run_id": f"r{batch}-{i}"} for i in range(500)]
            try:
                repo.add_many(rows)
            except redis.RedisError as exc:
                refused = exc
                break
            stored += len(rows)
        count, read = len(repo), len(repo.filter_by().all())
        check_indexes(repo)
        repo.close()
        assert (True, stored, stored) == (
            refused is not None and repo.is_transient(refused), count, read)
    finally:
        server.stop()


def test_big_runs_and_batches(rrepo: RedisRepo[Any]) -> None:
    """A run of 9,000 records, a batch of 9,000 task names and a long read-back
    stay within what one script call may unpack."""
    rrepo.add_many([{"task_name": "big", "action": "log", "created": float(i), "run_id": "r1"}
                    for i in range(9000)])
    rrepo.add_many([{"task_name": f"t{i}", "action": "log", "created": float(i)}
                    for i in range(9000)])
    rrepo.add({"task_name": "big", "action": "run", "created": 1.0, "run_id": "r2"})
    got, _ = rrepo.records_after(0, limit=20_000)
    from tasklog.history import latest_per_task

    latest = latest_per_task(rrepo)
    deleted = rrepo.prune(keep_runs=1, task_name="big")
    check_indexes(rrepo)
    assert (18_001, 9_001, 9_000, 9_001) == (len(got), len(latest), deleted, len(rrepo))
