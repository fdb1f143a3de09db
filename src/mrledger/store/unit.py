"""The store's unit of work: the three ways code outside one repository method may reach the database.

Why public: the store's aggregates (store/anchors.py, store/decisions.py, store/access.py, …), the key tools
(store/keystore.py, ``mrledger keys``) and tests need transactions of their own. They used to borrow
``Store._unit`` and ``Store._read``; a private helper that half the code calls is an API nobody documented.
These are that API, typed, with the contract each one keeps:

- ``unit_of_work()``: a write transaction. Commits when the block ends, rolls back if it raises. On SQLite it
  begins IMMEDIATE (``WRITE_OPTION``), so two writers queue at BEGIN instead of failing at their first write.
- ``read()``: a read-only transaction, for several statements that must see one state of the database. It
  refuses to write (``ReadOnlyError``): a write there would otherwise commit on PostgreSQL and deadlock-retry
  on SQLite, depending on the backend.
- ``serial_read()``: ``read()`` for bounded ranges fetched whole into Python (the KPI audit's): on PostgreSQL
  its statements start no parallel workers.
- ``single_read()``: a plain connection for one statement, the hot path of verification (see its docstring).
- ``fetch(stmt, params)``: the hottest of those statements, run on the DB-API cursor (store/fastread.py says why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Select, TextClause, event, text
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker

from mrledger.store.db import SINGLE_READ_OPTION, WRITE_OPTION
from mrledger.store.errors import ReadOnlyError
from mrledger.store.fastread import FastReads

#: What the key tools (store/keystore.py) and the buffered writers (store/buffer.py) take: a factory of
#: transactions, e.g. ``store.unit_of_work`` or ``store.read``.
Unit = Callable[[], AbstractContextManager[Session]]


def set_local(settings: Mapping[str, str]) -> TextClause:
    """One statement that sets each of ``settings`` (constants of this package, never input) for the current
    transaction only: ``set_config(…, true)`` is SET LOCAL, and one SELECT is one round trip for all of them."""
    return text("SELECT " + ", ".join(f"set_config('{name}', '{value}', true)" for name, value in settings.items()))


#: A transaction whose statements run in this backend alone: no parallel workers, no JIT compilation.
SERIAL_SETTINGS = {"max_parallel_workers_per_gather": "0", "jit": "off"}
SERIAL = set_local(SERIAL_SETTINGS)


class _ReadSession(Session):
    """A session that refuses writes (class-level listeners below: no per-session registration cost)."""


@event.listens_for(_ReadSession, "before_flush")
def _refuse_flush(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlyError("changes made inside Store.read(): write in Store.unit_of_work()")


@event.listens_for(_ReadSession, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlyError("an INSERT/UPDATE/DELETE inside Store.read(): write in Store.unit_of_work()")


class UnitOfWork:
    """Transactions over one engine. Thread-safe: every call opens its own session or connection.

    The ``Store`` facade inherits this (store/repository.py), so callers write ``store.unit_of_work()``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._readers = sessionmaker(engine, class_=_ReadSession, expire_on_commit=False)
        self._writers = sessionmaker(engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)
        # One statement needs no transaction around it: SQLite's implicit one (``SINGLE_READ_OPTION``), on
        # PostgreSQL autocommit, which spares the BEGIN and the pool's ROLLBACK round trips.
        single: dict[str, Any] = {SINGLE_READ_OPTION: True}
        if engine.dialect.name == "postgresql":
            single["isolation_level"] = "AUTOCOMMIT"
        self._single = engine.execution_options(**single)
        self._fast = FastReads(engine)

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A write transaction: all of the block's changes commit together when it ends, or none (it raised)."""
        with self._writers() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: several statements, one consistent view; writing raises ReadOnlyError."""
        with self._readers() as session, session.begin():
            yield session

    @contextmanager
    def serial_read(self) -> Iterator[Session]:
        """``read()`` whose statements each fetch a bounded range of rows by index, all of them into Python (the
        KPI audit's ranges of batches): on PostgreSQL without parallel workers and JIT for this transaction.
        Why: the planner gave each of the audit's three reads per range (~5,000 index probes) two parallel
        workers at city size — six worker processes started and stopped per range, thousands per audit, for
        rows the leader must fetch anyway (pg_stat_activity at 2.35 M records: ``IPC:ExecuteGather``,
        ``BgWorkerShutdown``; the machine fully busy while the audit's own processes used half of it). Without
        them the audit job over a 300,000 replay's 609,127 records took 28.8 s against 33.4 s (medians of ten and
        nine jobs, alternated; docs/scaling.md)."""
        with self.read() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(SERIAL)
            yield s

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """``read()`` whose statements all see one state of the database: SQLite's transaction already does; on
        PostgreSQL it is REPEATABLE READ (READ COMMITTED gives each statement its own moment, so a batch counted
        between two statements of a KPI report or audit would be seen by one and not the other)."""
        with self.read() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield s

    @contextmanager
    def single_read(self) -> Iterator[Connection]:
        """A plain connection for the hot single-statement reads of verification (one statement is
        consistent on its own). An ORM session with its transaction costs ~5x more: measured on SQLite,
        329 µs against 69 µs per ``versions`` lookup — a quarter of a verification's CPU time. One
        statement per connection: on SQLite it runs without BEGIN (``SINGLE_READ_OPTION``)."""
        with self._single.connect() as conn:
            yield conn

    def fetch(self, stmt: Select[*tuple[Any, ...]], params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT (a module-level statement with named bind parameters), on the DB-API cursor:
        a tenth of ``single_read``'s CPU for the lookups every verification makes (store/fastread.py)."""
        return self._fast.rows(stmt, params)

    def write_alone(self, sql: str, args: Mapping[str, Any]) -> list[Any]:
        """The rows of one writing statement in driver SQL, run as its own transaction (PostgreSQL only:
        ``FastReads.write_alone``)."""
        return self._fast.write_alone(sql, args)


__all__ = ["ReadOnlyError", "Unit", "UnitOfWork"]
