"""Engines and migrations. SQLite (WAL) is the embedded default; PostgreSQL is production.

Migrations run programmatically (``migrate``) on start, so a node never serves from a schema older
than its code; ``alembic`` on the command line works too with ``-x url=…``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from mrledger.store.keyfiles import private_sqlite

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Execution option marking a unit of work that will write (see the SQLite BEGIN IMMEDIATE below).
WRITE_OPTION = "mrl_write"
#: Execution option marking a connection that runs a single read statement (``Store.single_read``): SQLite runs a
#: lone SELECT in its own implicit read transaction, so no BEGIN is sent — one statement and one release and
#: re-acquisition of the GIL less per lookup, which counts when 40 request threads share one interpreter.
SINGLE_READ_OPTION = "mrl_single_read"
#: SQLite connections kept open. QueuePool's default (5 + 10 overflow) is below the API's 40 request
#: threads: under load every overflow connection was closed on return and reopened (with its PRAGMAs) by
#: the next request — 14 % of the server's time in a verification benchmark.
SQLITE_POOL = 48
#: PostgreSQL connections kept open per engine (one per process). QueuePool's default of 5 is below what an API
#: process has in flight (its handler and verification threads, the event loop's reads, the log flushers): an
#: overflow connection is closed when it is returned and the next request opens another, and each new connection
#: is a backend forked, authenticated and warming its catalogue caches — in a city replay on PostgreSQL, ~20
#: backends a second, about a third of the machine's CPU, spent where no process of the node shows it (issue 20).
#: Sized so that a node of four processes (three with MRL_API_PROCESSES=2) stays under PostgreSQL's default
#: max_connections of 100 even with every overflow connection open: 16 + 4 overflow, 4 keyed connections for worker
#: threads and one per event loop (store/keyed.py) make 25 a process.
PG_POOL, PG_OVERFLOW = 16, 4
#: A pooled PostgreSQL connection back in the pool for longer than this is pinged before it is handed out again.
PING_IDLE_S = 1.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the per-backend settings the store relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            private_sqlite(Path(parsed.database))  # 0600, and its -wal/-shm with it
        kwargs.setdefault("pool_size", SQLITE_POOL)
        kwargs.setdefault("max_overflow", SQLITE_POOL)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _sqlite_setup(engine)
        return engine
    # psycopg 3 prepares a statement after 5 runs (``prepare_threshold``), which saves PostgreSQL parsing and
    # analysing it again: a city replay's ~20 statements per verification were a third of PostgreSQL's CPU in
    # parse and analysis (issue 20). But a prepared statement's plan becomes generic after five runs, chosen
    # while the tables were empty: the duplicate check became a sequential scan and ingest fell from ~7,700 to
    # ~650 records/s over 100k records (scripts/bench_store.py). So every connection plans each execution with
    # its parameters (``plan_cache_mode = force_custom_plan``, ``_custom_plans``): prepared, never generic.
    connect_args = dict(kwargs.pop("connect_args", {}))
    kwargs.setdefault("pool_size", PG_POOL)
    kwargs.setdefault("max_overflow", PG_OVERFLOW)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _ping_when_idle(engine)
    _custom_plans(engine)
    return engine


def _custom_plans(engine: Engine) -> None:
    """Every new connection plans each execution of a prepared statement with its own parameters (see
    ``make_engine``). Set per session, once, when the pool opens the connection."""
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling, but only for a connection that sat in the pool: SQLAlchemy's
    ``pool_pre_ping`` pings on every checkout, and a decision's request checks out ~9 connections — in a city
    replay one statement in seven was that ping, each a round trip and a parse on both sides (PostgreSQL's
    statement log, issue 20). A connection used within the last ``PING_IDLE_S`` cannot have gone stale unseen:
    a server restart or a dropped link in that second fails its statement, SQLAlchemy sees the disconnect and
    invalidates the pool, as it would after a pre-ping. Raising ``DisconnectionError`` here is the documented way
    to make the pool discard the connection and take another (SQLAlchemy, "Disconnect Handling - Pessimistic")."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["mrl_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("mrl_idle_since", None)
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return  # just connected, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection is gone: {exc}") from exc


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN past the first SELECT, which breaks
    # all-or-nothing writes; take it over (SQLAlchemy's documented recipe) and switch on WAL so
    # readers do not block the writer.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write transaction takes the write lock up front (IMMEDIATE): a deferred one that reads
        # first and then writes fails with "database is locked" instead of waiting its turn.
        options = conn.get_execution_options()
        if not options.get(SINGLE_READ_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION) else "BEGIN")


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """``alembic upgrade head`` on this engine's database."""
    command.upgrade(alembic_config(engine), "head")
