"""kpi revisions by month

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04

Issue 20, a year's KPI report in under 200 ms at 2.5 M events: the counted sums of a closed month do not change
unless a late batch is counted into it, so a process may keep what it summed for a month and read it again only
when the month changed (``mrledger.store.kpi_cache``). ``kpi_revs`` holds one revision per UTC month
(``YYYY-MM``), changed by triggers in the same transaction as any write to ``kpi_rollup``, ``kpi_sums`` or
``kpi_runs`` of a bucket in that month — whoever writes (the counter, ``kpi_levels.rebuild``, SQL by hand), as
0015's triggers keep ``kpi_todo``/``kpi_open``. A report reads the revisions of its months in the snapshot it
reads everything else in; a kept sum is used only when its months' revisions are the ones it was summed at.

A month's first revision is random and later ones count up from it: a row is never deleted (only a downgrade
drops the table), and a table created again (downgrade, writes, upgrade) starts every month with data at a new
random value, so a process that kept a revision across that cannot find it again (chance 2⁻⁶²).

On PostgreSQL the triggers are per statement over its transition table and bump each month once, in month order:
two counting transactions lock the revision rows they share in the same order (no deadlock), and a bulk
statement (``rebuild``) writes one row per month, not one per changed row. SQLite has row triggers only; it has a
single writer, so order does not matter there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_TABLES = ("kpi_rollup", "kpi_sums", "kpi_runs")
#: A fresh revision: 62 random bits, never negative.
_SQLITE_RANDOM = "(random() & 4611686018427387903)"
_PG_RANDOM = "floor(random() * 4611686018427387903)::bigint"
_SQLITE_BUMP = ("INSERT INTO kpi_revs (month, rev) VALUES (substr({row}.bucket, 1, 7), " + _SQLITE_RANDOM + ") "
                "ON CONFLICT (month) DO UPDATE SET rev = rev + 1;")


def _sqlite() -> list[str]:
    out = []
    for table in _TABLES:
        out += [f"CREATE TRIGGER {table}_rev_ins AFTER INSERT ON {table} BEGIN "
                f"{_SQLITE_BUMP.format(row='NEW')} END",
                f"CREATE TRIGGER {table}_rev_upd AFTER UPDATE ON {table} BEGIN "
                f"{_SQLITE_BUMP.format(row='OLD')} {_SQLITE_BUMP.format(row='NEW')} END",
                f"CREATE TRIGGER {table}_rev_del AFTER DELETE ON {table} BEGIN "
                f"{_SQLITE_BUMP.format(row='OLD')} END"]
    return out


def _pg_function(name: str, rows: str) -> str:
    return f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO kpi_revs (month, rev)
        SELECT m, {_PG_RANDOM} FROM (SELECT DISTINCT to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM') AS m
                                     FROM ({rows}) AS changed) AS months ORDER BY m
        ON CONFLICT (month) DO UPDATE SET rev = kpi_revs.rev + 1;
      RETURN NULL;
    END $$"""


def _postgres() -> list[str]:
    out = [_pg_function("kpi_rev_added", "SELECT bucket FROM new_rows"),
           _pg_function("kpi_rev_removed", "SELECT bucket FROM old_rows"),
           _pg_function("kpi_rev_changed", "SELECT bucket FROM old_rows UNION SELECT bucket FROM new_rows")]
    for table in _TABLES:
        out += [f"CREATE TRIGGER {table}_rev_ins AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
                "FOR EACH STATEMENT EXECUTE FUNCTION kpi_rev_added()",
                f"CREATE TRIGGER {table}_rev_upd AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows "
                "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION kpi_rev_changed()",
                f"CREATE TRIGGER {table}_rev_del AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
                "FOR EACH STATEMENT EXECUTE FUNCTION kpi_rev_removed()"]
    return out


def upgrade() -> None:
    op.create_table(
        "kpi_revs",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_kpi_revs")),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    month = "to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM')" if postgres else "substr(bucket, 1, 7)"
    # Every month holding data gets a random first revision (module docstring: a table made again).
    op.execute(f"INSERT INTO kpi_revs (month, rev) SELECT m, {_PG_RANDOM if postgres else _SQLITE_RANDOM} FROM ("
               f"SELECT {month} AS m FROM kpi_sums WHERE level = 'm' UNION SELECT {month} FROM kpi_runs "
               f"WHERE level = 'm' UNION SELECT DISTINCT {month} FROM kpi_rollup) AS months")
    for sql in _postgres() if postgres else _sqlite():
        op.execute(sql)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _TABLES:
        for suffix in ("ins", "upd", "del"):
            op.execute(f"DROP TRIGGER {table}_rev_{suffix} ON {table}" if postgres
                       else f"DROP TRIGGER {table}_rev_{suffix}")
    if postgres:
        for name in ("kpi_rev_added", "kpi_rev_removed", "kpi_rev_changed"):
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("kpi_revs")
