"""Connections for statements by key, each statement planned once (PostgreSQL).

Why: the engine's connections plan every execution of every statement with its parameters (``plan_cache_mode =
force_custom_plan``, store/db.py), because a generic plan chosen while the tables were small went on scanning
them whole once they were not. That costs most for the statements run once or more per verification, whose
execution is a few index probes: ``pg_stat_statements`` with ``track_planning`` over a 20,000-verification city
replay (issue 20) counted 6.7 s of planning against 15.9 s of execution in all — the result's versions 112 µs of
planning a call against 22 µs of execution, a held record's read 338 µs against 62, the token 30 against 10, the
decision's one statement 88–96 µs, and again each time for its eight foreign-key checks (PostgreSQL plans those
like any statement of the session).

What ``store/fastread.py`` runs — ``FastReads``: a token, a result's versions, a held record, a hospital's
grants, a batch's signing state, the decision's insert — are statements by key: equality on a primary or unique
key (or its leading columns), nested into the next table by its key, inserts of given rows. On the connections
made here the planner may not scan a table or hash or merge two (``enable_seqscan``, ``enable_hashjoin``,
``enable_mergejoin`` off: a disabled path is taken only where no other exists, and every table these statements
read has the index they probe). What is left is index probes joined by nested loops, the plan for any
parameters at any table size, so it is made once per connection and statement (``force_generic_plan``, once
psycopg prepares the statement: from its sixth execution on the connection). A statement that is not by key does not
belong on these connections: its plan would be a disabled scan, paid on every call. tests/store/test_keyed.py
explains every statement captured from real requests with the tables tiny and analysed, where a generic plan alone
scans them. Measured (20,000-verification replays alternated with the parent, three pairs): the machine's CPU a
verification 5.64 → 5.13 ms (medians), the rate 332.8 → 362.2/s (docs/scaling.md).

Which connections: the event loop's own (``FastReads``, one per loop thread) and, for the same statements run
on worker threads (a decision, a held record's verification), at most ``KEYED_MAX`` per engine kept here, made
by the pool (its connect events ran) and detached from it; when all of them are in use a statement takes an
ordinary pooled connection as before. Each is in autocommit: one statement, one transaction.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from mrledger.store.db import PING_IDLE_S

#: What a keyed connection's planner is told (see the module's docstring), for the whole session.
KEYED_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off", "enable_hashjoin": "off",
                  "enable_mergejoin": "off"}
#: Keyed connections kept per engine for worker threads (counted in the engine's budget: store/db.py).
KEYED_MAX = 4
_SETTINGS_SQL = "SELECT " + ", ".join(f"set_config('{k}', '{v}', false)" for k, v in KEYED_SETTINGS.items())


def make_keyed(dbapi_connection: Any) -> Any:
    """Turn a psycopg connection into a keyed one: autocommit and the planner's settings. Returns it."""
    dbapi_connection.autocommit = True
    with dbapi_connection.cursor() as cur:
        cur.execute(_SETTINGS_SQL)
    return dbapi_connection


class KeyedConnections:
    """At most ``limit`` keyed connections of one engine for worker threads (``open_keyed`` makes one), kept
    between statements (last used first). Thread-safe. A connection idle for ``PING_IDLE_S`` (store/db.py) or more is
    pinged before it is used, as the pool pings its own; one found gone, or that a statement found gone, is
    closed and another made."""

    def __init__(self, open_keyed: Callable[[], Any], dialect: Dialect, limit: int = KEYED_MAX) -> None:
        self._open_keyed, self.dialect, self.limit = open_keyed, dialect, limit
        self._idle: list[tuple[Any, float]] = []  # (connection, when it was put back)
        self._lent: set[Any] = set()
        self._stale: set[Any] = set()  # lent when the engine was disposed: closed when they come back
        self._count = 0  # idle, lent, and being opened
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[Any | None]:
        """A keyed DB-API connection for one statement, or None when ``limit`` are in use (the caller then takes
        a pooled one)."""
        conn = self._take()
        if conn is None:
            yield None
            return
        keep = False
        try:
            yield conn
            keep = True
        except DBAPIError as exc:
            keep = not exc.connection_invalidated  # a refused statement leaves the connection as it was
            raise
        finally:
            self._give(conn, keep)

    def _take(self) -> Any | None:
        while True:
            with self._lock:
                if self._idle:
                    conn, since = self._idle.pop()
                elif self._count < self.limit:
                    self._count += 1
                    conn, since = None, 0.0
                else:
                    return None
            if conn is None:
                try:
                    conn = self._open_keyed()
                except BaseException:
                    with self._lock:
                        self._count -= 1
                    raise
            elif time.monotonic() - since >= PING_IDLE_S and not self._alive(conn):
                self._drop(conn)
                continue
            with self._lock:
                self._lent.add(conn)
            return conn

    def _alive(self, conn: Any) -> bool:
        try:
            self.dialect.do_ping(conn)
        except self.dialect.loaded_dbapi.Error:
            return False
        return not conn.closed

    def _give(self, conn: Any, keep: bool) -> None:
        with self._lock:
            self._lent.discard(conn)
            if conn in self._stale:
                self._stale.discard(conn)
                keep = False
            if keep and not conn.closed:
                self._idle.append((conn, time.monotonic()))
                return
        self._drop(conn)

    def _drop(self, conn: Any) -> None:
        with self._lock:
            self._count -= 1
        close_quietly(conn)

    def close_all(self) -> None:
        """Close every keyed connection (one in use when its statement ends): the engine was disposed."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._stale |= self._lent
            self._count -= len(idle)
        for conn, _since in idle:
            close_quietly(conn)


def close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):  # closing a connection that is already gone
        conn.close()


__all__ = ["KEYED_MAX", "KEYED_SETTINGS", "KeyedConnections", "close_quietly", "make_keyed"]
