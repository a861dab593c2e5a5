"""Server-Sent Events: each newly stored record, as ``tail -f`` shows it.

One poller per application reads the store (in a worker thread) while at
least one client listens, and hands new records to every client's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..history import newest
from ..query import greater_equal
from ..repos import Repository
from ._read import record_json
from ._render import dumps
from ._store import Store

__all__ = ["Feed"]

_LAG = 10.0
"""Seconds of history each poll re-reads, to catch records another process
stored late (its writer batches them) with an earlier ``created``."""
_KEEPALIVE = 15.0
_QUEUE = 1000


class _Follower:
    """Finds the records stored since it last looked (matched by content)."""

    def __init__(self, repo: Repository[Any]) -> None:
        self.repo = repo
        # a store's optional change feed (RedisRepo: its capped stream): read
        # only what follows a cursor instead of re-reading a window of time
        position = getattr(repo, "position", None)
        after = getattr(repo, "records_after", None)
        feed = callable(position) and callable(after)
        self.after: Callable[[int], tuple[list[Any], int]] | None = after if feed else None
        self.cursor: int = position() if feed and position is not None else 0
        latest = newest(repo, 1)
        self.last = float(latest[0].created) if latest else 0.0
        self.seen: dict[str, float] = {}
        if self.after is None:
            self.poll()

    def poll(self) -> list[Any]:
        """The records stored since the last poll, in insertion order."""
        if self.after is not None:
            records, self.cursor = self.after(self.cursor)
            return list(records)
        fresh = []
        for record in self.repo.filter_by(created=greater_equal(self.last - _LAG)):
            key = record.model_dump_json()
            if key not in self.seen:
                self.seen[key] = float(record.created)
                fresh.append(record)
        if fresh:
            self.last = max(self.last, *(float(r.created) for r in fresh))
            floor = self.last - _LAG
            self.seen = {k: v for k, v in self.seen.items() if v >= floor}
        return fresh


class Feed:
    """Fans newly stored records out to the connected clients."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        follower: _Follower | None = None
        while self.queues:
            try:
                if follower is None:
                    follower = await run_in_threadpool(_Follower, self.store.get())
                    fresh: list[Any] = []
                else:
                    fresh = await run_in_threadpool(follower.poll)
            except Exception:
                fresh = []
            for record in fresh:
                data = record_json(record)
                for queue in list(self.queues):
                    if queue.full():
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()
                    queue.put_nowait(data)
            await asyncio.sleep(self.interval)
        self.task = None

    async def subscribe(self, task_name: str | None = None) -> AsyncIterator[str]:
        """The event stream of one client (SSE text), until it disconnects."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_QUEUE)
        self.queues.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield "retry: 2000\n: connected\n\n"
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), _KEEPALIVE)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if data is None:
                    return
                if task_name is not None and data.get("task_name") != task_name:
                    continue
                text = dumps(data)
                yield f"event: record\ndata: {text}\n\n"
        finally:
            self.queues.discard(queue)
