"""What a KPI report summed before, kept per store (per process) and used again only while the months it was summed
from have not changed: a year's report over millions of decisions re-reads its current month, not the year.

The counted sums of a slot (``kpi_read._sums``) and the runs of counted batches of a span (``kpi_read._runs``) are
functions of the rows of ``kpi_rollup``, ``kpi_sums`` and ``kpi_runs`` in the UTC months their pieces touch, and
nothing else: which of those batches are open, their anchor status and the records not counted yet are read again
by every report. Every write to those three tables changes its month's revision in ``kpi_revs`` in the same
transaction (migration 0016's triggers, whoever writes). So a report reads the revisions of its months in the
snapshot it reads everything else in, and takes a kept value only when it was computed at exactly those
revisions: the value is then what reading the rows in this snapshot would give. Another process counting a batch
changes a revision in the database, so the check does not depend on this process's own writes.

Bounded by the rows kept (``MAX_ROWS``, least recently used dropped first): a city's year of 68 hospitals keeps
~30,000. Thread-safe: API requests run in threads.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mrledger.store.kpi_levels import floor_month
from mrledger.store.models import KpiRev
from mrledger.store.repository import Store

#: Rows (keys of a slot's sums, streams of a span's runs) kept per store, about 150 bytes each.
MAX_ROWS = 400_000

#: The revisions a value was computed at: (month, revision or None when the month never held a count).
Revs = tuple[tuple[str, int | None], ...]


def months(spans: Iterable[tuple[datetime, datetime]]) -> list[str]:
    """The UTC months (``YYYY-MM``, sorted) that [a, b) spans touch."""
    out: set[str] = set()
    for a, b in spans:
        m = floor_month(a)
        while m < b:
            out.add(f"{m.year:04d}-{m.month:02d}")
            m = (m + timedelta(days=32)).replace(day=1)
    return sorted(out)


def read_revs(s: Session, wanted: Iterable[str]) -> dict[str, int]:
    """The revisions of these months, in the caller's snapshot (absent: never counted into)."""
    names = sorted(set(wanted))
    if not names:
        return {}
    rows = s.execute(select(KpiRev.month, KpiRev.rev).where(KpiRev.month >= names[0], KpiRev.month <= names[-1]))
    return {month: rev for month, rev in rows}


class KpiCache:
    """Values keyed by what they answer, each with the revisions it was computed at."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self._max = max_rows
        self._rows = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Revs, object, int]] = OrderedDict()

    def get(self, key: Hashable, revs: Revs) -> object | None:
        """The value kept for ``key`` if it was computed at ``revs``; None otherwise (a stale one is dropped)."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] != revs:
                del self._entries[key]
                self._rows -= found[2]
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: Hashable, revs: Revs, value: object, rows: int) -> None:
        """Keep ``value`` (``rows`` big) for ``key`` as computed at ``revs``; drop the least recently used past
        ``max_rows``. A value larger than the whole cache is not kept."""
        if rows > self._max:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._rows -= old[2]
            self._entries[key] = (revs, value, rows)
            self._rows += rows
            while self._rows > self._max:
                _, (_, _, n) = self._entries.popitem(last=False)
                self._rows -= n

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._rows = 0


_CACHES: weakref.WeakKeyDictionary[Store, KpiCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_of(store: Store) -> KpiCache:
    """The cache of ``store``: one per store object, so two stores over one database (two processes, or two
    services in a test) each check the database, never each other."""
    with _CACHES_LOCK:
        found = _CACHES.get(store)
        if found is None:
            found = _CACHES[store] = KpiCache()
        return found


__all__ = ["MAX_ROWS", "KpiCache", "Revs", "cache_of", "months", "read_revs"]
