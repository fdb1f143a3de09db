"""Rows written in batches by a background thread: the access log and the verification index.

Why: one committed insert per verification took 37 % of a verification's time under load, mostly waiting
for SQLite's single write lock against ingest (scripts/bench_api.py, py-spy). Buffered, a background thread
writes the queued rows in one transaction every ``interval`` seconds. The price, stated in
docs/anchoring.md: a crash (not a clean stop, which flushes) can lose the last interval's rows. A failed
write keeps its rows for the next round.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Table

from mrledger.store.bulk import DriverInsert
from mrledger.store.unit import Unit

log = logging.getLogger("mrledger.store")
Row = dict[str, object]


class BufferedWriter:
    """``put(row)`` writes at once until ``start`` is called, then queues for the background thread."""

    def __init__(self, write: Callable[[list[Row]], None], name: str) -> None:
        self._write, self._name = write, name
        self._queue: queue.SimpleQueue[Row] | None = None
        self._pending: list[Row] = []  # taken from the queue, not yet written (a failed round)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Seconds between writes while buffering; None when rows are written as they come.
        self.interval: float | None = None

    def put(self, row: Row) -> None:
        q = self._queue
        if q is None:
            self._write([row])
        else:
            q.put(row)

    def start(self, interval: float = 0.1) -> None:
        if self._queue is not None:
            return
        self._queue = queue.SimpleQueue()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name=self._name, daemon=True)
        self._thread.start()

    def flush(self) -> None:
        """Write what is queued now (readers call this, so they see their own requests)."""
        q = self._queue
        if q is None:
            return
        with self._lock:
            while True:
                try:
                    self._pending.append(q.get_nowait())
                except queue.Empty:
                    break
            if self._pending:
                self._write(self._pending)
                self._pending = []

    def close(self) -> None:
        """Stop buffering and write everything still queued (a clean stop loses nothing)."""
        if self._queue is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        self._queue = None
        self.interval = None

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # the database is busy or down: the rows stay pending for the next round
                log.warning("%s write failed; retrying", self._name, exc_info=True)


class BufferedRows:
    """Rows of one table, written at once or, after ``start_buffering``, by a ``BufferedWriter``'s thread:
    the base of the access log (store/access.py) and the verification index (store/decisions.py). A row is
    a dict of Python values by column; the write hands them to the driver (store/bulk.py), which costs the
    background thread — and so the verifications it shares the interpreter lock with — less than an ORM
    bulk insert."""

    def __init__(self, unit: Unit, table: Table, columns: Sequence[str], name: str, *,
                 skip_existing: bool = False) -> None:
        # ``unit`` opens a write transaction; ``skip_existing``: rows another writer may have written first.
        self._unit_of_work = unit
        self._insert = DriverInsert.values(table, columns, skip_existing=skip_existing)
        self._buffer = BufferedWriter(self._write_rows, name)

    def _write_rows(self, rows: list[Row]) -> None:
        with self._unit_of_work() as s:
            self._insert.run_values(s.connection(), rows)

    def start_buffering(self, interval: float = 0.1) -> None:
        self._buffer.start(interval)

    def flush(self) -> None:
        """Write what is buffered now (readers call this, so they see their own requests)."""
        self._buffer.flush()

    def close(self) -> None:
        """Stop buffering and write everything still queued (a clean stop loses nothing)."""
        self._buffer.close()
