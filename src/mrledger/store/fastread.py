"""One SELECT on the DB-API connection, compiled once: the hot reads of verification and authentication.

Why not ``Connection.execute``: a receipt verification asks the database two or three single-row questions (the
result's versions, the hospital's eligible categories, a token), and SQLAlchemy's execution path around each —
the compiled-cache lookup, execution context, events, result proxy, connection wrapper — cost ten times the
statement itself: on SQLite 150–200 µs of CPU per lookup against 14 µs for the same SQL on the bare ``sqlite3``
cursor (issue 20: cProfile of the ASGI app under a thread-time clock, receipts verified in-process). Together they
were a quarter of a verification's CPU.

So a statement is compiled once per dialect with SQLAlchemy (same SQL, same quoting, same parameter style) and its
bind and result processors are kept; each call checks a connection out of the engine's pool (its ping after idling, pool
limits and reset-on-return as for any other checkout), runs the SQL on the DB-API cursor and converts the rows with the
column types' own processors — a ``DateTime`` comes back as the ``datetime`` SQLAlchemy would have made. Only plain
SELECTs with named bind parameters are taken (no expanding ``IN``, no literal binds): anything else raises.

On PostgreSQL a call runs on a keyed connection instead (store/keyed.py: the event loop's own, or one of a few kept
for worker threads, the pool's only when those are busy), where each statement is planned once: every statement
run here must therefore be one by key (an equality on a unique key, nested loops into the next table by its key).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any

from sqlalchemy import CompoundSelect, Connection, Engine, Select, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError

from mrledger.store.keyed import KeyedConnections, close_quietly, make_keyed

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Compiled:
    """One SELECT compiled for one dialect: its SQL, and what its binds and result columns go through."""

    sql: str
    #: Bind names in the order of the SQL's positional markers (qmark: SQLite), or None (named: psycopg).
    order: tuple[str, ...] | None
    binds: dict[str, Processor]
    results: tuple[Processor, ...]


class FastReads:
    """The compiled statements of one engine. Thread-safe: compiling twice is harmless, the cache is a dict."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._autocommit = engine.dialect.name == "postgresql"
        self._compiled: dict[int, tuple[Select[*tuple[Any, ...]], Compiled]] = {}
        self._lock = Lock()
        self._loop = _LoopConnection()
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Worker threads' keyed connections (store/keyed.py), PostgreSQL only.
        self._keyed = KeyedConnections(self._open_keyed, engine.dialect) if self._autocommit else None
        if self._autocommit:
            event.listen(engine, "engine_disposed", self._close_loop_connections)

    def _compile(self, stmt: Select[*tuple[Any, ...]]) -> Compiled:
        hit = self._compiled.get(id(stmt))
        if hit is not None and hit[0] is stmt:
            return hit[1]
        entry = compile_select(stmt, self.engine.dialect)
        with self._lock:
            self._compiled[id(stmt)] = (stmt, entry)  # keeps stmt alive: its id cannot be reused
        return entry

    def rows(self, stmt: Select[*tuple[Any, ...]], params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of ``stmt`` with ``params`` (all of its bind names), converted as SQLAlchemy would."""
        c = self._compile(stmt)
        if self._autocommit and asyncio._get_running_loop() is not None:
            return _converted(self._run_on_loop(c.sql, _args(c, params)), c.results)
        return _converted(self._run(c.sql, _args(c, params), alone=self._autocommit), c.results)

    def write_alone(self, sql: str, args: Mapping[str, Any]) -> list[Any]:
        """The rows of one writing statement (driver SQL and arguments: ``DriverInsert.bound``) run as its own
        transaction: PostgreSQL's autocommit, so it commits when it succeeds and writes nothing when it fails,
        in one round trip. PostgreSQL only: SQLite's driver would leave it in a transaction the pool rolls back."""
        if not self._autocommit:
            raise NotImplementedError(f"a write in autocommit on {self.engine.dialect.name}")
        return self._run(sql, args, alone=True)

    def _run(self, sql: str, args: Sequence[Any] | Mapping[str, Any], *, alone: bool) -> list[Any]:
        if self._keyed is not None:
            with self._keyed.connection() as keyed:
                if keyed is not None:  # a keyed connection is in autocommit: the statement is its own transaction
                    return _fetch(keyed, sql, args, self.engine.dialect)
        dialect = self.engine.dialect
        try:
            conn = self.engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:
            raise _wrapped(sql, args, exc, dialect) from exc
        try:
            return _fetch(conn.dbapi_connection, sql, args, dialect, alone=alone)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                conn.invalidate(exc.orig)  # a dead connection is not handed to the next request
            raise
        finally:
            conn.close()  # back to the pool (rolled back there: the SELECT's implicit transaction ends)

    # -- the event loop's own connection (PostgreSQL) ------------------------------------------------------

    def _run_on_loop(self, sql: str, args: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """A read on an event loop's thread (a token, a receipt's versions: every request of an API process) runs
        on a connection that thread keeps, in autocommit for good. The pool's checkout and return and the two
        switches of autocommit around each read cost ~40 % of its CPU: a token read took 197 µs through the pool
        and 137 µs here, in-process on PostgreSQL (issue 20). One thread never runs two reads at once (the loop
        waits for each), so one connection serves it. A read is idempotent: when the connection is found gone
        (a server restart, a dropped link: what the pool's ping after idling would have caught), it is read
        once more on a new one."""
        try:
            return self._fetch_on_loop(sql, args)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return self._fetch_on_loop(sql, args)

    def _fetch_on_loop(self, sql: str, args: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """One try on the thread's connection (opened if it has none); a connection found gone is dropped."""
        conn = self._loop.conn
        if conn is None or conn.closed:
            conn = self._open_loop_connection()
        try:
            return _fetch(conn, sql, args, self.engine.dialect)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._loop.conn = None
                close_quietly(conn)
            raise

    def _open_loop_connection(self) -> Any:
        """The loop thread's keyed connection (store/keyed.py), closed when its thread ends or the engine is
        disposed."""
        conn = self._open_keyed()
        self._loop.conn = conn
        with self._lock:
            self._opened.add(conn)
        weakref.finalize(threading.current_thread(), close_quietly, conn)
        return conn

    def _open_keyed(self) -> Any:
        """A keyed connection (store/keyed.py) of the pool's making (its connect events run), detached from it so
        the pool's size is unchanged."""
        try:
            fairy = self.engine.raw_connection()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raise _wrapped("connect", (), exc, self.engine.dialect) from exc
        fairy.detach()
        try:
            return make_keyed(fairy.dbapi_connection)
        except self.engine.dialect.loaded_dbapi.Error as exc:
            close_quietly(fairy.dbapi_connection)
            raise _wrapped("keyed settings", (), exc, self.engine.dialect) from exc

    def _close_loop_connections(self, _engine: Engine) -> None:
        with self._lock:
            opened = list(self._opened)
        for conn in opened:
            close_quietly(conn)
        if self._keyed is not None:
            self._keyed.close_all()


class _LoopConnection(threading.local):
    """The DB-API connection of one thread's event loop (``FastReads._run_on_loop``)."""

    conn: Any = None


def compile_select(stmt: Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]], dialect: Dialect) -> Compiled:
    """``stmt`` (plain named bind parameters only) compiled for ``dialect``, with its bind and result processors:
    what ``run_compiled`` and ``FastReads`` run again and again without SQLAlchemy compiling it."""
    compiled = stmt.compile(dialect=dialect)
    binds: dict[str, Processor] = {}
    for name, param in compiled.binds.items():
        if param.expanding or param.value is not None or param.callable is not None:
            raise ValueError(f"fast reads take plain named parameters only, not {name!r}")
        binds[name] = _bind_processor(param.type, dialect)
    order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    return Compiled(str(compiled), order, binds, _result_processors(stmt, dialect))


class Prepared:
    """A SELECT compiled once per dialect and run in the caller's transaction (``run_compiled``): for statements of
    a write path that would otherwise be built and looked up in SQLAlchemy's cache on every call."""

    def __init__(self, stmt: Select[*tuple[Any, ...]]) -> None:
        self.stmt = stmt
        self._by_dialect: dict[str, Compiled] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        c = self._by_dialect.get(conn.dialect.name)
        if c is None:
            c = self._by_dialect[conn.dialect.name] = compile_select(self.stmt, conn.dialect)
        return run_compiled(conn, c, params)


def run_compiled(conn: Connection, c: Compiled, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of a ``compile_select`` statement with ``params`` (all of its bind names) on ``conn``'s DB-API
    connection, inside its transaction (so in the caller's snapshot), converted as SQLAlchemy would."""
    raw = _fetch(conn.connection.dbapi_connection, c.sql, _args(c, params), conn.dialect)
    return _converted(raw, c.results)


def _args(c: Compiled, params: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
    """``params`` through their bind processors, in the driver's parameter style."""
    values = {name: value if (p := c.binds[name]) is None else p(value) for name, value in params.items()}
    if len(values) != len(c.binds):
        raise ValueError(f"parameters {sorted(params)} do not match {sorted(c.binds)}")
    return values if c.order is None else [values[n] for n in c.order]


def _bind_processor(type_: Any, dialect: Dialect) -> Processor:
    """What SQLAlchemy runs a bound value of ``type_`` through for this dialect (TypeDecorators included)."""
    process: Processor = type_.dialect_impl(dialect).bind_processor(dialect)
    return process


def _result_processors(stmt: Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]],
                       dialect: Dialect) -> tuple[Processor, ...]:
    """What SQLAlchemy runs each selected column's values through for this dialect."""
    return tuple(col.type.dialect_impl(dialect).result_processor(dialect, None) for col in stmt.selected_columns)


def _fetch(dbapi_connection: Any, sql: str, args: Sequence[Any] | Mapping[str, Any],
           dialect: Dialect, *, alone: bool = False) -> list[Any]:
    """Execute and fetch all; a driver error becomes SQLAlchemy's (``OperationalError`` for a locked, full or
    unreachable database), which the API answers as a 503 ``store-unavailable`` like any other read's.

    ``alone`` (psycopg): the statement runs in autocommit, as its own transaction. psycopg otherwise sends a
    BEGIN before it and the pool a ROLLBACK after it: three round trips for one question (issue 20)."""
    try:
        if alone:
            dbapi_connection.autocommit = True
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        finally:
            if alone and not dbapi_connection.closed:
                dbapi_connection.autocommit = False
    except dialect.loaded_dbapi.Error as exc:
        raise _wrapped(sql, args, exc, dialect, dbapi_connection) from exc


def _wrapped(sql: str, args: Any, exc: Any, dialect: Dialect, dbapi_connection: Any = None) -> StatementError:
    gone = dbapi_connection is not None and dialect.is_disconnect(exc, dbapi_connection, None)
    wrapped: StatementError = DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error,
                                                  connection_invalidated=gone, dialect=dialect)
    return wrapped


def _converted(raw: list[Any], procs: Sequence[Processor]) -> list[tuple[Any, ...]]:
    if not any(procs):
        return [tuple(r) for r in raw]
    return [tuple(v if p is None else p(v) for p, v in zip(procs, r, strict=True)) for r in raw]


__all__ = ["Compiled", "FastReads", "Prepared", "compile_select", "run_compiled"]
