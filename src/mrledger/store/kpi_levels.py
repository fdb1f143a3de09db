"""KPI counts summed across batches by UTC day and UTC month (migration 0015): what keeps a report's cost from
growing with the number of batches.

The per-batch rollup (``kpi_rollup``, one row per batch, 15-minute bucket and dimensions) is what the audit checks
and what a few open batches are subtracted from; but with a real node's 5-second batches a batch holds about one
record, so a year of it is a row per record. ``kpi_sums`` adds every counted batch's counts into one row per UTC
day and one per UTC month (per dimensions), and ``kpi_runs`` keeps which batches of a stream hold records of that
day or month, as runs of consecutive seqs. Both are written in the transaction that writes the batch's marker
(``kpi_rolled``), so a batch is in them completely or not at all, exactly once.

A report's period in its time zone is not a sum of UTC months (a month in +08:00 starts at 16:00 UTC on the last
day of the month before). Every zone's midnight is a 15-minute boundary of UTC, so :func:`pieces` writes any
[lo, hi) as a **signed** sum: the nearest UTC months, plus or minus the whole UTC days to its ends, plus or minus
the quarter-hours left (read from ``kpi_rollup``). Counts are integers, so adding and subtracting is exact. Which
batches hold a period's records is a set, not a sum, so :func:`cover` writes the period as disjoint pieces instead
(months inside, days inside, quarter-hours at the ends).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mrledger.store.bulk import DriverInsert, arrays
from mrledger.store.events import split_codes
from mrledger.store.models import KpiCount, KpiRun, KpiSum

DAY, MONTH, QUARTER = "d", "m", "q"
#: The ``kpi_runs`` category of every record (a real category is a catalogue code, never ``*``).
ALL = "*"
_DIMS = ("hospital_id", "kind", "categories", "decision", "recognition", "reason")
_SUMS = ("n", "retrieved", "tests", "amount_minor")


def floor_day(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def floor_month(t: datetime) -> datetime:
    return floor_day(t).replace(day=1)


def _next(level: str, t: datetime) -> datetime:
    if level == DAY:
        return t + timedelta(days=1)
    return (t + timedelta(days=32)).replace(day=1)


def _floor(level: str, t: datetime) -> datetime:
    return floor_day(t) if level == DAY else floor_month(t)


def _ceil(level: str, t: datetime) -> datetime:
    f = _floor(level, t)
    return f if f == t else _next(level, f)


def _nearest(level: str, t: datetime) -> datetime:
    f, c = _floor(level, t), _ceil(level, t)
    return f if t - f <= c - t else c


def pieces(lo: datetime, hi: datetime, level: str = MONTH, sign: int = 1) -> list[tuple[str, datetime, datetime,
                                                                                           int]]:
    """[lo, hi) (15-minute boundaries) as a signed sum of (level, start, end, ±1): whole UTC months or days between
    the nearest boundaries of that level, and the rest at the next level down (added or subtracted), down to
    quarter-hours. A month in +08:00 is one month row, plus 8 hours before it, minus 8 hours at its end."""
    if lo >= hi:
        return []
    if level == QUARTER:
        return [(QUARTER, lo, hi, sign)]
    down = DAY if level == MONTH else QUARTER
    a, b = _nearest(level, lo), _nearest(level, hi)
    if a >= b:
        return pieces(lo, hi, down, sign)
    out = [(level, a, b, sign)]
    out += pieces(lo, a, down, sign) if lo < a else pieces(a, lo, down, -sign)
    out += pieces(b, hi, down, sign) if b < hi else pieces(hi, b, down, -sign)
    return out


def cover(lo: datetime, hi: datetime) -> list[tuple[str, datetime, datetime]]:
    """[lo, hi) as disjoint pieces: quarter-hours up to the first UTC midnight, days up to the first month, whole
    months, then days and quarter-hours to ``hi``."""
    d1, d2 = _ceil(DAY, lo), _floor(DAY, hi)
    if d1 >= d2:
        return [(QUARTER, lo, hi)] if lo < hi else []
    out = [(QUARTER, lo, d1)] if lo < d1 else []
    m1, m2 = _ceil(MONTH, d1), _floor(MONTH, d2)
    if m1 >= m2:
        out.append((DAY, d1, d2))
    else:
        out += [(DAY, d1, m1)] if d1 < m1 else []
        out.append((MONTH, m1, m2))
        out += [(DAY, m2, d2)] if m2 < d2 else []
    if d2 < hi:
        out.append((QUARTER, d2, hi))
    return out


@lru_cache(maxsize=4096)
def run_categories(kind: str, categories: str) -> tuple[str, ...]:
    """The ``kpi_runs`` categories a count is found under: every record under ``*``, a decision under its
    category, an encounter under each of its categories (the report's category filter, docs/kpis.md §5).
    Memoised: a cold year's report asks it for each of ~22,000 keys, which share a few hundred category lists."""
    cats = split_codes(categories) if kind == "e" else ((categories,) if categories else ())
    return (ALL, *cats)


def level_sums(rows: Iterable[Mapping[Any, Any]]) -> dict[tuple[Any, ...], list[int]]:
    """(level, bucket, *dimensions) -> [n, retrieved, tests, amount_minor] of rollup rows (dicts with the columns
    of ``kpi_rollup``), by UTC day and by UTC month."""
    out: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in rows:
        dims = tuple(r[d] for d in _DIMS)
        day = floor_day(r["bucket"])
        for key in ((DAY, day, *dims), (MONTH, day.replace(day=1), *dims)):
            acc = out[key]
            for i, c in enumerate(_SUMS):
                acc[i] += r[c]
    return out


def run_keys(rows: Iterable[Mapping[Any, Any]]) -> set[tuple[str, datetime, str]]:
    """(level, bucket, category) of every day and month run some rollup rows of one batch extend."""
    out: set[tuple[str, datetime, str]] = set()
    for r in rows:
        day = floor_day(r["bucket"])
        for cat in run_categories(r["kind"], r["categories"]):
            out |= {(DAY, day, cat), (MONTH, day.replace(day=1), cat)}
    return out


def add(s: Session, batches: Sequence[tuple[str, int, list[dict[str, Any]]]]) -> None:
    """Add batches' rollup rows (stream, seq, rows) to the day and month sums and runs, in the caller's transaction
    (the one that inserts the batches' markers: another counter of the same batch fails on its marker first).
    Sums are added by an upsert (``n = n + excluded.n``), so concurrent counters of other batches add, never
    overwrite; a run is extended by ``UPDATE … WHERE last_seq = seq - 1`` (re-checked on the row's newest version
    on PostgreSQL), or a new run begins (adjacent runs left by counting out of order are merged when read). Rows
    are written in one order (sums, then runs, each sorted) so that two counters cannot deadlock.

    The statements are compiled once and run on the driver (``store.bulk``): the sealer counts every event batch it
    seals, and the ORM's per-call statement building and its ``synchronize_session`` evaluation of each run's UPDATE
    were a quarter of the sealer's CPU in a city replay (py-spy, issue 20)."""
    sums = level_sums(r for _, _, rows in batches for r in rows)
    conn = s.connection()
    if sums:
        _UPSERT_SUMS[conn.dialect.name].run_values(conn, [_sum_row(k, v) for k, v in sorted(sums.items())])
    todo = sorted((level, bucket, stream, cat, seq) for stream, seq, rows in batches
                  for level, bucket, cat in run_keys(rows))
    for level, bucket, stream, cat, seq in todo:
        run = {"level": level, "bucket": bucket, "stream": stream, "category": cat}
        if _EXTEND_RUN.run_values(conn, [{**run, "previous": seq - 1, "seq": seq}]) == 0:
            _INSERT_RUN.run_values(conn, [{**run, "first_seq": seq, "last_seq": seq}])


_SUM_TABLE, _RUN_TABLE = cast(Table, KpiSum.__table__), cast(Table, KpiRun.__table__)
_SUM_COLUMNS = ("level", "bucket", *_DIMS, *_SUMS)
_RUN_KEY = ("level", "bucket", "stream", "category")


def _upsert_sums(own_insert: Any, many: bool = False) -> Any:
    """The sums' upsert; ``many``: PostgreSQL's form taking every row at once (mrledger.store.bulk) — one statement
    and one firing of its revision trigger (migration 0016) instead of one per row. The rows' keys are distinct
    (``level_sums`` keys them), as ``ON CONFLICT DO UPDATE`` in one statement requires."""
    if many:
        rows = arrays(_SUM_TABLE, _SUM_COLUMNS)
        ins = own_insert(_SUM_TABLE).from_select(list(_SUM_COLUMNS), select(*(rows.c[c] for c in _SUM_COLUMNS)))
    else:
        ins = own_insert(_SUM_TABLE).values({c: bindparam(c) for c in _SUM_COLUMNS})
    return ins.on_conflict_do_update(index_elements=["level", "bucket", *_DIMS],
                                     set_={c: _SUM_TABLE.c[c] + ins.excluded[c] for c in _SUMS})


#: Per dialect: ``ON CONFLICT … DO UPDATE`` is each dialect's own construct.
_UPSERT_SUMS = {"postgresql": DriverInsert(_upsert_sums(postgresql.insert), _SUM_COLUMNS,
                                          many=_upsert_sums(postgresql.insert, many=True)),
                "sqlite": DriverInsert(_upsert_sums(sqlite.insert), _SUM_COLUMNS)}
_EXTEND_RUN = DriverInsert(update(_RUN_TABLE).where(
    *(_RUN_TABLE.c[c] == bindparam(c) for c in _RUN_KEY), _RUN_TABLE.c.last_seq == bindparam("previous"))
    .values(last_seq=bindparam("seq")), (*_RUN_KEY, "previous", "seq"))
_INSERT_RUN = DriverInsert.values(_RUN_TABLE, (*_RUN_KEY, "first_seq", "last_seq"))


def rebuild(s: Session, streams: Iterable[str] | None = None, chunk: int = 20_000) -> tuple[int, int]:
    """Write ``kpi_sums`` and ``kpi_runs`` from ``kpi_rollup`` (every counted batch), for a database counted before
    migration 0015 or a bulk load: what :func:`add` would have written batch by batch. Deletes what was there.
    Reads one stream at a time in seq order; (sum rows, run rows) written.

    Migration 0015 calls this with the ORM models of today: a later migration that changes ``kpi_rollup``,
    ``kpi_sums`` or ``kpi_runs`` must first freeze a copy of this function (on ``sa.table`` definitions of the
    0015 columns) into 0015, or upgrades from 0014 break."""
    s.execute(delete(KpiSum))
    s.execute(delete(KpiRun))
    names = list(streams) if streams is not None else list(s.scalars(select(KpiCount.stream).distinct()))
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    n_runs = 0
    cols = [getattr(KpiCount, c) for c in ("seq", "bucket", *_DIMS, *_SUMS)]
    for stream in names:
        open_runs: dict[tuple[str, datetime, str], list[int]] = {}
        done: list[dict[str, Any]] = []
        q = select(*cols).where(KpiCount.stream == stream).order_by(KpiCount.seq)
        for row in s.execute(q).mappings():
            for key, v in level_sums([row]).items():
                acc = sums[key]
                for i in range(4):
                    acc[i] += v[i]
            seq = row["seq"]
            for key in run_keys([row]):
                run = open_runs.get(key)
                if run is not None and run[1] >= seq - 1:
                    run[1] = seq
                    continue
                if run is not None:
                    done.append(_run(key, stream, run))
                open_runs[key] = [seq, seq]
            if len(done) >= chunk:
                _insert_all(s, KpiRun, done)
                n_runs, done = n_runs + len(done), []
        done += [_run(key, stream, run) for key, run in open_runs.items()]
        if done:
            _insert_all(s, KpiRun, done)
            n_runs += len(done)
    items = [_sum_row(k, v) for k, v in sums.items()]
    _insert_all(s, KpiSum, items)
    return len(items), n_runs


def _insert_all(s: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    """``rows`` into ``model``'s table: on PostgreSQL one COPY, elsewhere an executemany. Not an executemany on
    PostgreSQL: that is one statement per row, and each statement fires migration 0016's revision trigger, which
    updates its month's ``kpi_revs`` row — thousands of versions of one row in one transaction, each update
    walking the ones before it (a 2.5 M-event bulk load spent minutes on one 20,000-row chunk). A multi-row
    INSERT compiled 30,000 bind parameters per statement in SQLAlchemy (py-spy: the rebuild's whole time). A COPY
    is one statement (its trigger fires once, with every row in its transition table) and the fastest load."""
    if not rows:
        return
    conn = s.connection()
    if conn.dialect.name != "postgresql":
        s.execute(insert(model), rows)
        return
    cols = list(rows[0])
    raw: Any = conn.connection.dbapi_connection  # psycopg's: COPY is not in the DB-API
    with raw.cursor() as cur, cur.copy(f"COPY {model.__tablename__} ({', '.join(cols)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row([r[c] for c in cols])


def _sum_row(key: tuple[Any, ...], values: list[int]) -> dict[str, Any]:
    """A ``kpi_sums`` row from a ``level_sums`` entry."""
    return {"level": key[0], "bucket": key[1], **dict(zip(_DIMS, key[2:], strict=True)),
            **dict(zip(_SUMS, values, strict=True))}


def _run(key: tuple[str, datetime, str], stream: str, run: list[int]) -> dict[str, Any]:
    return {"level": key[0], "bucket": key[1], "stream": stream, "category": key[2], "first_seq": run[0],
            "last_seq": run[1]}


def merge_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or adjacent runs of seqs as the fewest runs."""
    out: list[list[int]] = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


__all__ = ["ALL", "DAY", "MONTH", "QUARTER", "add", "cover", "floor_day", "floor_month", "level_sums",
           "merge_runs", "pieces", "rebuild", "run_categories", "run_keys"]
