"""Keyed connections (store/keyed.py): every statement ``FastReads`` runs is planned once, as index probes joined by
nested loops — also when the plan is made while the tables are tiny, the case that made the engine plan every
execution (store/db.py) — and the worker threads' keyed connections are bounded, pinged after idling, replaced
when gone and closed with the engine. On a real PostgreSQL, whose backends are killed."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from mrledger.store import keyed as keyed_module
from mrledger.store.fastread import FastReads
from mrledger.store.keyed import KEYED_SETTINGS, KeyedConnections, make_keyed
from tests.conftest import PG_URL
from tests.harness import Api
from tests.http.test_results import record, submit
from tests.http.test_verify import anchored_receipt, verify
from tests.service.test_decisions import decide

pytestmark = pytest.mark.parametrize("engine", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                                     indirect=True)


def _opener(engine: Engine, settings: Callable[[Any], Any] = make_keyed) -> Callable[[], Any]:
    """Connections to ``engine``'s database (its schema), detached from its pool, through ``settings``."""
    def open_connection() -> Any:
        fairy = engine.raw_connection()
        fairy.detach()
        return settings(fairy.dbapi_connection)
    return open_connection


def _pid(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def _kill(pid: int) -> None:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    admin.dispose()
    time.sleep(0.2)


def _captured(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The SQL of every statement ``FastReads`` runs from now on, on the loop's connection or a worker's."""
    seen: set[str] = set()
    for name in ("_run", "_run_on_loop"):
        original = getattr(FastReads, name)

        def spy(self: FastReads, sql: str, args: Any, *rest: Any, _original: Any = original, **kw: Any) -> Any:
            seen.add(sql)
            return _original(self, sql, args, *rest, **kw)

        monkeypatch.setattr(FastReads, name, spy)
    return seen


def _generic_plan(conn: Any, sql: str) -> str:
    """The plan ``conn`` keeps for ``sql`` (psycopg's ``%(name)s`` parameters), whatever the parameters: the
    statement prepared under ``plan_cache_mode = force_generic_plan``, explained with every parameter NULL."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    server_sql = re.sub(r"%\((\w+)\)s", number, sql).replace("%%", "%")
    with conn.cursor() as cur:
        cur.execute(f"PREPARE keyed_probe AS {server_sql}")
        try:
            args = ", ".join(["NULL"] * len(names))
            cur.execute(f"EXPLAIN EXECUTE keyed_probe({args})" if names else "EXPLAIN EXECUTE keyed_probe")
            return "\n".join(row[0] for row in cur.fetchall())
        finally:
            cur.execute("DEALLOCATE keyed_probe")


def _scans_or_hashes(plan: str) -> list[str]:
    return [line.strip() for line in plan.splitlines() if re.search(r"Seq Scan on|(Hash|Merge)( \w+)? Join", line)]


@pytest.mark.anvil
def test_every_keyed_statement_is_planned_once_as_index_probes(chain_api: Api,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """What a node asks through ``FastReads`` in a verification's life — tokens, a receipt's versions, a held
    record, the grants, the decision's insert — captured from real requests, then each one's generic plan made
    with the tables tiny and freshly analysed. On a keyed connection: no table scanned, no hash or merge join,
    and a generic plan (parameters as ``$n``). On a connection that only plans generically, the same statements
    scan tables: what the settings prevent."""
    api = chain_api
    seen = _captured(monkeypatch)
    assert submit(api, {"records": [record(1), record(2)]}).status_code == 202
    api.anchor_all()
    receipt = anchored_receipt(api)
    anonymous = verify(api, {"receipt": receipt})  # on the event loop
    assert anonymous["verdict"] == "authentic"
    held = verify(api, {"hospital_id": "gz-001", "result_id": "R1", "record": record(1)}, "doctor")  # a worker
    assert held["verdict"] == "authentic"
    got = decide(api, {"verification_id": anonymous["verification_id"], "decision": "reordered"})
    assert got.status_code == 201, got.text
    assert any("api_tokens" in s for s in seen) and any("INSERT INTO decisions" in s for s in seen)
    assert any("FROM record_versions LEFT OUTER JOIN batch_leaves" in s for s in seen)

    engine = api.ledger.store.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("ANALYZE"))  # statistics of tiny tables: where a generic plan would choose to scan
    keyed = _opener(engine)()
    try:
        for sql in sorted(seen):
            plan = _generic_plan(keyed, sql)
            assert not _scans_or_hashes(plan), f"{sql}\n{plan}"
            if sql.startswith("SELECT") and "%(" in sql:
                assert "$1" in plan, plan  # generic: the plan names its parameters, not their values
    finally:
        keyed.close()

    def generic_only(conn: Any) -> Any:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_generic_plan")
        return conn

    plain = _opener(engine, generic_only)()
    try:
        assert any(_scans_or_hashes(_generic_plan(plain, sql)) for sql in seen)
    finally:
        plain.close()


def test_a_keyed_connection_has_its_settings_and_is_in_autocommit(engine: Engine) -> None:
    conn = _opener(engine)()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT " + ", ".join(f"current_setting('{k}')" for k in KEYED_SETTINGS))
            assert cur.fetchone() == tuple(KEYED_SETTINGS.values())
        assert conn.autocommit is True
    finally:
        conn.close()


@pytest.fixture
def keyed(engine: Engine) -> Iterator[KeyedConnections]:
    pool = KeyedConnections(_opener(engine), engine.dialect, limit=2)
    yield pool
    pool.close_all()


def test_at_most_the_limit_then_none(keyed: KeyedConnections) -> None:
    """Two in use, a third caller is told to take a pooled connection; one given back is lent again."""
    with keyed.connection() as a, keyed.connection() as b:
        assert a is not None and b is not None and a is not b
        with keyed.connection() as c:
            assert c is None
    with keyed.connection() as again:
        assert again in (a, b)


def test_one_killed_while_idle_is_replaced_unseen(keyed: KeyedConnections, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyed_module, "PING_IDLE_S", 0.0)  # every idle connection is pinged before it is lent
    with keyed.connection() as conn:
        first = _pid(conn)
    _kill(first)
    with keyed.connection() as conn:
        assert _pid(conn) != first


def test_one_killed_in_use_is_dropped_and_a_refused_statement_keeps_it(engine: Engine,
                                                                      keyed: KeyedConnections) -> None:
    """The statement's error reaches the caller as SQLAlchemy's; a connection found gone is not lent again, one
    whose statement was refused (autocommit: nothing half done) is."""
    fast = FastReads(engine)
    fast._keyed = keyed  # this test's pool (limit 2)
    with keyed.connection() as conn:
        first = _pid(conn)
    with pytest.raises(Exception, match="division by zero"):
        fast._run("SELECT 1 / 0", {}, alone=True)
    with keyed.connection() as conn:
        assert _pid(conn) == first
    _kill(first)
    assert keyed_module.PING_IDLE_S > 0.2  # used a moment ago, so not pinged: the statement meets the dead connection
    with pytest.raises(Exception):  # noqa: B017 - the driver's disconnect, wrapped by SQLAlchemy
        fast._run("SELECT 1", {}, alone=True)
    assert fast._run("SELECT 1", {}, alone=True) == [(1,)]
    with keyed.connection() as conn:
        assert _pid(conn) != first


def test_disposing_the_engine_closes_them(engine: Engine) -> None:
    fast = FastReads(engine)
    assert fast._run("SELECT 1", {}, alone=True) == [(1,)]
    assert fast._keyed is not None
    with fast._keyed.connection() as conn:
        pid = _pid(conn)
    engine.dispose()
    with create_engine(PG_URL).connect() as c:
        assert not c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar_one()
