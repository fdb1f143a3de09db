"""Single flight: callers that ask for the same read while one is in flight share it, on worker threads
(``ThreadFlights``) and on an event loop (``LoopFlights``).

Why: until an anchor is final (``readers.FINAL_DEPTH`` blocks deep: two to three minutes on a 12-second
chain) every verification of it reads its registry entry and block from the chain's node, so that a shallow
reorg is seen by the next verification (anchoring/readers.py). A burst of verifications of one fresh anchor —
a hospital checking the batch it just anchored, one receipt replayed by anybody — was one round trip each,
against what is in production a metered, rate-limited RPC endpoint, and the node's CPU for each
(``scripts/bench_api.py`` on shallow anchors: 355 and 337/s, p99 at 500/s in seconds; shared: 704 and 799/s,
p99 ~0.1 s; docs/scaling.md, stop 46). A caller that joins a read in flight gets an answer read after it
asked or at most one round trip before: the freshness its own read would have had. A caller after the read
ended reads again. An error is every sharer's error and is not kept.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class ThreadFlights:
    """Reads by key shared by the threads that ask while one is in flight. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[Any]] = {}
        #: Reads sent, and callers that joined one in flight instead: for tests and benchmarks.
        self.sent = self.joined = 0

    def __len__(self) -> int:
        return len(self._inflight)

    def read(self, key: Hashable, fn: Callable[[], T]) -> T:
        """``fn()``, or the result of the call of it in flight for ``key`` on another thread."""
        with self._lock:
            shared = self._inflight.get(key)
            if shared is None:
                mine: Future[Any] = Future()
                self._inflight[key] = mine
                self.sent += 1
            else:
                self.joined += 1
        if shared is not None:
            result: T = shared.result()
            return result
        # The entry goes before the answer is handed over: a caller that asks after the read ended reads again.
        try:
            value = fn()
        except BaseException as exc:
            self._drop(key)
            mine.set_exception(exc)
            raise
        self._drop(key)
        mine.set_result(value)
        return value

    def _drop(self, key: Hashable) -> None:
        with self._lock:
            del self._inflight[key]


class LoopFlights:
    """Reads by key shared by the coroutines of one event loop that ask while one is in flight (keyed by loop
    too: a task belongs to its loop). The read is shielded: a caller that goes away (its client hung up) does
    not cancel it for the others."""

    def __init__(self) -> None:
        self._inflight: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Task[Any]] = {}
        #: Reads sent, and callers that joined one in flight instead: for tests and benchmarks.
        self.sent = self.joined = 0

    def __len__(self) -> int:
        return len(self._inflight)

    async def read(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """``await make()``, or the result of the one in flight for ``key`` on this loop."""
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        task = self._inflight.get(slot)
        if task is None:
            self.sent += 1

            async def run() -> T:
                try:
                    return await make()
                finally:  # gone before the answer is handed over: a caller after the read ended reads again
                    self._inflight.pop(slot, None)

            task = loop.create_task(run())
            self._inflight[slot] = task
            task.add_done_callback(lambda done: self._landed(slot, done))
        else:
            self.joined += 1
        result: T = await asyncio.shield(task)
        return result

    def _landed(self, slot: tuple[asyncio.AbstractEventLoop, Hashable], task: asyncio.Task[Any]) -> None:
        """A read's error is marked retrieved (every caller that shared it may be gone); its entry goes if ``run``
        never ran to remove it (cancelled before it started: a loop shutting down)."""
        if self._inflight.get(slot) is task:
            del self._inflight[slot]
        if not task.cancelled():
            task.exception()


__all__ = ["LoopFlights", "ThreadFlights"]
