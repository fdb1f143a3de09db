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

On PostgreSQL a statement with a ``many`` form takes all its rows in one execution instead: one array per
column, ``unnest``-ed into the INSERT's SELECT. Why: ``executemany`` is one INSERT per row (psycopg pipelines
them, but the server parses, plans and executes each), and in a city replay those per-row INSERTs — the sealer's
batch leaves, an encounter report's records, pending leaves and index rows, the buffered verifications and access
log — were the largest part of PostgreSQL's busy samples (``pg_stat_activity`` sampled, issue 20). The statement's
text is the same for any number of rows, so psycopg prepares it once per connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from sqlalchemy import (
    Column,
    Connection,
    Insert,
    Select,
    String,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
)
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
                 skipping: Callable[[Any], Insert] | None = None, many: Insert | None = None) -> None:
        """``skipping``: builds ``statement`` from a dialect's own ``insert`` function; given, a row whose key is
        already there is skipped (``ON CONFLICT DO NOTHING``, not in SQLAlchemy's generic INSERT) and ``run``
        counts only the rows inserted. ``many``: the same INSERT for PostgreSQL taking every row at once, each bind
        name an array (``unnest``, see the module's docstring); ``ON CONFLICT DO NOTHING`` is added to it when
        ``skipping`` is given."""
        self.statement, self.names, self.skipping, self.many = statement, tuple(names), skipping, many
        self._compiled: dict[str, tuple[str, tuple[int, ...] | None, list[Any]]] = {}
        self._many_sql: str | None = None

    @classmethod
    def values(cls, table: Table, columns: Sequence[str], *, skip_existing: bool = False) -> DriverInsert:
        """A plain multi-row INSERT of ``columns`` of ``table`` (bind names = column names). ``skip_existing``:
        a row whose key is already there is skipped, for rows that two writers may both write, identically (a
        verification: its buffer, and the decision that names it)."""
        def build(own_insert: Any) -> Insert:
            # inline(): no RETURNING of the generated key (PostgreSQL's compiler adds one otherwise).
            return cast(Insert, own_insert(table).values({c: bindparam(c) for c in columns}).inline())

        rows = arrays(table, columns)
        many = postgresql.insert(table).from_select(list(columns), select(*(rows.c[c] for c in columns)))
        return cls(build(insert), columns, skipping=build if skip_existing else None, many=many)

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
        if self.many is not None and len(rows) > 1 and conn.dialect.name == "postgresql":
            columns = zip(self.names, zip(*rows, strict=True), strict=True)  # a row of another width raises
            return int(conn.exec_driver_sql(self._many(conn.dialect), {n: list(c) for n, c in columns}).rowcount)
        sql, order, _ = self._sql(conn.dialect)
        params: Sequence[Any]
        if order is None:
            params = [dict(zip(self.names, row, strict=True)) for row in rows]
        elif order == tuple(range(len(self.names))):
            params = rows
        else:
            params = [tuple(row[i] for i in order) for row in rows]
        return int(conn.exec_driver_sql(sql, params).rowcount)

    def _many(self, dialect: Dialect) -> str:
        if self._many_sql is None:
            assert self.many is not None
            statement: Any = self.many
            if self.skipping is not None:
                statement = statement.on_conflict_do_nothing()
            self._many_sql = statement.compile(dialect=dialect).string
        return self._many_sql


def arrays(table: Table, names: Sequence[str], columns: Sequence[str] | None = None) -> Any:
    """``unnest`` of one array bind parameter per name, as a table with those names for columns; the array of
    name i holds values of ``table``'s column ``columns[i]`` (default: the column of that name). For a ``many``
    statement (``DriverInsert``): PostgreSQL only."""
    types = [_unbounded(table.c[c].type) for c in (columns or names)]
    return func.unnest(*(bindparam(n, type_=postgresql.ARRAY(t)) for n, t in zip(names, types, strict=True))
                       ).table_valued(*names).render_derived()


def _unbounded(kind: Any) -> Any:
    """A string column's type without its length: an explicit cast to ``VARCHAR(n)[]`` would cut a longer value
    short without a word, where assigning it to the column refuses it, as one INSERT per row does."""
    return String() if type(kind) is String and kind.length is not None else kind


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
