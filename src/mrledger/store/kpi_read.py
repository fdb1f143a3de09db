"""What a KPI report reads: the day and month sums (``mrledger.store.kpi_levels``), the per-batch rollup at the
quarter-hour edges of its slots and for the few batches whose anchor is not confirmed, and one by one what no
counted batch holds (records still pending, a batch sealed before all its records were indexed).

The sums over counted batches are all confirmed batches *plus* the open ones (``kpi_open``: no confirmed anchor,
a handful at the tip of each stream), so the open batches' own rows are subtracted and, unless the report asks for
``anchored_only``, added back under their anchor status: the figures and ``sources`` stay exact without a row per
batch. Everything is read in one snapshot (SQLite's transaction; REPEATABLE READ on PostgreSQL), so a batch sealed
or counted meanwhile is counted once.

What the counted batches sum to in a slot, and which of them hold a span's records, depend only on the rows of
the UTC months their pieces touch: they are kept per process (``mrledger.store.kpi_cache``) and used again while
those months' revisions, read in the same snapshot, are unchanged. A year's report then re-reads the month being
counted into, not the year; the open batches and the records not counted yet are read every time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnClause,
    Integer,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, aliased

from mrledger.ledger.status import CONFIRMED, PENDING, SEALED
from mrledger.store.event_audit import decision_facts, encounter_facts
from mrledger.store.events import DecisionFacts, EncounterFacts, events_stream
from mrledger.store.fastread import Compiled, compile_select, run_compiled
from mrledger.store.kpi_cache import Revs, cache_of, months, read_revs
from mrledger.store.kpi_levels import ALL, QUARTER, cover, merge_runs, pieces, run_categories
from mrledger.store.kpi_rollup import Counted, Key, KpiRollup, Sums, batch_facts, key_sums, todo_batches
from mrledger.store.models import (
    Anchor,
    Decision,
    Encounter,
    KpiCount,
    KpiOpen,
    KpiRun,
    KpiSum,
    PendingLeaf,
)
from mrledger.store.repository import Store
from mrledger.store.unit import SERIAL_SETTINGS, set_local

_DIMS = ("hospital_id", "kind", "categories", "decision", "recognition", "reason")
_SUMS = ("n", "retrieved", "tests", "amount_minor")
_UNION_TERMS = 400
#: LIMIT 1 written into the SQL, not bound: a generic plan (psycopg prepares a statement run 5 times) costs a bound
#: LIMIT as a tenth of the table, and might scan.
_ONE: ColumnClause[Any] = literal_column("1")


@dataclass(frozen=True, slots=True)
class Run:
    """Batches ``first``..``last`` (inclusive) of ``stream``, all with anchor ``status``."""

    stream: str
    first: int
    last: int
    status: str


#: A slot's counted sums: (hospital_id, kind, categories, decision, recognition, reason) -> (n, retrieved, tests,
#: amount_minor), keys whose n is 0 left out.
Dims = tuple[str, str, str, str, str, str]
Amounts = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class SlotSums:
    """What every counted batch holds in one slot, whatever its anchor status. ``token`` names exactly these sums
    (the slot, the hospital filter and the revisions of the months they were summed from): two with equal tokens
    hold equal sums, so what is computed from them may be kept under the token."""

    token: Hashable
    sums: Mapping[Dims, Amounts]


@dataclass
class Tally:
    """A report's counts: per slot the counted batches' sums (as confirmed), ``adjust`` the counts that correct
    them (open batches' rows taken out as confirmed and put back under their status, unless ``anchored_only``;
    records not counted yet) and, per span asked for, the batches holding them."""

    slots: list[SlotSums] = field(default_factory=list)
    adjust: list[Counted] = field(default_factory=list)
    batches: list[list[Run]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Placed:
    """Counts of one key at one time (a bucket, or a record's time) in one batch outside the sums' confirmed part."""

    key: Key
    when: datetime
    stream: str
    seq: int | None
    status: str
    sums: Sums


def counted(store: Store, slots: Sequence[tuple[datetime, datetime]], hospital_id: str | None = None, *,
            category: str | None = None, anchored_only: bool = False,
            spans: Sequence[tuple[datetime, datetime]] = ()) -> Tally:
    """Counts per key, slot and anchor status of every decision and encounter whose time falls in one of ``slots``
    (disjoint [start, end) UTC intervals on 15-minute boundaries), and for each of ``spans`` the batches holding
    those of ``hospital_id`` (and reported under ``category``) as runs of seqs by anchor status. Counts what is not
    counted yet first. ``anchored_only``: records in confirmed batches only."""
    KpiRollup(store).roll_up()
    with store.snapshot() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(REPORT_SETTINGS)
        return _tally(store, s, slots, hospital_id, category, anchored_only, spans)


#: For the report's transaction only (``set_config(…, true)`` is SET LOCAL), in the statement that begins it. Its
#: statements are index range scans whose rows all come back to Python; a cold year's sums (~75,000 rows) are
#: costed past ``jit_above_cost`` and were compiled by LLVM for 310 ms of its 520 ms, and run as a parallel append
#: whose two workers start in tens of ms on a busy machine and add nothing to rows the leader must fetch anyway
#: (EXPLAIN ANALYZE at 2.5 M events, PostgreSQL 15 defaults; issue 20). ``work_mem``: room for ``_sums``'s GROUP BY
#: of those rows in memory (the default 4 MB spilled it to disk: 470 ms).
REPORT_SETTINGS = set_local({**SERIAL_SETTINGS, "work_mem": "32MB"})


def _tally(store: Store, s: Session, slots: Sequence[tuple[datetime, datetime]], hospital_id: str | None,
           category: str | None, anchored_only: bool, spans: Sequence[tuple[datetime, datetime]]) -> Tally:
    cache = cache_of(store)
    plans = [pieces(lo, hi) for lo, hi in slots]
    touched = [months((a, b) for _, a, b, _ in plan) for plan in plans]
    revs = read_revs(s, [m for ms in touched for m in ms] + months(spans))
    out = Tally()
    missing: dict[int, tuple[Hashable, Revs]] = {}
    key: Hashable
    for i, ((lo, hi), ms) in enumerate(zip(slots, touched, strict=True)):
        key, at = ("sums", lo, hi, hospital_id), tuple((m, revs.get(m)) for m in ms)
        kept = cache.get(key, at)
        if kept is None:
            missing[i] = (key, at)
        out.slots.append(SlotSums((key, at), kept or {}))  # type: ignore[arg-type]
    if missing:
        fresh = _sums(s, {i: plans[i] for i in missing}, hospital_id)
        for i, (key, at) in missing.items():
            found = fresh.get(i, {})
            cache.put(key, at, found, len(found) + 1)
            out.slots[i] = SlotSums((key, at), found)
    opened = _open(s, hospital_id)
    for p in opened:  # in the sums, but not confirmed: taken out, and put back below under their status
        sl = _slot_of(p.when, slots)
        if sl is not None:
            out.adjust.append(Counted(p.key, sl, CONFIRMED, Sums(-p.sums.n, -p.sums.retrieved, -p.sums.tests,
                                                                  -p.sums.amount_minor)))
    loose = _uncounted(s, hospital_id, anchored_only)
    extra = loose if anchored_only else opened + loose
    for p in extra:
        sl = _slot_of(p.when, slots)
        if sl is not None:
            out.adjust.append(Counted(p.key, sl, p.status, p.sums))
    for lo, hi in spans:
        combined: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for level, a, b in cover(lo, hi):  # each piece kept apart: counting into December leaves January-November
            key, at = ("runs", level, a, b, hospital_id, category), tuple((m, revs.get(m)) for m in months([(a, b)]))
            runs: Any = cache.get(key, at)
            if runs is None:
                runs = _counted_runs(s, level, a, b, hospital_id, category)
                cache.put(key, at, runs, sum(len(r) for r in runs.values()) + 1)
            for st, found in runs.items():
                combined[st] += found
        out.batches.append(_runs({st: merge_runs(r) for st, r in combined.items()}, lo, hi, category, opened,
                                 extra))
    return out


def _sums(s: Session, plans: Mapping[int, list[tuple[str, datetime, datetime, int]]],
          hospital_id: str | None) -> dict[int, dict[Dims, Amounts]]:
    """Per slot and key, the counts of every counted batch: each slot's plan of months and days of ``kpi_sums`` and
    quarter-hours of ``kpi_rollup`` at its edges, added or subtracted (``kpi_levels.pieces``)."""
    pieces = [(i, level, a, b, sign) for i, plan in plans.items() for level, a, b, sign in plan]
    conn = s.connection()
    out: dict[int, dict[Dims, Amounts]] = {}
    if conn.dialect.name == "postgresql" and len(pieces) <= _UNION_TERMS:  # one statement sums them all
        shape = tuple((i, level, sign) for i, level, _, _, sign in pieces)
        sql = _sums_sql(conn.dialect, shape, hospital_id is not None)
        for slot, *rest in run_compiled(conn, sql, _sums_params(pieces, hospital_id)):
            if rest[6]:
                out.setdefault(slot, {})[tuple(rest[:6])] = tuple(rest[6:])
        return out
    acc: dict[tuple[Any, ...], list[int]] = {}
    # At most _UNION_TERMS selects per statement: SQLite refuses a compound SELECT of more than 500 terms, and a
    # ten-year report in a zone more than 12 h from UTC needs five pieces a month (608 in all).
    for k in range(0, len(pieces), _UNION_TERMS):
        chunk = pieces[k:k + _UNION_TERMS]
        shape = tuple((i, level, sign) for i, level, _, _, sign in chunk)
        for row in run_compiled(conn, _sums_sql(conn.dialect, shape, hospital_id is not None),
                                _sums_params(chunk, hospital_id)):
            key = row[:7]
            found = acc.get(key)
            if found is None:
                acc[key] = [row[7], row[8], row[9], row[10]]
            else:
                found[0] += row[7]
                found[1] += row[8]
                found[2] += row[9]
                found[3] += row[10]
    for (slot, *dims), (n, retrieved, tests, amount) in acc.items():
        if n:
            out.setdefault(int(slot), {})[tuple(dims)] = (int(n), int(retrieved), int(tests), int(amount))
    return out


def _sums_params(pieces: Sequence[tuple[int, str, datetime, datetime, int]], hospital_id: str | None
                 ) -> dict[str, Any]:
    """The bind parameters of ``_sums_sql``'s statement for these pieces."""
    params: dict[str, Any] = {f"a{n}": a for n, (_, _, a, _, _) in enumerate(pieces)}
    params.update({f"b{n}": b for n, (_, _, _, b, _) in enumerate(pieces)})
    if hospital_id is not None:
        params["hid"] = hospital_id
    return params


#: ``_sums_sql``'s statements by shape; a shape is a period's slots and zone, so a handful are ever asked for.
_SUMS_SQL: dict[tuple[Any, ...], Compiled] = {}
_SUMS_SQL_KEPT = 256


def _sums_sql(dialect: Dialect, shape: tuple[tuple[int, str, int], ...], by_hospital: bool) -> Compiled:
    """The statement of ``_sums`` for pieces of this ``shape`` ((slot, level, sign) each; their bounds are bind
    parameters ``a<n>``, ``b<n>``, the hospital ``hid``), compiled once: SQLAlchemy took 27 ms to compile a year's
    40-piece union, a tenth of a cold report.

    On PostgreSQL the rows are summed per slot and key by the statement (GROUP BY, in memory under the report's
    ``work_mem``, ``REPORT_SETTINGS``): a cold year at 2.5 M events is ~74,000 rows in ~22,000 keys, and fetching and
    adding the 52,000 rows more in Python cost more than the aggregate (issue 20). SQLite groups them slower than
    Python adds them (130-190 ms for a year's union at 250,000 events against ~100 ms), so there they are summed
    here, as each chunk's rows are on PostgreSQL too."""
    key = (dialect.name, shape, by_hospital)
    hit = _SUMS_SQL.get(key)
    if hit is not None:
        return hit
    parts = []
    for n, (i, level, sign) in enumerate(shape):
        t: Any = KpiCount if level == QUARTER else KpiSum
        q = select(literal_column(str(int(i)), Integer).label("slot"), *(getattr(t, d) for d in _DIMS),
                   *((getattr(t, c) if sign > 0 else -getattr(t, c)).label(c) for c in _SUMS)
                   ).where(t.bucket >= bindparam(f"a{n}", type_=t.bucket.type),
                           t.bucket < bindparam(f"b{n}", type_=t.bucket.type))
        if level != QUARTER:
            q = q.where(t.level == literal_column(f"'{level}'"))
        if by_hospital:
            q = q.where(t.hospital_id == bindparam("hid", type_=t.hospital_id.type))
        parts.append(q)
    stmt: Any = union_all(*parts)
    if dialect.name == "postgresql":
        u = stmt.subquery()
        dims = [u.c[d] for d in _DIMS]
        stmt = select(u.c.slot, *dims, *(cast(func.sum(u.c[c]), BigInteger).label(c) for c in _SUMS)).group_by(
            u.c.slot, *dims)
    compiled = compile_select(stmt, dialect)
    if len(_SUMS_SQL) >= _SUMS_SQL_KEPT:
        _SUMS_SQL.clear()
    _SUMS_SQL[key] = compiled
    return compiled


def _open(s: Session, hospital_id: str | None) -> list[_Placed]:
    """The rollup rows of counted batches whose anchor is not confirmed (``kpi_open``), with that status: one
    statement whose every step is an index probe, whatever the planner's statistics say (``_open_rows``)."""
    out: list[_Placed] = []
    for stream, seq, status, bucket, *rest in s.execute(_open_rows(hospital_id)):
        out.append(_Placed(Key(*rest[:6]), bucket, stream, seq, status or SEALED, Sums(*rest[6:])))
    return out


def _open_rows(hospital_id: str | None) -> Any:
    """``kpi_open``'s keys walked in primary-key order, one ``ORDER BY stream, seq LIMIT 1`` probe past the last
    key found per step (a recursive CTE), then each key's rollup rows and anchor looked up by their (stream, seq)
    indexes.

    Why not a plain SELECT of ``kpi_open``: on PostgreSQL its heap keeps the pages of every batch ever open (2.5 M
    inserted and deleted by the triggers at 2.5 M batches: 124 MB for 340 live rows; VACUUM frees them but cannot
    shrink the table past its live rows at the end), and the planner, costing by pages, scans them all: 58-128 ms
    of every report, against 0.8 ms for the index. Before ANALYZE it hash-joined ``kpi_open`` to all 2.5 M anchors
    (1.3 s). The rollup rows were one ``stream = ? AND seq IN (…)`` select per stream in a UNION ALL, which
    PostgreSQL ran as a parallel append: 3 ms of work, 13-50 ms starting workers (EXPLAIN ANALYZE, issue 20). A
    LIMIT 1 probe in key order is an index probe under any statistics, and the join from the CTE's few rows is a
    nested loop over the indexes; no parameters, so no chunking. Two probes a key (one per column: SQLite has no
    LATERAL, and PostgreSQL refuses the recursive name inside a subquery), ~10 µs each: a backlog of 100,000 open
    batches costs ~2 s here, and more in building its rows."""
    k = aliased(KpiOpen)
    first = select(KpiOpen.stream, KpiOpen.seq).order_by(KpiOpen.stream, KpiOpen.seq).limit(_ONE).subquery()
    walk = select(first.c.stream, first.c.seq).cte("open_keys", recursive=True)

    def after(col: Any) -> Any:
        return (select(col).where(tuple_(k.stream, k.seq) > tuple_(walk.c.stream, walk.c.seq))
                .order_by(k.stream, k.seq).limit(_ONE).scalar_subquery())

    walk = walk.union_all(select(after(k.stream), after(k.seq)).where(walk.c.stream.is_not(None)))
    q = (select(walk.c.stream, walk.c.seq, Anchor.status, KpiCount.bucket,
                *(getattr(KpiCount, c) for c in (*_DIMS, *_SUMS)))
         .select_from(walk)
         .join(KpiCount, and_(KpiCount.stream == walk.c.stream, KpiCount.seq == walk.c.seq))
         .outerjoin(Anchor, and_(Anchor.hospital_id == walk.c.stream, Anchor.seq == walk.c.seq)))
    if hospital_id is not None:
        q = q.where(KpiCount.hospital_id == hospital_id)
    return q


def _uncounted(s: Session, hospital_id: str | None, anchored_only: bool) -> list[_Placed]:
    """Records not in a counted batch, one by one: pending ones, and those of batches not counted yet."""
    placed: list[tuple[DecisionFacts | EncounterFacts, str, int | None, str]] = []
    if not anchored_only:  # pending records have no anchor at all
        pending = PendingLeaf.record_version_id
        placed += [(decision_facts(d), d.stream, None, PENDING) for d in s.scalars(
            select(Decision).join(PendingLeaf, pending == Decision.record_version_id))]
        placed += [(encounter_facts(e), e.stream, None, PENDING) for e in s.scalars(
            select(Encounter).join(PendingLeaf, pending == Encounter.record_version_id))]
    # The few todo rows, each batch looked up by its key (kpi_rollup.todo_query): as a join, SQLite (ordered
    # otherwise) and PostgreSQL without statistics scanned every batch (300-500 ms a report at 2.5 M batches).
    todo = [(h, q) for h, q, _ in todo_batches(s)]
    if todo:
        status = dict(((h, q), st) for h, q, st in s.execute(
            select(Anchor.hospital_id, Anchor.seq, Anchor.status)
            .where(tuple_(Anchor.hospital_id, Anchor.seq).in_(todo))))
        for (stream, seq), batch in batch_facts(s, todo).items():
            st = status.get((stream, seq)) or SEALED
            if not anchored_only or st == CONFIRMED:
                placed += [(f, stream, seq, st) for f in batch]
    out = []
    for facts, stream, at, st in placed:
        key, when, one = key_sums(facts)
        if hospital_id is None or key.hospital_id == hospital_id:
            out.append(_Placed(key, when, stream, at, st, one))
    return out


def _counted_runs(s: Session, level: str, a: datetime, b: datetime, hospital_id: str | None,
                  category: str | None) -> dict[str, list[tuple[int, int]]]:
    """Per stream, the counted batches holding records of one piece of ``kpi_levels.cover`` (of ``hospital_id``,
    reported under ``category``) as the fewest runs of seqs: the piece's day or month runs, or its quarter-hours'
    rollup rows, whatever their anchor status."""
    counted: dict[str, list[tuple[int, int]]] = defaultdict(list)
    if level == QUARTER:
        q: Any = (select(KpiCount.stream, KpiCount.seq, KpiCount.kind, KpiCount.categories)
                  .where(KpiCount.bucket >= a, KpiCount.bucket < b))
        if hospital_id is not None:
            q = q.where(KpiCount.hospital_id == hospital_id)
        for st, seq, kind, cats in s.execute(q):
            if category is None or category in run_categories(kind, cats)[1:]:
                counted[st].append((seq, seq))
    else:
        q = (select(KpiRun.stream, KpiRun.first_seq, KpiRun.last_seq)
             .where(KpiRun.level == level, KpiRun.bucket >= a, KpiRun.bucket < b, KpiRun.category == (category or ALL)))
        if hospital_id is not None:
            q = q.where(KpiRun.stream == events_stream(hospital_id))
        for st, first, last in s.execute(q):
            counted[st].append((first, last))
    return {st: merge_runs(runs) for st, runs in counted.items()}


def _runs(counted: Mapping[str, list[tuple[int, int]]], lo: datetime, hi: datetime, category: str | None,
          opened: Sequence[_Placed], extra: Sequence[_Placed]) -> list[Run]:
    """The batches holding the records of [lo, hi): the counted ones, confirmed unless open; open and uncounted
    ones with their status."""

    def mine(p: _Placed) -> bool:
        return lo <= p.when < hi and (category is None or category in run_categories(p.key.kind,
                                                                                     p.key.categories)[1:])

    not_confirmed = {(p.stream, p.seq) for p in opened if mine(p)}
    by_status: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for st, runs in counted.items():
        gone = sorted(q for h, q in not_confirmed if h == st and q is not None)
        by_status[(st, CONFIRMED)] += _without(runs, gone)
    for p in extra:
        if p.seq is not None and mine(p):
            by_status[(p.stream, p.status)].append((p.seq, p.seq))
    return sorted((Run(st, a, b, status) for (st, status), runs in by_status.items() for a, b in merge_runs(runs)),
                  key=lambda r: (r.stream, r.first))


def _without(runs: list[tuple[int, int]], seqs: list[int]) -> list[tuple[int, int]]:
    """``runs`` (sorted, disjoint) less the sorted ``seqs``."""
    out = []
    for a, b in runs:
        for q in seqs:
            if a <= q <= b:
                if a < q:
                    out.append((a, q - 1))
                a = q + 1
        if a <= b:
            out.append((a, b))
    return out


def _slot_of(when: datetime, slots: Sequence[tuple[datetime, datetime]]) -> int | None:
    for i, (start, end) in enumerate(slots):
        if start <= when < end:
            return i
    return None


__all__ = ["Amounts", "Dims", "Run", "SlotSums", "Tally", "counted"]
