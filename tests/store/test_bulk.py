"""mrledger.store.bulk: statements handed to the driver as they are, on SQLite (qmark) and PostgreSQL (pyformat)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, LargeBinary, MetaData, String, Table, bindparam, event, insert, select
from sqlalchemy.exc import DBAPIError

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


AWKWARD = ["", "NULL", "null", 'a"b', "a,b", "{x}", "b\\s", "t\tb", "中文", " lead", "trail ", None]


def test_many_rows_take_one_statement_and_land_as_row_by_row(engine: Engine) -> None:
    """PostgreSQL takes a many-row INSERT as one statement of arrays (``unnest``); what lands is what one INSERT per
    row lands, for the values an array literal could garble: empty strings and the string NULL (not SQL NULL),
    quotes, commas, braces, backslashes, tabs, non-ASCII text, NUL bytes, and NULL in every column."""
    META.create_all(engine)
    sent: list[tuple[str, bool]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "bulk_t" in statement:
            sent.append((statement, executemany))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        statement = DriverInsert.values(T, ("a", "b", "c", "at"))
        rows = [(i, b, bytes([0, i, 255]) if i % 3 else None, WHEN if i % 4 else None) for i, b in enumerate(AWKWARD)]
        with engine.begin() as conn:
            stamp = processed(T.c.at, WHEN, conn.dialect)
            rows = [(a, b, c, stamp if at else None) for a, b, c, at in rows]
            assert statement.run(conn, rows) == len(rows)
            for a, b, c, at in rows:  # the same values again, one statement each, under other keys
                statement.run(conn, [(a + 100, b, c, at)])
        pg = engine.dialect.name == "postgresql"
        assert len(sent) == 1 + len(rows) and ("unnest" in sent[0][0]) == pg and sent[0][1] == (not pg)
        with engine.connect() as conn:
            got = [tuple(r) for r in conn.execute(select(T).order_by(T.c.a))]
        assert got[:len(rows)] == [(a - 100, b, c, at) for a, b, c, at in got[len(rows):]]
        assert [b for _, b, _, _ in got[:len(rows)]] == AWKWARD
        assert sum(at is None for _, _, _, at in got) == 2 * sum(i % 4 == 0 for i in range(len(AWKWARD)))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        META.drop_all(engine)


def test_many_rows_skip_what_is_there_and_count_what_was_inserted(engine: Engine) -> None:
    """``skip_existing`` in one statement: a key already in the table and a key twice in the same rows are each
    inserted once, and the count is of the rows inserted, as one INSERT per row counts them."""
    META.create_all(engine)
    try:
        statement = DriverInsert.values(T, ("a", "b", "c", "at"), skip_existing=True)
        with engine.begin() as conn:
            assert statement.run(conn, [(1, "one", None, None), (2, "two", None, None)]) == 2
            assert statement.run(conn, [(2, "again", None, None), (3, "three", None, None),
                                        (3, "twice", None, None), (4, "four", None, None)]) == 2
            if engine.dialect.name == "postgresql":  # a row of another width, found before anything is sent
                with pytest.raises(ValueError):
                    DriverInsert.values(T, ("a", "b")).run(conn, [(5, "x"), (6, "y", "extra")])
        if engine.dialect.name == "postgresql":  # a value too long for its column is refused, not cut short
            for rows in ([(7, "123456789")], [(7, "12345678"), (8, "123456789")]):
                with pytest.raises(DBAPIError, match="too long"), engine.begin() as conn:
                    DriverInsert.values(T, ("a", "b")).run(conn, rows)
        with engine.connect() as conn:
            got = [tuple(r) for r in conn.execute(select(T.c.a, T.c.b).order_by(T.c.a))]
        assert got == [(1, "one"), (2, "two"), (3, "three"), (4, "four")]
    finally:
        META.drop_all(engine)
