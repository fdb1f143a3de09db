"""Many-row statements handed to the driver as they are: no per-row work in SQLAlchemy.

Why: a submission inserts 1,000 rows of ten columns. Through ``Session.execute(insert(table), rows)``
SQLAlchemy builds each row's parameters in Python and runs every value through its type's bind
processor (``LargeBinary`` wraps bytes the drivers take as they are; the datetime is formatted once per
value although a request stamps every row with the same instant). cProfile of ``Store.submit`` on SQLite
(30,000 records in 1,000-record requests): ``_init_compiled`` and the processors were 32 % of the time.

So the statement is compiled once per dialect, and ``run`` passes rows straight to the DB-API's
``executemany``. The price is that callers must pass values the driver takes unprocessed — ``str``,
``int``, ``bytes``, ``None`` — and run anything else through ``processed`` themselves (once, where a
value is the same in every row). Column defaults are not applied: name every column the row needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from sqlalchemy import Column, Connection, Insert, Select, Table, Update, bindparam, delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

#: Most ids in one ``IN (...)`` list: under SQLite's and the drivers' parameter limits, and large enough
#: that a 10,000-record submission or seal takes 20 statements, not 10,000.
IN_CHUNK = 500


class DriverInsert:
    """One INSERT (or INSERT … SELECT, or an UPDATE: ``run`` then counts the rows it changed) with bind parameters
    ``names``; rows are tuples in that order."""

    def __init__(self, statement: Insert | Update, names: Sequence[str], *,
                 skipping: Callable[[Any], Insert] | None = None) -> None:
        """``skipping``: builds ``statement`` from a dialect's own ``insert`` function; given, a row whose key is
        already there is skipped (``ON CONFLICT DO NOTHING``, not in SQLAlchemy's generic INSERT) and ``run``
        counts only the rows inserted."""
        self.statement, self.names, self.skipping = statement, tuple(names), skipping
        self._compiled: dict[str, tuple[str, tuple[int, ...] | None, list[Any]]] = {}

    @classmethod
    def values(cls, table: Table, columns: Sequence[str], *, skip_existing: bool = False) -> DriverInsert:
        """A plain multi-row INSERT of ``columns`` of ``table`` (bind names = column names). ``skip_existing``:
        a row whose key is already there is skipped, for rows that two writers may both write, identically (a
        verification: its buffer, and the decision that names it)."""
        def build(own_insert: Any) -> Insert:
            # inline(): no RETURNING of the generated key (PostgreSQL's compiler adds one otherwise).
            return cast(Insert, own_insert(table).values({c: bindparam(c) for c in columns}).inline())

        return cls(build(insert), columns, skipping=build if skip_existing else None)

    def run_values(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Rows of Python values by bind name, each value through its type's bind processor (the column's, for a
        ``values`` insert; the bind parameter's own in an INSERT … SELECT) — what SQLAlchemy does for such rows,
        without its per-row machinery. The rows inserted, as ``run`` counts them."""
        process = self._sql(conn.dialect)[2]
        return self.run(conn, [self._processed(process, row) for row in rows])

    def bound(self, dialect: Dialect, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The driver's SQL and arguments for one row of Python values by bind name (as ``run_values`` processes
        them), for a caller that runs it on the DB-API connection itself (``FastReads.write_alone``). Named
        paramstyles only (psycopg)."""
        sql, order, process = self._sql(dialect)
        if order is not None:
            raise NotImplementedError(f"bound arguments in the {dialect.paramstyle} paramstyle")
        return sql, dict(zip(self.names, self._processed(process, row), strict=True))

    def _processed(self, process: Sequence[Any], row: Mapping[str, Any]) -> tuple[Any, ...]:
        if len(row) != len(self.names):  # a column this statement does not name
            raise ValueError(f"rows must hold exactly the columns {self.names}")
        return tuple(row[name] if p is None else p(row[name]) for name, p in zip(self.names, process, strict=True))

    def _sql(self, dialect: Dialect) -> tuple[str, tuple[int, ...] | None, list[Any]]:
        """The SQL text; for positional paramstyles, where each placeholder's value sits in a row (None for named
        paramstyles, which take dicts); and each bind's processor, in ``names`` order."""
        kind = f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}"
        found = self._compiled.get(kind)
        if found is None:
            statement = self.statement if self.skipping is None else _skipping(self.skipping, dialect)
            compiled = statement.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            order = (tuple(self.names.index(name) for name in compiled.positiontup or ())
                     if compiled.positional else None)
            process = [compiled.binds[name].type._cached_bind_processor(dialect) for name in self.names]
            found = self._compiled[kind] = (compiled.string, order, process)
        return found

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Run for ``rows``; the rows inserted, as the driver counts them (-1 where it does not)."""
        if not rows:
            return 0
        sql, order, _ = self._sql(conn.dialect)
        params: Sequence[Any]
        if order is None:
            params = [dict(zip(self.names, row, strict=True)) for row in rows]
        elif order == tuple(range(len(self.names))):
            params = rows
        else:
            params = [tuple(row[i] for i in order) for row in rows]
        return int(conn.exec_driver_sql(sql, params).rowcount)


def _skipping(build: Callable[[Any], Insert], dialect: Dialect) -> Insert:
    """The statement ``build`` makes with ``dialect``'s own INSERT construct, with ``ON CONFLICT DO NOTHING``."""
    if dialect.name == "postgresql":
        own: Any = postgresql.insert
    elif dialect.name == "sqlite":
        own = sqlite.insert
    else:
        raise NotImplementedError(f"skipping existing rows on {dialect.name}")
    statement: Any = build(own)  # the dialect's own Insert, which has the clause
    return cast(Insert, statement.on_conflict_do_nothing())


def processed(column: Column[Any] | Any, value: Any, dialect: Dialect) -> Any:
    """``value`` as ``column``'s type would hand it to the driver (its bind processor, if any)."""
    process = column.type._cached_bind_processor(dialect)
    return value if process is None else process(value)


def delete_in_chunks(unit: Callable[[], AbstractContextManager[Session]], ids: Select[Any], id_column: Any,
                     chunk: int = 10_000) -> int:
    """Delete the rows whose ``id_column`` the query ``ids`` (a select of that column, without a limit) yields,
    ``chunk`` per transaction; the number deleted. Why chunks: one long delete would hold SQLite's writer lock (and
    PostgreSQL's row locks) against submissions for as long as it runs. Used by the retention jobs."""
    done = 0
    while True:
        with unit() as s:
            found = list(s.scalars(ids.limit(chunk)))
            if found:
                s.execute(delete(id_column.table).where(id_column.in_(found)))
        done += len(found)
        if len(found) < chunk:
            return done
