"""The leader vacuums the queues it churns when PostgreSQL's autovacuum has not (store/upkeep.py): a sealed batch's
pending rows are dead rows until a vacuum, and a server with autovacuum off (this machine's) kept every one."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from mrledger.store import Store
from mrledger.store.upkeep import analyze_stale, vacuum_churned
from tests.conftest import TEST_KEY
from tests.store.test_repository import Clock, rec

Stats = tuple[int, int, int]  # live, dead, vacuums


def _stats(engine: Engine, table: str) -> Stats:
    """(live, dead, vacuums) of ``table`` in the test's schema, as PostgreSQL's statistics say."""
    with engine.connect() as c:
        row = c.execute(text("SELECT n_live_tup, n_dead_tup, vacuum_count FROM pg_stat_user_tables "
                             "WHERE schemaname = current_schema() AND relname = :t"), {"t": table}).one()
    return int(row[0]), int(row[1]), int(row[2])


def _until(engine: Engine, table: str, ok: Callable[[int, int, int], bool], timeout: float = 20.0) -> Stats:
    """The statistics once ``ok`` holds: a backend reports what it did when it is next idle (within ~10 s)."""
    deadline = time.monotonic() + timeout
    while True:
        got = _stats(engine, table)
        if ok(*got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_the_queues_are_vacuumed_once_past_autovacuums_rule(engine: Engine) -> None:
    store = Store(engine, master_key=TEST_KEY, clock=Clock())
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    store.submit("gz-001", [rec(i) for i in range(300)])
    if engine.dialect.name != "postgresql":
        store.seal("gz-001", 1000)
        assert vacuum_churned(engine) == []  # SQLite reuses a deleted row's page by itself
        return
    # Nothing deleted yet: 300 live pending rows are no reason to vacuum.
    assert _until(engine, "pending_leaves", lambda live, dead, n: live >= 300)[:2] == (300, 0)
    assert "pending_leaves" not in vacuum_churned(engine)
    store.seal("gz-001", 1000)  # deletes the 300 pending rows: dead until vacuumed
    live, dead, vacuums = _until(engine, "pending_leaves", lambda live, dead, n: dead >= 300)
    assert (live, dead) == (0, 300)
    assert "pending_leaves" in vacuum_churned(engine)
    assert _until(engine, "pending_leaves", lambda live, dead, n: n > vacuums)[1:] == (0, vacuums + 1)
    # Past the rule only: the same check again finds nothing to do, and a few dead rows are left to autovacuum.
    assert vacuum_churned(engine) == []
    store.submit("gz-001", [rec(1000 + i) for i in range(20)])
    store.seal("gz-001", 1000)
    assert _until(engine, "pending_leaves", lambda live, dead, n: dead >= 20)[1] == 20
    assert "pending_leaves" not in vacuum_churned(engine)


def test_grown_tables_are_analysed_once_past_autovacuums_analyze_rule(engine: Engine) -> None:
    """Every table but the queues gets statistics by autovacuum's analyze rule (store/upkeep.py: without them a
    report's lookup scanned its whole stream), and the check again finds nothing stale; the queues are the
    vacuum's (``VACUUM (ANALYZE)``), never listed here."""
    store = Store(engine, master_key=TEST_KEY, clock=Clock())
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    store.submit("gz-001", [rec(i) for i in range(300)])
    if engine.dialect.name != "postgresql":
        assert analyze_stale(engine) == []
        return

    def analyses() -> int:
        with engine.connect() as c:
            return int(c.execute(text("SELECT analyze_count FROM pg_stat_user_tables "
                                      "WHERE schemaname = current_schema() AND relname = 'record_versions'")).one()[0])

    _until(engine, "record_versions", lambda live, dead, n: live >= 300)
    before = analyses()
    done = analyze_stale(engine)
    assert "record_versions" in done and "pending_leaves" not in done
    deadline = time.monotonic() + 20
    while analyses() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert analyses() == before + 1
    assert "record_versions" not in analyze_stale(engine)  # analysed: nothing changed since
    store.submit("gz-001", [rec(1000 + i) for i in range(20)])  # 20 < 80: still fresh enough
    _until(engine, "record_versions", lambda live, dead, n: live >= 320)
    assert "record_versions" not in analyze_stale(engine)
