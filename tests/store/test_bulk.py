"""mrledger.store.bulk: statements handed to the driver as they are, on SQLite (qmark) and PostgreSQL (pyformat)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Engine, Integer, LargeBinary, MetaData, String, Table, bindparam, insert, select

from mrledger.store.bulk import DriverInsert, processed
from mrledger.store.models import PendingLeaf, RecordVersion, UTCDateTime
from mrledger.store.repository import Store
from tests.conftest import TEST_KEY
from tests.store.test_repository import rec

META = MetaData()
T = Table("bulk_t", META, Column("a", Integer, primary_key=True), Column("b", String(8)), Column("c", LargeBinary),
          Column("at", UTCDateTime()))
WHEN = datetime(2024, 5, 1, 7, 30, 0, 123456, tzinfo=UTC)


def test_rows_land_in_column_order_with_processed_values(engine: Engine) -> None:
    META.create_all(engine)
    try:
        # Bind names in another order than the statement's placeholders: the row tuples follow ``names``.
        stmt = insert(T).from_select(["a", "b", "c", "at"], select(
            bindparam("x", type_=Integer), bindparam("y", type_=String), bindparam("z", type_=LargeBinary),
            bindparam("w", type_=UTCDateTime())))
        copy = DriverInsert(stmt, ("w", "z", "y", "x"))
        with engine.begin() as conn:
            stamp = processed(T.c.at, WHEN, conn.dialect)
            DriverInsert.values(T, ("b", "a", "c", "at")).run(conn, [("one", 1, b"\x00\x01", stamp),
                                                                      ("two", 2, None, stamp)])
            copy.run(conn, [(stamp, b"\xff", "three", 3)])
            copy.run(conn, [])  # nothing to do is not an error
        with engine.connect() as conn:
            rows = conn.execute(select(T).order_by(T.c.a)).all()
        assert [tuple(r) for r in rows] == [(1, "one", b"\x00\x01", WHEN), (2, "two", None, WHEN),
                                            (3, "three", b"\xff", WHEN)]
    finally:
        META.drop_all(engine)


def test_each_pending_row_points_at_its_own_version(engine: Engine) -> None:
    """Submit looks the pending rows' record ids up by key in SQL: every new version gets exactly one."""
    store = Store(engine, master_key=TEST_KEY)
    store.register_hospital("gz-001", "x")
    store.submit("gz-001", [rec(i) for i in range(300)])
    store.submit("gz-001", [rec(i, version=2, supersedes=1, status="amended", value=6.0) for i in range(0, 300, 3)])
    with store.engine.connect() as conn:
        pairs = conn.execute(select(RecordVersion.id, RecordVersion.version, PendingLeaf.accepted_at,
                                    RecordVersion.accepted_at)
                             .join(PendingLeaf, PendingLeaf.record_version_id == RecordVersion.id)).all()
        versions = conn.execute(select(RecordVersion.id)).all()
    assert len(pairs) == len(versions) == 400
    assert sorted(v for _, v, _, _ in pairs).count(2) == 100
    assert all(p == r for _, _, p, r in pairs)


def test_run_values_processes_each_value_and_refuses_unnamed_columns(engine: Engine) -> None:
    META.create_all(engine)
    try:
        statement = DriverInsert.values(T, ("a", "b", "c", "at"))
        with engine.begin() as conn:
            statement.run_values(conn, [{"a": 1, "b": "one", "c": b"\x01", "at": WHEN},
                                        {"at": WHEN, "c": None, "b": "two", "a": 2}])
            with pytest.raises(ValueError, match="exactly the columns"):
                statement.run_values(conn, [{"a": 3, "b": "x", "c": None, "at": WHEN, "extra": 1}])
        with engine.connect() as conn:
            rows = conn.execute(select(T).order_by(T.c.a)).all()
        assert [tuple(r) for r in rows] == [(1, "one", b"\x01", WHEN), (2, "two", None, WHEN)]
    finally:
        META.drop_all(engine)
