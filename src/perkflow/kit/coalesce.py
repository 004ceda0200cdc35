"""Coalescing: concurrent requests of one process settled together in groups, on worker threads.

`Coalescer(settle, max_group=, in_flight=)` queues what its callers submit and hands the queue to
`settle` (a blocking function, run on a worker thread) in groups of at most `max_group`, with at
most `in_flight` groups being settled at any moment. There is no timer: while a group is being
settled, the requests that arrive meanwhile wait and form the next group, so the group size
follows the load by itself (one request when idle, many under a burst) and no request waits for
a clock. `settle` returns one result per request, in order; each caller gets its own. If
`settle` raises, every caller of that group gets the exception, and the next group goes on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from anyio import to_thread

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Queues one process's requests and settles them in groups, at most `in_flight` at once."""

    def __init__(
        self, settle: Callable[[list[T]], Sequence[R]], *, max_group: int, in_flight: int = 1
    ) -> None:
        if max_group < 1 or in_flight < 1:
            raise ValueError("max_group and in_flight are at least 1")
        self._settle = settle
        self._max_group = max_group
        self._in_flight = in_flight
        self._running = 0
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._settlers: set[asyncio.Task[None]] = set()  # held, so a running one is not collected

    async def submit(self, request: T) -> R:
        """The result `settle` gave this request in the next group it could join."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((request, future))
        if self._running < self._in_flight:
            # A settler lives while there is work, so no task outlives a request (or its loop).
            self._running += 1
            task = loop.create_task(self._drain())
            self._settlers.add(task)
            task.add_done_callback(self._settlers.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                size = min(self._max_group, len(self._pending))
                group = [self._pending.popleft() for _ in range(size)]
                try:
                    results = await to_thread.run_sync(self._settle, [r for r, _ in group])
                    if len(results) != len(group):
                        raise RuntimeError(f"{len(results)} results for {len(group)} requests")
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():  # the caller may have gone away meanwhile
                        future.set_result(result)
        finally:
            self._running -= 1
