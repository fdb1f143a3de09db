"""``Store.fetch`` (store/fastread.py): the same rows, converted the same way, as SQLAlchemy's own execution —
on SQLite and PostgreSQL — for the statements verification asks on every request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, bindparam, select
from sqlalchemy.exc import DBAPIError, OperationalError

from mrledger.store import Store
from mrledger.store.fastread import compile_select, run_compiled
from mrledger.store.models import RecordVersion
from mrledger.store.results import _VERSIONS
from tests.conftest import TEST_KEY
from tests.store.test_repository import rec


def _store_with_versions(engine: Engine) -> Store:
    store = Store(engine, master_key=TEST_KEY)
    store.register_hospital("gz-001", "Guangzhou First")
    store.submit("gz-001", [rec(1)])
    store.seal("gz-001", 100)
    store.submit("gz-001", [rec(1, version=2)])  # pending: no batch position yet
    return store


def test_rows_equal_sqlalchemy_execution(engine: Engine) -> None:
    store = _store_with_versions(engine)
    rid = store.keys.index("gz-001", "R1")
    with engine.connect() as conn:
        expected = [tuple(r) for r in conn.execute(_VERSIONS, {"hid": "gz-001", "rid": rid})]
    got = store.fetch(_VERSIONS, {"hid": "gz-001", "rid": rid})
    assert got == expected
    assert [r[0] for r in got] == [1, 2]
    accepted = got[0][4]
    assert isinstance(accepted, datetime) and accepted.tzinfo is not None  # the model's UTC type, not a string
    assert got[0][5] == 1 and got[1][5] is None  # the sealed version's batch (seq 1), the pending one's none
    assert store.versions("gz-001", "R1")[0].leaf_hash == got[0][3]
    assert store.fetch(_VERSIONS, {"hid": "gz-001", "rid": b"\x00" * 32}) == []


def test_datetime_parameters_compare_like_sqlalchemy(engine: Engine) -> None:
    """A bound datetime goes through the column type's own processor: on SQLite, where times are strings, a
    bare driver adapter would compare differently."""
    store = _store_with_versions(engine)
    stmt = select(RecordVersion.version).where(RecordVersion.accepted_at <= bindparam("at")).order_by(
        RecordVersion.version)
    now = datetime.now(UTC)
    for at in (now + timedelta(hours=1), now - timedelta(days=1), now.astimezone().replace(microsecond=0)):
        with engine.connect() as conn:
            expected = [tuple(r) for r in conn.execute(stmt, {"at": at})]
        assert store.fetch(stmt, {"at": at}) == expected
        both = select(RecordVersion.version, RecordVersion.accepted_at).where(
            RecordVersion.accepted_at <= bindparam("at"))
        with engine.connect() as conn:  # compiled once, run inside the caller's transaction
            compiled = compile_select(both, conn.dialect)
            assert run_compiled(conn, compiled, {"at": at}) == [tuple(r) for r in conn.execute(both, {"at": at})]


def test_refuses_what_it_does_not_take(engine: Engine) -> None:
    store = Store(engine, master_key=TEST_KEY)
    expanding = select(RecordVersion.id).where(RecordVersion.version.in_(bindparam("vs", expanding=True)))
    with pytest.raises(ValueError, match="plain named parameters"):
        store.fetch(expanding, {"vs": [1]})
    with pytest.raises(ValueError, match="do not match"):
        store.fetch(_VERSIONS, {"hid": "gz-001"})
    with pytest.raises(KeyError):
        store.fetch(_VERSIONS, {"hid": "gz-001", "other": b""})


def test_driver_errors_are_sqlalchemys(engine: Engine) -> None:
    """A failing statement raises SQLAlchemy's DBAPIError (the API's 503 handler catches its OperationalError, not
    the driver's own classes), and the connection it used goes back to the pool usable."""
    store = _store_with_versions(engine)
    missing = Table("no_such_table", MetaData(), Column("a", Integer))
    with pytest.raises(DBAPIError) as caught:
        store.fetch(select(missing.c.a).where(missing.c.a == bindparam("a")), {"a": 1})
    if engine.dialect.name == "sqlite":
        assert isinstance(caught.value, OperationalError)
    for _ in range(3):  # every pooled connection still answers
        assert [r[0] for r in store.fetch(_VERSIONS, {"hid": "gz-001", "rid": store.keys.index("gz-001", "R1")})] \
            == [1, 2]
