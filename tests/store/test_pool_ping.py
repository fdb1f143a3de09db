"""PostgreSQL connections: pinged before use only after idling in the pool (``db._ping_when_idle``), and the
single-statement reads run without a transaction around them — on a real server, whose backends are killed."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import Engine, create_engine, func, literal_column, select, text
from sqlalchemy.exc import OperationalError

from mrledger.store import Store, db, keyed, make_engine
from tests.conftest import PG_URL, TEST_KEY

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg() -> Iterator[Engine]:
    engine = make_engine(PG_URL, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def _backend(engine: Engine) -> int:
    with engine.connect() as c:
        return int(c.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(pid: int) -> None:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    admin.dispose()
    time.sleep(0.2)  # the backend is gone once the signal is handled


def test_an_idle_connection_killed_in_the_pool_is_replaced_unseen(pg: Engine, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.setattr(db, "PING_IDLE_S", 0.1)
    first = _backend(pg)
    _kill(first)  # the pool still holds the dead connection, idle for longer than PING_IDLE_S below
    second = _backend(pg)  # pinged at checkout, found dead, replaced: the caller sees no error
    assert second != first


def test_a_connection_just_used_is_not_pinged(pg: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the trade: within PING_IDLE_S the checkout trusts the connection, so a server that
    dropped it that moment fails one statement; the pool is then invalidated and the next one works."""
    monkeypatch.setattr(db, "PING_IDLE_S", 3600.0)
    first = _backend(pg)
    _kill(first)
    with pytest.raises(OperationalError):  # not pinged: the statement meets the dead connection
        _backend(pg)
    assert _backend(pg) != first


def test_single_statement_reads_open_no_transaction(pg: Engine) -> None:
    """``Store.fetch`` and ``single_read`` run their statement in autocommit, as its own transaction: its
    transaction began with it (no BEGIN sent before it), while an ordinary checkout's began earlier, at BEGIN. The
    connection goes back to the pool in its usual (transactional) mode."""
    alone = select(func.statement_timestamp() == func.transaction_timestamp())
    store = Store(pg, master_key=TEST_KEY)
    assert store.fetch(alone, {}) == [(True,)]
    with store.single_read() as conn:
        assert conn.execute(alone).scalar_one() is True
    with pg.connect() as conn:  # the same (only) pooled connection, handed back as it was
        assert conn.execute(alone).scalar_one() is False
        raw = conn.connection.dbapi_connection
        assert raw is not None and raw.autocommit is False


def test_an_api_process_worth_of_threads_reuses_its_connections() -> None:
    """As many threads as an API process has in flight (``api_threads`` handlers, as many verification threads,
    the loop's reads and the flushers) keep the same backends: with QueuePool's default of 5 each connection
    past the fifth was closed when returned and the next request forked a new backend (a third of a city
    replay's CPU, issue 20). Counted by the backend pids the threads were served by."""
    import threading

    engine = make_engine(PG_URL)
    seen: set[int] = set()
    lock, start = threading.Lock(), threading.Barrier(12)

    def work() -> None:
        start.wait()
        for _ in range(30):
            with engine.connect() as c:
                pid = int(c.execute(text("SELECT pg_backend_pid()")).scalar_one())
                c.execute(text("SELECT pg_sleep(0.002)"))
            with lock:
                seen.add(pid)

    try:
        threads = [threading.Thread(target=work) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.dispose()
    assert len(seen) <= db.PG_POOL + db.PG_OVERFLOW
    assert len(seen) <= 12  # never more backends than threads: none was closed and opened again


def test_prepared_statements_are_planned_with_their_own_parameters() -> None:
    """Statements are prepared after five runs (psycopg's default), but never run on a generic plan: chosen
    while the tables were empty, it turned the duplicate check into a sequential scan (scripts/bench_store.py,
    ingest 7,700 -> 650 records/s). Every pooled connection plans each execution afresh."""
    engine = make_engine(PG_URL)
    try:
        with engine.connect() as c:
            assert c.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_custom_plan"
            raw = c.connection.dbapi_connection
            assert raw is not None and raw.prepare_threshold == 5
            for _ in range(12):  # prepared after the fifth run, then past the five custom plans of "auto"
                c.execute(text("SELECT count(*) FROM pg_class WHERE relname = :n"), {"n": "pg_class"}).scalar_one()
            prepared = c.execute(text("SELECT generic_plans, custom_plans FROM pg_prepared_statements")).all()
            assert prepared and all(generic == 0 and custom >= 1 for generic, custom in prepared), prepared
    finally:
        engine.dispose()


PID = select(func.pg_backend_pid())
T = TypeVar("T")


def _alive(pid: int, expected: bool) -> bool:
    """Whether backend ``pid`` is still there, once it is as ``expected`` or 5 s have passed (a backend leaves
    ``pg_stat_activity`` a moment after its client closed the connection)."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + 5
        while True:
            with admin.connect() as c:
                alive = bool(c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"),
                                       {"p": pid}).scalar_one())
            if alive == expected or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)
    finally:
        admin.dispose()


@pytest.fixture
def loop_thread() -> Iterator[ThreadPoolExecutor]:
    """One thread that runs event loops (``_on_a_loop``): the test's own thread may already hold a running loop
    another test left behind."""
    with ThreadPoolExecutor(1) as thread:
        yield thread


def _on_a_loop(thread: ThreadPoolExecutor, fetch: Callable[[], T]) -> T:
    """``fetch()`` called from a coroutine on an event loop in ``thread``, as an API process reads."""
    async def read() -> T:
        return fetch()
    return thread.submit(asyncio.run, read()).result()


def _pids(thread: ThreadPoolExecutor, store: Store, n: int = 1) -> list[int]:
    """The backend pids of ``n`` reads made on an event loop."""
    return _on_a_loop(thread, lambda: [int(store.fetch(PID, {})[0][0]) for _ in range(n)])


def test_reads_on_an_event_loop_keep_one_connection_beside_the_pool(pg: Engine,
                                                                     loop_thread: ThreadPoolExecutor) -> None:
    """A token's or a receipt's read on the loop runs on the loop thread's own connection, in autocommit: no
    checkout, no switch of autocommit around it (issue 20). Made by the pool (its connect events ran) but
    detached from it: the pool still has its one connection for everything else. A keyed connection
    (store/keyed.py): its planner plans each statement once, without scans of whole tables."""
    store = Store(pg, master_key=TEST_KEY)
    pids = _pids(loop_thread, store, 20)
    assert len(set(pids)) == 1
    alone_and_plans = select(func.statement_timestamp() == func.transaction_timestamp(),
                             *(func.current_setting(literal_column(f"'{name}'")) for name in keyed.KEYED_SETTINGS))
    assert _on_a_loop(loop_thread, lambda: store.fetch(alone_and_plans, {})) == [
        (True, *keyed.KEYED_SETTINGS.values())]
    assert _pids(loop_thread, store) == pids[:1]  # kept across loops of the same thread
    assert pg.pool.checkedout() == 0
    assert _backend(pg) != pids[0]  # the pool's own connection (pool_size=1, no overflow) is another


def test_a_loop_connection_found_gone_is_replaced_unseen(pg: Engine, loop_thread: ThreadPoolExecutor) -> None:
    """A read is idempotent: the loop's connection killed under it (a server restart, a dropped link), the read
    is made once more on a new connection, where the pool would have pinged a connection that had idled."""
    store = Store(pg, master_key=TEST_KEY)
    (first,) = _pids(loop_thread, store)
    _kill(first)
    (second,) = _pids(loop_thread, store)
    assert second != first
    assert _pids(loop_thread, store) == [second]


def test_loop_connections_close_with_their_thread_and_with_the_engine(pg: Engine,
                                                                      loop_thread: ThreadPoolExecutor) -> None:
    store = Store(pg, master_key=TEST_KEY)
    with ThreadPoolExecutor(1) as short_lived:
        (gone,) = _pids(short_lived, store)
    del short_lived  # its thread, ended, is then unreferenced
    gc.collect()
    assert not _alive(gone, expected=False)  # its thread ended: closed
    (kept,) = _pids(loop_thread, store)
    assert _alive(kept, expected=True)
    pg.dispose()
    assert not _alive(kept, expected=False)  # the engine disposed: closed
