"""One set of behaviour tests, run over every store: memory, CSV, SQLite, PostgreSQL, Redis.

Every query behaviour of SPEC §2 must give the same records in the same order on
each store. Store-specific guarantees (CSV quoting, SQL tables) follow in their
own classes.
"""

from __future__ import annotations

import csv
import enum
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from tasklog import (
    CSVFileRepo,
    MemoryRepo,
    MinimalRunRecord,
    Repository,
    SQLRepo,
    TaskLogRecord,
    TaskRunRecord,
    between,
    contains,
    greater_equal,
    greater_than,
    in_,
    less_equal,
    less_than,
    not_equal,
    not_in,
    skip,
)

UTC = timezone.utc


class Item(BaseModel):
    """A model with a nullable text field and an int, for query tests."""

    task_name: str
    action: str
    created: float
    run_id: str | None = None
    message: str | None = None
    size: int | None = None


class Status(str, enum.Enum):
    """A text enum field type."""

    OK = "ok"
    BAD = "bad"


class Level(enum.IntEnum):
    """An integer enum field type."""

    LOW = 1
    HIGH = 2


class WithEnums(BaseModel):
    """A user model with enum and Literal fields."""

    task_name: str
    action: str
    created: float
    status: Status | None = None
    level: Level = Level.LOW
    kind: Literal["x", "y"] = "x"


class Typed(BaseModel):
    """A user model with every kind of column."""

    task_name: str
    action: str
    created: float
    when: datetime | None = None
    took: timedelta | None = None
    ok: bool | None = None
    n: int | None = None
    tags: list[str] = []
    meta: dict[str, Any] = {}


_COLUMNS = ("task_name", "action", "created", "run_id", "message", "size")
ITEMS = [
    dict(zip(_COLUMNS, values, strict=True))
    for values in [
        ("a", "run", 1.0, "r1", "Hello", 3),
        ("b", "run", 2.0, None, None, 1),
        ("a", "fail", 3.0, "r1", "hello world", None),
        ("c", "success", 4.0, "r2", "100%_done\\ok", 2),
        ("b", "log", 5.0, None, "", 5),
    ]
]


def _created(records: Any) -> list[float]:
    return [r.created for r in records]


@pytest.fixture(name="items")
def _items(make_repo: Any, store: str) -> Repository[Any]:
    """A repository of each store holding ITEMS, with the Item model."""
    repo = make_repo(store, model=Item)
    repo.add_many(ITEMS)
    return repo


class TestQuery:
    """filter_by with literals and every operator, the same on every store."""

    def test_literal_equality(self, items: Repository[Any]) -> None:
        """A literal matches equal values, in insertion order."""
        assert [1.0, 3.0] == _created(items.filter_by(task_name="a").all())

    def test_several_conditions_and(self, items: Repository[Any]) -> None:
        """Several conditions must all hold."""
        assert [3.0] == _created(items.filter_by(task_name="a", action="fail").all())

    def test_no_conditions_all(self, items: Repository[Any]) -> None:
        """filter_by() with no conditions returns every record."""
        assert [1.0, 2.0, 3.0, 4.0, 5.0] == _created(items.filter_by().all())

    def test_none_literal_matches_null(self, items: Repository[Any]) -> None:
        """A None literal matches records whose value is null."""
        assert [2.0, 5.0] == _created(items.filter_by(run_id=None).all())

    def test_no_match(self, items: Repository[Any]) -> None:
        """A literal that matches nothing gives an empty list."""
        assert [] == items.filter_by(task_name="zzz").all()

    @pytest.mark.parametrize(
        ("op", "expected"),
        [
            (greater_than(3.0), [4.0, 5.0]),
            (greater_equal(3.0), [3.0, 4.0, 5.0]),
            (less_than(3.0), [1.0, 2.0]),
            (less_equal(3.0), [1.0, 2.0, 3.0]),
            (between(2.0, 4.0), [2.0, 3.0, 4.0]),
            (not_equal(3.0), [1.0, 2.0, 4.0, 5.0]),
            (in_([1.0, 5.0]), [1.0, 5.0]),
            (not_in([1.0, 5.0]), [2.0, 3.0, 4.0]),
        ],
    )
    def test_operators_on_floats(
        self, items: Repository[Any], op: Any, expected: list[float]
    ) -> None:
        """Every comparison operator on a float field (between is inclusive)."""
        assert expected == _created(items.filter_by(created=op).all())

    @pytest.mark.parametrize(
        ("op", "expected"),
        [
            (between(3.0, None, none_as_open=True), [3.0, 4.0, 5.0]),
            (between(None, 2.0, none_as_open=True), [1.0, 2.0]),
            (between(2.0, 4.0, none_as_open=True), [2.0, 3.0, 4.0]),
            (between(None, None, none_as_open=True), [1.0, 2.0, 3.0, 4.0, 5.0]),
            (skip(), [1.0, 2.0, 3.0, 4.0, 5.0]),
        ],
    )
    def test_open_ranges_and_skip(
        self, items: Repository[Any], op: Any, expected: list[float]
    ) -> None:
        """Red Bird's between(..., none_as_open=True) leaves a None bound open; skip()
        matches everything (Rocketry's FastAPI demo filters "from t on" this way)."""
        assert expected == _created(items.filter_by(created=op).all())
        assert len(expected) == items.filter_by(created=op).count()

    def test_open_ranges_on_null_values(self, items: Repository[Any]) -> None:
        """An open range never matches null (like greater_equal); skip() and a range
        open at both ends match null too, as a filter left out would."""
        open_low = between(None, 3, none_as_open=True)
        assert [1.0, 2.0, 4.0] == _created(items.filter_by(size=open_low).all())
        assert [1.0, 5.0] == _created(
            items.filter_by(size=between(3, None, none_as_open=True)).all()
        )
        everything = [1.0, 2.0, 3.0, 4.0, 5.0]
        assert everything == _created(items.filter_by(size=skip()).all())
        assert everything == _created(
            items.filter_by(message=between(None, None, none_as_open=True)).all()
        )
        assert [3.0] == _created(items.filter_by(task_name="a", run_id=skip(), size=None).all())
        assert [5.0, 4.0] == _created(items.filter_by(created=skip()).order_by("-created").limit(2))

    def test_open_ranges_on_datetimes(self, make_repo: Any, store: str) -> None:
        """The FastAPI demo's shape: a datetime range whose end is None means "until now"."""
        repo = make_repo(store, model=TaskLogRecord)
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        for i in range(4):
            repo.add({"task_name": "t", "action": "run", "created": float(i),
                      "start": t0 + timedelta(hours=i)})
        since = t0 + timedelta(hours=2)
        found = repo.filter_by(start=between(since, None, none_as_open=True)).all()
        assert [2.0, 3.0] == _created(found)
        assert 4 == repo.filter_by(start=between(None, None, none_as_open=True)).count()
        naive_until = datetime(2024, 1, 1, 1)  # naive: taken as UTC, as everywhere
        assert [0.0, 1.0] == _created(
            repo.filter_by(start=between(None, naive_until, none_as_open=True)).all()
        )

    def test_between_none_without_open_is_an_error(self) -> None:
        """Without none_as_open a None bound is refused, and the message says how to open it."""
        with pytest.raises(ValueError, match="none_as_open=True"):
            between(None, 3.0)
        with pytest.raises(ValueError, match="none_as_open=True"):
            between(1.0, None)

    def test_skip_checks_the_field(self, items: Repository[Any]) -> None:
        """skip() on an unknown field is still refused (it keeps user input out of queries)."""
        with pytest.raises(ValueError, match="nope"):
            items.filter_by(nope=skip())

    @pytest.mark.parametrize(
        ("op", "expected"),
        [
            (greater_than(2), [1.0, 5.0]),
            (greater_equal(2), [1.0, 4.0, 5.0]),
            (less_than(3), [2.0, 4.0]),
            (less_equal(3), [1.0, 2.0, 4.0]),
            (between(1, 3), [1.0, 2.0, 4.0]),
        ],
    )
    def test_ordering_operators_skip_null(
        self, items: Repository[Any], op: Any, expected: list[float]
    ) -> None:
        """Ordering operators never match a null value."""
        assert expected == _created(items.filter_by(size=op).all())

    def test_not_equal_matches_null(self, items: Repository[Any]) -> None:
        """not_equal(v) matches records whose value is None."""
        assert [1.0, 2.0, 3.0, 5.0] == _created(items.filter_by(size=not_equal(2)).all())
        assert [2.0, 4.0, 5.0] == _created(items.filter_by(run_id=not_equal("r1")).all())

    def test_not_equal_none_matches_non_null(self, items: Repository[Any]) -> None:
        """not_equal(None) matches every record with a value."""
        assert [1.0, 3.0, 4.0] == _created(items.filter_by(run_id=not_equal(None)).all())

    def test_in_with_none(self, items: Repository[Any]) -> None:
        """in_ with None among the values matches nulls too."""
        assert [2.0, 4.0, 5.0] == _created(items.filter_by(run_id=in_([None, "r2"])).all())

    def test_in_without_none(self, items: Repository[Any]) -> None:
        """in_ without None does not match nulls."""
        assert [4.0] == _created(items.filter_by(run_id=in_(["r2", "zz"])).all())

    def test_in_empty(self, items: Repository[Any]) -> None:
        """in_([]) matches nothing and not_in([]) matches everything."""
        assert ([], 5) == (items.filter_by(run_id=in_([])).all(),
                           items.filter_by(run_id=not_in([])).count())

    def test_not_in_matches_null(self, items: Repository[Any]) -> None:
        """not_in without None matches nulls."""
        assert [2.0, 4.0, 5.0] == _created(items.filter_by(run_id=not_in(["r1"])).all())

    def test_not_in_with_none(self, items: Repository[Any]) -> None:
        """not_in with None among the values excludes nulls."""
        assert [1.0, 3.0] == _created(items.filter_by(run_id=not_in([None, "r2"])).all())

    def test_contains_case_sensitive(self, items: Repository[Any]) -> None:
        """contains is a case-sensitive substring test that skips nulls."""
        assert ([3.0], [1.0]) == (
            _created(items.filter_by(message=contains("hello")).all()),
            _created(items.filter_by(message=contains("Hello")).all()),
        )

    @pytest.mark.parametrize(
        ("needle", "expected"),
        [("%", [4.0]), ("_", [4.0]), ("\\", [4.0]), ("0%_d", [4.0]), ("l%o", []), ("h_llo", []),
         ("%%", [])],
    )
    def test_contains_wildcards_are_literal(
        self, items: Repository[Any], needle: str, expected: list[float]
    ) -> None:
        """``%``, ``_`` and ``\\`` in contains() match only themselves."""
        assert expected == _created(items.filter_by(message=contains(needle)).all())

    def test_contains_empty_string(self, items: Repository[Any]) -> None:
        """contains("") matches every non-null text, the empty string included."""
        expected = [1.0, 3.0, 4.0] if isinstance(items, CSVFileRepo) else [1.0, 3.0, 4.0, 5.0]
        assert expected == _created(items.filter_by(message=contains("")).all())

    def test_between_on_text(self, items: Repository[Any]) -> None:
        """between works on text fields too (inclusive, code-point order)."""
        assert ([1.0, 2.0, 3.0, 5.0], [1.0, 3.0]) == (
            _created(items.filter_by(task_name=between("a", "b")).all()),
            _created(items.filter_by(message=between("Hello", "hello world")).all()),
        )

    def test_string_ordering_operators(self, items: Repository[Any]) -> None:
        """Ordering operators work on text fields."""
        assert [2.0, 4.0, 5.0] == _created(items.filter_by(task_name=greater_than("a")).all())

    def test_int_literal_for_float_field(self, items: Repository[Any]) -> None:
        """An int literal is converted for a float field."""
        assert ([2.0], [3.0, 4.0]) == (
            _created(items.filter_by(created=2).all()),
            _created(items.filter_by(created=between(3, 4)).all()),
        )

    def test_iso_string_for_datetime_field(self, make_repo: Any, store: str) -> None:
        """An ISO string literal is converted for a datetime field, as the model would."""
        repo = make_repo(store, model=Typed)
        t0 = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
        repo.add_many(
            [{"task_name": "t", "action": "log", "created": float(i),
              "when": t0 + timedelta(hours=i)} for i in range(4)]
        )
        assert ([1.0], [2.0, 3.0]) == (
            _created(repo.filter_by(when="2024-03-04T13:00:00+00:00").all()),
            _created(repo.filter_by(when=greater_than("2024-03-04T13:30:00Z")).all()),
        )

    def test_unknown_field_names_valid_fields(self, items: Repository[Any]) -> None:
        """An unknown field raises ValueError naming the valid fields."""
        with pytest.raises(ValueError, match="nope") as info:
            items.filter_by(nope=1)
        assert [] == [name for name in Item.model_fields if name not in str(info.value)]

    def test_unknown_field_in_order_by(self, items: Repository[Any]) -> None:
        """order_by with an unknown field raises ValueError naming the valid fields."""
        with pytest.raises(ValueError, match=r"'nope'.*valid fields: task_name, action, created"):
            items.filter_by().order_by("-nope")

    def test_json_fields_not_queryable(self, make_repo: Any, store: str) -> None:
        """Filtering or ordering by a JSON field is a ValueError on every store."""
        repo = make_repo(store, model=Typed)
        with pytest.raises(ValueError, match="tags"):
            repo.filter_by(tags=["a"])
        with pytest.raises(ValueError, match="meta"):
            repo.filter_by().order_by("meta")
        with pytest.raises(ValueError, match="tags"):
            repo.filter_by(tags=contains("a"))

    def test_unconvertible_literal(self, items: Repository[Any]) -> None:
        """A literal the field cannot hold raises ValueError naming the field."""
        with pytest.raises(ValueError, match="created"):
            items.filter_by(created="not a number")


class TestResult:
    """Result: all/first/last/limit/order_by/count/delete/update and streaming."""

    def test_first_last(self, items: Repository[Any]) -> None:
        """first() and last() give the first and last match in insertion order."""
        result = items.filter_by(task_name="b")
        assert (2.0, 5.0) == (result.first().created, result.last().created)

    def test_first_last_none(self, items: Repository[Any]) -> None:
        """first() and last() give None when nothing matches."""
        result = items.filter_by(task_name="zzz")
        assert (None, None) == (result.first(), result.last())

    def test_limit(self, items: Repository[Any]) -> None:
        """limit(n) returns at most n records, in order."""
        result = items.filter_by()
        assert ([1.0, 2.0], [], 5) == (
            _created(result.limit(2)), result.limit(0), len(result.limit(50))
        )

    def test_order_by_descending(self, items: Repository[Any]) -> None:
        """order_by("-created") sorts descending; first/last/limit follow that order."""
        result = items.filter_by().order_by("-created")
        assert ([5.0, 4.0, 3.0, 2.0, 1.0], 5.0, 1.0, [5.0, 4.0]) == (
            _created(result.all()), result.first().created, result.last().created,
            _created(result.limit(2)),
        )

    def test_order_by_ties_keep_insertion_order(self, items: Repository[Any]) -> None:
        """Ties keep insertion order, ascending and descending."""
        assert ([1.0, 3.0, 2.0, 5.0, 4.0], [4.0, 2.0, 5.0, 1.0, 3.0]) == (
            _created(items.filter_by().order_by("task_name").all()),
            _created(items.filter_by().order_by("-task_name").all()),
        )

    def test_order_by_several_fields(self, items: Repository[Any]) -> None:
        """Several order fields apply in turn."""
        assert [3.0, 1.0, 5.0, 2.0, 4.0] == _created(
            items.filter_by().order_by("task_name", "-created").all()
        )

    def test_order_by_none_first_ascending(self, items: Repository[Any]) -> None:
        """None sorts before every value ascending and after them descending, on every store."""
        assert ([3.0, 2.0, 4.0, 1.0, 5.0], [5.0, 1.0, 4.0, 2.0, 3.0]) == (
            _created(items.filter_by().order_by("size").all()),
            _created(items.filter_by().order_by("-size").all()),
        )

    def test_order_by_last_with_ties(self, items: Repository[Any]) -> None:
        """last() on an ordered result is the last record of that order, ties included."""
        assert (5.0, 3.0) == (
            items.filter_by(task_name=in_(["a", "b"])).order_by("task_name").last().created,
            items.filter_by(task_name=in_(["a", "b"])).order_by("-task_name").last().created,
        )

    def test_order_by_keeps_conditions(self, items: Repository[Any]) -> None:
        """order_by returns a new Result with the same conditions."""
        result = items.filter_by(task_name="a")
        assert ([3.0, 1.0], [1.0, 3.0]) == (
            _created(result.order_by("-created").all()), _created(result.all())
        )

    def test_count(self, items: Repository[Any]) -> None:
        """count() counts the matches."""
        assert (5, 2, 0) == (
            items.filter_by().count(),
            items.filter_by(run_id=None).count(),
            items.filter_by(task_name="zzz").count(),
        )

    def test_delete(self, items: Repository[Any]) -> None:
        """delete() removes the matches and returns how many."""
        deleted = items.filter_by(task_name="b").delete()
        assert (2, [1.0, 3.0, 4.0]) == (deleted, _created(items.filter_by().all()))

    def test_delete_with_null_condition(self, items: Repository[Any]) -> None:
        """delete() honours None semantics of the conditions."""
        deleted = items.filter_by(run_id=not_equal("r1")).delete()
        assert (3, [1.0, 3.0]) == (deleted, _created(items.filter_by().all()))

    def test_update(self, items: Repository[Any]) -> None:
        """update() sets fields of the matches and returns how many."""
        updated = items.filter_by(run_id=None).update(action="crash", message=None)
        assert (2, ["run", "crash", "fail", "success", "crash"], [None, None]) == (
            updated,
            [r.action for r in items.filter_by().all()],
            [r.message for r in items.filter_by(action="crash").all()],
        )

    def test_update_converts_values(self, items: Repository[Any]) -> None:
        """update() converts values as the model would (an int for a float field)."""
        items.filter_by(task_name="c").update(created=10)
        assert [10.0] == _created(items.filter_by(created=10.0).all())

    def test_update_unknown_field(self, items: Repository[Any]) -> None:
        """update() with an unknown field raises ValueError."""
        with pytest.raises(ValueError, match="nope"):
            items.filter_by().update(nope=1)

    def test_iteration_streams(self, items: Repository[Any]) -> None:
        """Iterating a Result yields records one at a time, in order."""
        it: Iterator[Any] = iter(items.filter_by(task_name=in_(["a", "b"])))
        first = next(it)
        rest = list(it)
        assert (1.0, [2.0, 3.0, 5.0]) == (first.created, _created(rest))

    def test_abandoned_iteration_does_not_block_writes(self, items: Repository[Any]) -> None:
        """A partly consumed iteration does not keep the store from being written."""
        it = iter(items.filter_by())
        next(it)
        del it
        items.add({"task_name": "z", "action": "log", "created": 9.0})
        assert (1, 6) == (items.filter_by(task_name="z").delete(), len(items) + 1)

    def test_records_are_model_instances(self, items: Repository[Any]) -> None:
        """Every read returns instances of repo.model."""
        assert (Item, {Item}) == (items.model, {type(r) for r in items.filter_by().all()})


class TestRepository:
    """add/add_many, len/iter, insertion order, duplicates, models."""

    def test_default_model(self, repo: Repository[Any]) -> None:
        """The default model is MinimalRunRecord."""
        assert MinimalRunRecord == repo.model

    def test_empty(self, repo: Repository[Any]) -> None:
        """A new repository is empty."""
        assert (0, [], None) == (len(repo), list(repo), repo.filter_by().first())

    def test_add_model_and_dict(self, repo: Repository[Any]) -> None:
        """add() takes a model instance or a dict."""
        repo.add(MinimalRunRecord(task_name="a", action="run", created=1.0, run_id="x"))
        repo.add({"task_name": "a", "action": "success", "created": 2.0})
        assert [
            MinimalRunRecord(task_name="a", action="run", created=1.0, run_id="x"),
            MinimalRunRecord(task_name="a", action="success", created=2.0),
        ] == list(repo)

    def test_add_many_iterable(self, repo: Repository[Any]) -> None:
        """add_many() takes any iterable (a generator too) and keeps its order."""
        repo.add_many({"task_name": "t", "action": "log", "created": float(i)} for i in range(5))
        assert ([0.0, 1.0, 2.0, 3.0, 4.0], 5) == (_created(repo), len(repo))

    def test_add_many_with_invalid_item(self, repo: Repository[Any]) -> None:
        """add_many stores the valid items and then raises ValueError for the invalid one."""
        with pytest.raises(ValueError, match="item 1"):
            repo.add_many(
                [
                    {"task_name": "t", "action": "log", "created": 1.0},
                    {"action": "log", "created": 2.0},
                    {"task_name": "t", "action": "log", "created": 3.0},
                ]
            )
        assert [1.0, 3.0] == _created(repo)

    def test_add_invalid_raises(self, repo: Repository[Any]) -> None:
        """add() of an item that does not fit the model raises ValueError and stores nothing."""
        with pytest.raises(ValueError, match="task_name"):
            repo.add({"action": "log", "created": 1.0})
        assert 0 == len(repo)

    def test_add_other_model_instance(self, repo: Repository[Any]) -> None:
        """An instance of another model is stored as the repository's model."""
        repo.add(TaskRunRecord(task_name="t", action="run", created=1.0, run_id="r", host="h"))
        expected = MinimalRunRecord(task_name="t", action="run", created=1.0, run_id="r")
        assert [expected] == list(repo)

    def test_insertion_order(self, repo: Repository[Any]) -> None:
        """Records are kept in insertion order, not sorted by any field."""
        for created in (3.0, 1.0, 2.0):
            repo.add({"task_name": "t", "action": "log", "created": created})
        repo.add_many([{"task_name": "a", "action": "log", "created": c} for c in (0.5, 9.0)])
        assert [3.0, 1.0, 2.0, 0.5, 9.0] == _created(repo)

    def test_duplicates_allowed_with_id_field(self, make_repo: Any, store: str) -> None:
        """id_field never checks uniqueness: two records with the same created are both stored."""
        repo = make_repo(store, id_field="created")
        repo.add({"task_name": "a", "action": "run", "created": 1.5})
        repo.add({"task_name": "b", "action": "run", "created": 1.5})
        repo.add({"task_name": "c", "action": "run", "created": 2.5})
        assert (3, "a", "c") == (len(repo), repo[1.5].task_name, repo[2.5].task_name)

    def test_getitem_missing(self, make_repo: Any, store: str) -> None:
        """repo[value] raises KeyError when no record has that value."""
        repo = make_repo(store, id_field="created")
        with pytest.raises(KeyError):
            repo[1.0]

    def test_getitem_without_id_field(self, repo: Repository[Any]) -> None:
        """repo[value] without an id_field raises TypeError."""
        with pytest.raises(TypeError, match="id_field"):
            repo[1.0]

    def test_unknown_id_field(self, make_repo: Any, store: str) -> None:
        """An id_field that is not a model field raises ValueError."""
        with pytest.raises(ValueError, match="nope"):
            make_repo(store, id_field="nope")

    def test_len_and_iter(self, repo: Repository[Any]) -> None:
        """len() counts records and iter() yields them all."""
        repo.add_many([{"task_name": "t", "action": "log", "created": float(i)} for i in range(7)])
        assert (7, 7) == (len(repo), sum(1 for _ in repo))

    def test_typed_round_trip(self, make_repo: Any, store: str) -> None:
        """datetime/timedelta/bool/int/list/dict fields round-trip on every store."""
        repo = make_repo(store, model=Typed)
        record = Typed(
            task_name="t", action="log", created=1.25,
            when=datetime(2024, 3, 4, 12, 30, 15, 123456, tzinfo=UTC),
            took=timedelta(seconds=90, microseconds=500),
            ok=False, n=-7, tags=["x", "y, z"], meta={"k": [1, 2], "s": "v"},
        )
        empty = Typed(task_name="t", action="log", created=2.0)
        repo.add_many([record, empty])
        assert [record, empty] == list(repo)

    def test_datetimes_come_back_aware_utc(self, make_repo: Any, store: str) -> None:
        """Datetimes come back aware in UTC; a naive one is taken as UTC."""
        repo = make_repo(store, model=Typed)
        plus2 = timezone(timedelta(hours=2))
        repo.add_many(
            [
                {"task_name": "t", "action": "log", "created": 1.0,
                 "when": datetime(2024, 1, 1, 12, 0)},
                {"task_name": "t", "action": "log", "created": 2.0,
                 "when": datetime(2024, 1, 1, 12, 0, tzinfo=plus2)},
            ]
        )
        got = [r.when for r in repo]
        assert ([datetime(2024, 1, 1, 12, 0, tzinfo=UTC), datetime(2024, 1, 1, 10, 0, tzinfo=UTC)],
                [UTC, UTC]) == (got, [w.tzinfo for w in got])

    def test_bool_and_int_queries(self, make_repo: Any, store: str) -> None:
        """bool and int fields are queryable on every store."""
        repo = make_repo(store, model=Typed)
        repo.add_many(
            [{"task_name": "t", "action": "log", "created": float(i), "ok": i % 2 == 0, "n": i}
             for i in range(4)]
        )
        assert ([0.0, 2.0], [2.0, 3.0]) == (
            _created(repo.filter_by(ok=True).all()),
            _created(repo.filter_by(n=greater_than(1)).all()),
        )

    def test_timedelta_query(self, make_repo: Any, store: str) -> None:
        """timedelta fields compare by duration (a number of seconds converts)."""
        repo = make_repo(store, model=Typed)
        repo.add_many(
            [{"task_name": "t", "action": "log", "created": float(i), "took": timedelta(seconds=i)}
             for i in range(4)]
        )
        assert ([2.0, 3.0], [1.0]) == (
            _created(repo.filter_by(took=greater_equal(timedelta(seconds=2))).all()),
            _created(repo.filter_by(took=1).all()),
        )

    def test_update_typed_fields(self, make_repo: Any, store: str) -> None:
        """update() sets JSON, datetime, timedelta and bool fields on every store."""
        repo = make_repo(store, model=Typed)
        repo.add_many([{"task_name": "t", "action": "log", "created": float(i)} for i in range(2)])
        when = datetime(2024, 5, 6, 7, 8, 9)
        updated = repo.filter_by(created=1.0).update(
            tags=["z"], meta={"a": {"b": 1}}, when=when, took=timedelta(seconds=2), ok=True
        )
        got = repo.filter_by(created=1.0).first()
        assert (1, ["z"], {"a": {"b": 1}}, when.replace(tzinfo=UTC), timedelta(seconds=2), True,
                []) == (
            updated, got.tags, got.meta, got.when, got.took, got.ok,
            repo.filter_by(created=0.0).first().tags,
        )

    def test_enum_and_literal_fields(self, make_repo: Any, store: str) -> None:
        """Enum and Literal fields round-trip and are queried by member or value on every store."""
        repo = make_repo(store, model=WithEnums)
        first = WithEnums(task_name="t", action="log", created=1.0, status=Status.BAD,
                          level=Level.HIGH, kind="y")
        repo.add_many([first, {"task_name": "t", "action": "log", "created": 2.0, "status": "ok"}])
        assert (
            [first, WithEnums(task_name="t", action="log", created=2.0, status=Status.OK)],
            [1.0], [1.0], [1.0], [1.0], [2.0, 1.0],
        ) == (
            list(repo),
            _created(repo.filter_by(status="bad")),
            _created(repo.filter_by(status=Status.BAD)),
            _created(repo.filter_by(level=greater_than(Level.LOW))),
            _created(repo.filter_by(kind="y")),
            _created(repo.filter_by().order_by("-status")),
        )

    def test_task_log_record_round_trip(self, make_repo: Any, store: str) -> None:
        """TaskLogRecord and TaskRunRecord round-trip with their defaults."""
        log_repo = make_repo(store, model=TaskLogRecord)
        run_repo = make_repo(store, model=TaskRunRecord)
        start = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
        log = TaskLogRecord(task_name="t", action="success", created=5.0, start=start,
                            end=start + timedelta(seconds=3), runtime=timedelta(seconds=3),
                            message="done", exc_text=None)
        run = TaskRunRecord(task_name="t", action="fail", created=6.0, start=start,
                            message="boom", exc_text="Traceback...\n  boom\nValueError: x",
                            run_id="r1", host="box", process=2**31 + 5)
        log_repo.add_many([log, TaskLogRecord(task_name="t", action="run", created=1.0)])
        run_repo.add(run)
        assert ([log, TaskLogRecord(task_name="t", action="run", created=1.0)], [run]) == (
            list(log_repo), list(run_repo)
        )

    def test_code_point_string_order(self, repo: Repository[Any]) -> None:
        """Strings compare in code-point order ("B" < "a" < "é") on every store."""
        for name in ("é", "a", "B", "Z", "b"):
            repo.add({"task_name": name, "action": "log", "created": 1.0})
        assert (["B", "Z", "a", "b", "é"], ["é", "a", "b"]) == (
            [r.task_name for r in repo.filter_by().order_by("task_name")],
            [r.task_name for r in repo.filter_by(task_name=greater_than("Z"))],
        )

    def test_code_point_order_beyond_bmp(self, repo: Repository[Any]) -> None:
        """Characters beyond the BMP sort after U+FFFF, as in Python, on every store."""
        names = ["\U0001f600", "\uffff", "ä", "A", "a", "\u00e9"]
        repo.add_many([{"task_name": n, "action": "log", "created": 1.0} for n in names])
        assert (sorted(names), ["\U0001f600"]) == (
            [r.task_name for r in repo.filter_by().order_by("task_name")],
            [r.task_name for r in repo.filter_by(task_name=greater_than("\uffff"))],
        )

    def test_big_integers(self, make_repo: Any, store: str) -> None:
        """Integers are stored as 64-bit."""
        repo = make_repo(store, model=Typed)
        values = [2**40, -(2**62), 2**63 - 1]
        repo.add_many(
            [{"task_name": "t", "action": "log", "created": 1.0, "n": v} for v in values]
        )
        assert (values, [2**63 - 1]) == (
            [r.n for r in repo], [r.n for r in repo.filter_by(n=greater_than(2**62))]
        )

    def test_two_repo_objects_share_records(self, make_repo: Any, store: str) -> None:
        """Two repository objects on the same CSV file or SQL table see each other's records."""
        first = make_repo(store)
        if isinstance(first, MemoryRepo):  # in-process memory: each object is its own store
            second_memory = MemoryRepo()
            first.add({"task_name": "one", "action": "log", "created": 1.0})
            assert (1, 0) == (len(first), len(second_memory))
            return
        if isinstance(first, CSVFileRepo):
            second: Repository[Any] = CSVFileRepo(first.filename)
        elif type(first).__name__ == "RedisRepo":
            from tasklog.repos.redis_store import RedisRepo

            second = RedisRepo(first.url, key=first.key)
        else:
            assert isinstance(first, SQLRepo)
            second = SQLRepo(url=first.engine.url, table=first.table_name)
        try:
            first.add({"task_name": "one", "action": "log", "created": 1.0})
            second.add({"task_name": "two", "action": "log", "created": 2.0})
            assert (["one", "two"], ["one", "two"]) == (
                [r.task_name for r in first], [r.task_name for r in second]
            )
        finally:
            second.close()

    def test_prune_keep_runs(self, repo: Repository[Any]) -> None:
        """prune(keep_runs=1) keeps the newest run per task (a record without run id is a run)."""
        repo.add_many(
            [
                {"task_name": "a", "action": "run", "created": 1.0, "run_id": "r1"},
                {"task_name": "a", "action": "success", "created": 2.0, "run_id": "r1"},
                {"task_name": "a", "action": "run", "created": 3.0, "run_id": "r2"},
                {"task_name": "b", "action": "log", "created": 4.0},
                {"task_name": "b", "action": "log", "created": 5.0},
            ]
        )
        assert (3, [3.0, 5.0]) == (repo.prune(keep_runs=1), _created(repo))

    def test_prune_older_than(self, repo: Repository[Any]) -> None:
        """prune(older_than=timestamp) deletes records created before it."""
        repo.add_many(
            [{"task_name": "a", "action": "log", "created": float(i)} for i in range(5)]
        )
        assert (2, [2.0, 3.0, 4.0]) == (repo.prune(older_than=2.0), _created(repo))


class TestMemoryRepo:
    """MemoryRepo specifics."""

    def test_ring_buffer(self) -> None:
        """With max_size the oldest records are evicted."""
        repo = MemoryRepo(max_size=3)
        for i in range(5):
            repo.add({"task_name": "t", "action": "log", "created": float(i)})
        repo.add_many([{"task_name": "u", "action": "log", "created": float(i)} for i in (5, 6)])
        assert ([4.0, 5.0, 6.0], 3, ["t"]) == (
            _created(repo), len(repo), [r.task_name for r in repo.filter_by(task_name="t")]
        )

    def test_ring_buffer_large(self) -> None:
        """A small ring buffer under many writes keeps exactly the newest records."""
        repo = MemoryRepo(max_size=10)
        for i in range(5000):
            repo.add({"task_name": f"t{i % 3}", "action": "log", "created": float(i)})
        assert ([float(i) for i in range(4990, 5000)], [4992.0, 4995.0, 4998.0]) == (
            _created(repo), _created(repo.filter_by(task_name="t0"))
        )

    def test_invalid_max_size(self) -> None:
        """max_size must be a positive integer."""
        with pytest.raises(ValueError, match="max_size"):
            MemoryRepo(max_size=0)

    @pytest.mark.parametrize("max_size", [None, 150])
    def test_indexes_agree_with_a_scan(self, max_size: int | None) -> None:
        """Equality queries answered from the indexes (a task's or an action's
        records merged from the pair index) match a full scan through adds,
        deletes, updates of indexed fields and ring-buffer evictions."""
        import random

        rnd = random.Random(7)
        repo = MemoryRepo(max_size=max_size)
        tasks, actions = ["a", "b", "c", "d"], ["run", "success", "fail", "log"]

        def check() -> None:
            every = repo.filter_by().all()
            for field, values in (("task_name", tasks), ("action", actions),
                                  ("run_id", ["r0", "r1", "r2", None])):
                for value in values:
                    want = [r for r in every if getattr(r, field) == value]
                    assert want == repo.filter_by(**{field: value}).all(), (field, value)
                    assert len(want) == repo.filter_by(**{field: value}).count()
            for task in tasks:
                for action in actions:
                    want = [r for r in every if (r.task_name, r.action) == (task, action)]
                    assert want == repo.filter_by(task_name=task, action=action).all()
                    assert want[-1:] == [
                        r for r in [repo.filter_by(task_name=task, action=action).last()] if r
                    ]

        for step in range(12):
            repo.add_many([
                {"task_name": rnd.choice(tasks[:3]), "action": rnd.choice(actions),
                 "created": float(step * 100 + i), "run_id": rnd.choice(["r0", "r1", "r2", None])}
                for i in range(rnd.randint(1, 80))
            ])
            check()
            if step % 3 == 1:
                repo.filter_by(task_name=rnd.choice(tasks), action=rnd.choice(actions)).delete()
            elif step % 3 == 2:
                repo.filter_by(run_id=rnd.choice(["r0", "r1"])).update(
                    task_name="d", action=rnd.choice(actions)
                )
            check()


class TestCSVFileRepo:
    """CSVFileRepo specifics: quoting, empty cells, hand-written files."""

    def test_multiline_traceback_round_trips(self, tmp_path: Path) -> None:
        """A multi-line traceback with quotes and commas round-trips exactly."""
        repo = CSVFileRepo(tmp_path / "log.csv", model=TaskRunRecord)
        text = (
            'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
            '    raise ValueError("a, b")\r\nValueError: a, b\n\n  trailing  '
        )
        repo.add({"task_name": "t", "action": "fail", "created": 1.0, "exc_text": text,
                  "message": 'say "hi", ok'})
        repo.add({"task_name": "t", "action": "log", "created": 2.0})
        got = list(CSVFileRepo(tmp_path / "log.csv", model=TaskRunRecord))
        assert ([text, None], ['say "hi", ok', ""]) == (
            [r.exc_text for r in got], [r.message for r in got]
        )

    def test_none_is_empty_cell(self, tmp_path: Path) -> None:
        """None is written as an empty cell and comes back as None."""
        path = tmp_path / "log.csv"
        repo = CSVFileRepo(path, model=MinimalRunRecord)
        repo.add({"task_name": "t", "action": "log", "created": 1.0, "run_id": None})
        with path.open(newline="") as f:
            cells = list(csv.reader(f))
        assert (
            [["task_name", "action", "created", "run_id"], ["t", "log", "1.0", ""]],
            [None],
        ) == (cells, [r.run_id for r in repo])

    def test_json_fields_are_json_text(self, tmp_path: Path) -> None:
        """Lists and dicts are stored as JSON text."""
        path = tmp_path / "log.csv"
        repo = CSVFileRepo(path, model=Typed)
        repo.add({"task_name": "t", "action": "log", "created": 1.0, "tags": ["a"],
                  "meta": {"k": 1}})
        with path.open(newline="") as f:
            row = next(csv.DictReader(f))
        assert ('["a"]', '{"k": 1}') == (row["tags"], row["meta"])

    def test_hand_written_csv(self, tmp_path: Path) -> None:
        """A hand-written CSV with a header (any column order, extra columns) is readable."""
        path = tmp_path / "hand.csv"
        path.write_text(
            "note,created,action,task_name,run_id\n"
            "x,1.5,run,backup,r1\n"
            '"multi\nline",2,success,backup,\n',
            encoding="utf-8",
        )
        repo = CSVFileRepo(path, model=MinimalRunRecord)
        repo.add({"task_name": "backup", "action": "run", "created": 3.0, "run_id": "r2"})
        assert [
            MinimalRunRecord(task_name="backup", action="run", created=1.5, run_id="r1"),
            MinimalRunRecord(task_name="backup", action="success", created=2.0),
            MinimalRunRecord(task_name="backup", action="run", created=3.0, run_id="r2"),
        ] == list(repo)

    def test_hand_written_csv_without_final_newline(self, tmp_path: Path) -> None:
        """Appending to a hand-written CSV whose last line has no newline keeps both records."""
        path = tmp_path / "hand.csv"
        path.write_text("task_name,action,created,run_id\r\nx,run,1.0,r1", encoding="utf-8")
        CSVFileRepo(path).add({"task_name": "y", "action": "log", "created": 2.0})
        assert [("x", "r1"), ("y", None)] == [(r.task_name, r.run_id) for r in CSVFileRepo(path)]

    def test_header_only_without_newline(self, tmp_path: Path) -> None:
        """A header row without a newline is ended before the first record is appended."""
        path = tmp_path / "hand.csv"
        path.write_text("task_name,action,created,run_id", encoding="utf-8")
        CSVFileRepo(path).add({"task_name": "y", "action": "log", "created": 2.0})
        assert ["y"] == [r.task_name for r in CSVFileRepo(path)]

    def test_utf8_bom(self, tmp_path: Path) -> None:
        """A CSV saved as "UTF-8 with BOM" (spreadsheets do) is readable."""
        path = tmp_path / "bom.csv"
        path.write_text("task_name,action,created,run_id\nx,run,1.0,r1\n", encoding="utf-8-sig")
        assert [MinimalRunRecord(task_name="x", action="run", created=1.0, run_id="r1")] == list(
            CSVFileRepo(path, model=MinimalRunRecord)
        )

    def test_empty_string_in_optional_field(self, tmp_path: Path) -> None:
        """An empty string and None share the empty cell: "" comes back as None (documented)."""
        repo = CSVFileRepo(tmp_path / "e.csv", model=Item)
        repo.add({"task_name": "", "action": "log", "created": 1.0, "message": ""})
        got = repo.filter_by().first()
        assert ("", None) == (got.task_name, got.message)

    def test_missing_columns(self, tmp_path: Path) -> None:
        """A CSV file whose header lacks required model fields is an error naming them."""
        path = tmp_path / "hand.csv"
        path.write_text("task_name,note\nx,1\n", encoding="utf-8")
        with pytest.raises(ValueError, match="required fields of TaskRunRecord: action, created"):
            CSVFileRepo(path)
        assert "task_name,note\nx,1\n" == path.read_text(encoding="utf-8")  # left alone

    def test_empty_existing_file_gets_header(self, tmp_path: Path) -> None:
        """An existing empty file gets a header row."""
        path = tmp_path / "empty.csv"
        path.touch()
        repo = CSVFileRepo(path, model=MinimalRunRecord)
        repo.add({"task_name": "t", "action": "log", "created": 1.0})
        assert ("task_name,action,created,run_id", 1) == (
            path.read_text(encoding="utf-8").splitlines()[0], len(repo)
        )


@pytest.fixture(name="sql_store", params=["sqlite", "postgresql"])
def _sql_store(request: pytest.FixtureRequest) -> str:
    """Each SQL store in turn."""
    return str(request.param)


class Needy(MinimalRunRecord):
    """A model with a required field no table of tasklog's has."""

    needed: int


class Bigger(BaseModel):
    """MinimalRunRecord plus two fields an older table lacks."""

    task_name: str
    action: str
    created: float
    run_id: str | None = None
    host: str | None = None
    process: int | None = None


class TestSQLRepo:
    """SQLRepo specifics: table, indexes, types, queries in the database."""

    def test_table_and_indexes(self, make_repo: Any, sql_store: str) -> None:
        """The table is created with a key and indexes on task_name, action, run_id, created."""
        repo = make_repo(sql_store)
        inspector = sa.inspect(repo.engine)
        indexed = {ix["column_names"][0] for ix in inspector.get_indexes(repo.table_name)}
        columns = {c["name"] for c in inspector.get_columns(repo.table_name)}
        assert (set(), {"task_name", "action", "created", "run_id"}) == (
            {"task_name", "action", "run_id", "created"} - indexed,
            columns & {"task_name", "action", "created", "run_id"},
        )

    def test_if_missing_raise(self, make_repo: Any, sql_store: str, tmp_path: Path,
                              request: pytest.FixtureRequest) -> None:
        """if_missing="raise" refuses a missing table, naming it."""
        url = (f"sqlite:///{tmp_path / 'x.db'}" if sql_store == "sqlite"
               else request.getfixturevalue("postgres_url"))
        with pytest.raises(ValueError, match="no_such_table"):
            SQLRepo(url=url, table="no_such_table", if_missing="raise")

    def test_if_missing_raise_existing_table(self, make_repo: Any, sql_store: str) -> None:
        """if_missing="raise" opens a table that exists."""
        first = make_repo(sql_store)
        first.add({"task_name": "t", "action": "log", "created": 1.0})
        second = SQLRepo(first.engine, table=first.table_name, if_missing="raise")
        assert 1 == len(second)

    def test_existing_table_lacking_fields(self, make_repo: Any, sql_store: str) -> None:
        """An existing table that lacks required model fields is an error naming them."""
        first = make_repo(sql_store, model=Bigger)
        with pytest.raises(ValueError, match="required fields of Needy: needed"):
            SQLRepo(first.engine, table=first.table_name, model=Needy)

    def test_engine_argument(self, make_repo: Any, sql_store: str) -> None:
        """SQLRepo takes an existing engine as its first argument and leaves it open on close."""
        first = make_repo(sql_store)
        repo = SQLRepo(first.engine, table=first.table_name)
        repo.add({"task_name": "t", "action": "log", "created": 1.0})
        repo.close()
        assert (first.engine, 1) == (repo.engine, len(first))

    def test_filtered_count_runs_in_database(self, make_repo: Any, sql_store: str) -> None:
        """A filtered count runs as one SELECT count(...) WHERE in the database."""
        repo = make_repo(sql_store)
        repo.add_many([{"task_name": "t", "action": a, "created": 1.0} for a in ("run", "fail")])
        repo.filter_by().count()  # warm up
        statements: list[str] = []

        def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement.lower())

        sa.event.listen(repo.engine, "before_cursor_execute", capture)
        try:
            count = repo.filter_by(action="fail").count()
        finally:
            sa.event.remove(repo.engine, "before_cursor_execute", capture)
        counts = [s for s in statements if "count(" in s and "where" in s]
        assert (1, 1) == (count, len(counts))

    def test_query_runs_in_database(self, make_repo: Any, sql_store: str) -> None:
        """A filtered, ordered, limited select, delete and update each run as one SQL statement."""
        repo = make_repo(sql_store)
        repo.add_many([{"task_name": "t", "action": "log", "created": float(i)} for i in range(20)])
        statements: list[str] = []

        def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement.lower())

        sa.event.listen(repo.engine, "before_cursor_execute", capture)
        try:
            got = repo.filter_by(created=greater_than(5)).order_by("-created").limit(2)
            repo.filter_by(created=less_than(3)).update(action="x")
            repo.filter_by(action="x").delete()
        finally:
            sa.event.remove(repo.engine, "before_cursor_execute", capture)
        # SQLite's schema lookups (is there a runs index?) name the table too
        data = [s for s in statements if repo.table_name in s and not s.startswith("pragma")]
        assert (
            [19.0, 18.0],
            ["select", "update", "delete"],
            [True, True, True],
            True,
        ) == (
            _created(got),
            [s.split()[0] for s in data],
            ["where" in s for s in data],
            "limit" in data[0] and "order by" in data[0],
        )

    def test_string_order_in_database(self, make_repo: Any, sql_store: str) -> None:
        """The database itself compares strings in code-point order (a "C" collation)."""
        repo = make_repo(sql_store)
        for name in ("é", "a", "B"):
            repo.add({"task_name": name, "action": "log", "created": 1.0})
        t = repo.table
        with repo.engine.connect() as conn:
            got = conn.execute(sa.select(t.c.task_name).order_by(t.c.task_name)).scalars().all()
        assert ["B", "a", "é"] == got

    def test_big_integer_column(self, make_repo: Any, sql_store: str) -> None:
        """An int field is a 64-bit column."""
        repo = make_repo(sql_store, model=Typed)
        repo.add({"task_name": "t", "action": "log", "created": 1.0, "n": 2**63 - 1})
        with repo.engine.connect() as conn:
            got = conn.execute(sa.select(repo.table.c.n)).scalar_one()
        assert 2**63 - 1 == got

    def test_url_argument_owns_engine(self, tmp_path: Path) -> None:
        """SQLRepo(url=...) creates its engine; close() disposes of it."""
        repo = SQLRepo(url=f"sqlite:///{tmp_path / 'own.db'}")
        repo.add({"task_name": "t", "action": "log", "created": 1.0})
        assert ("task_log", 1) == (repo.table_name, len(repo))
        repo.close()

    def test_needs_engine_or_url(self) -> None:
        """SQLRepo without engine or url is an error."""
        with pytest.raises(ValueError, match="engine or a url"):
            SQLRepo()
