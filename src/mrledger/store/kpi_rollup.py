"""KPI counts that do not grow with the history: a rollup of every sealed batch of an event stream.

A KPI report over a city's year reads millions of decisions and encounters if it reads them one by one (issue 20
measured a report that never answered after 60,000 verifications). But a sealed batch never changes: its counts,
by 15-minute UTC bucket and by every dimension a report groups or filters on (hospital, kind, categories, the
doctor's decision, the programme's recognition, the reorder reason), are computed once — by the sealer right
after it seals an event batch, or by the first report that finds the batch uncounted (``kpi_todo``, filled by a
trigger on ``batches``) — and written in one transaction with a marker row (``kpi_rolled``), so a batch is counted
completely or not at all. The same transaction adds them to the sums by UTC day and month and the runs of batches
(``mrledger.store.kpi_levels``) that a report reads (``mrledger.store.kpi_read``): with a real node's 5-second
batches a batch holds about one record, so rows per batch would be rows per record.

Every time zone's midnight falls on a 15-minute boundary of UTC, so every period and month of a report is a
whole number of buckets: the sums are exact, not approximations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, delete, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mrledger.store import kpi_levels
from mrledger.store.bulk import DriverInsert
from mrledger.store.event_audit import DECISION_COLUMNS, ENCOUNTER_COLUMNS, decision_facts, encounter_facts
from mrledger.store.events import STREAM_SUFFIX, DecisionFacts, EncounterFacts, join_codes
from mrledger.store.models import Batch, BatchLeaf, Decision, Encounter, KpiCount, KpiRolled, KpiRun, KpiSum, KpiTodo
from mrledger.store.repository import Store

# Rows selected as columns, not as ORM entities (decisions and encounters as store/decisions.py selects them): the
# sealer counts every event batch it seals, and the KPI audit reads a stream's every record and rollup row; building
# an instance per row was a fifth of the audit job's time (cProfile of scripts/bench_audit.py: 189,872 instances
# for 60,000 records, issue 20).
_ROLLUP = cast(Table, KpiCount.__table__)
_RUNS = cast(Table, KpiRun.__table__)
_SUMS = cast(Table, KpiSum.__table__)

#: The counter's inserts, compiled once and run on the driver (``store.bulk``, as ``kpi_levels.add``'s statements).
_INSERT_ROLLED = DriverInsert.values(cast(Table, KpiRolled.__table__), ("stream", "seq"))
_INSERT_ROLLUP = DriverInsert.values(_ROLLUP, tuple(c.name for c in _ROLLUP.columns if c.name != "id"))  # _rows

BUCKET = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: (stream, seq) pairs per ``IN (…)`` of ``batch_facts``: 10,000 parameters, under every database's limit.
_PAIRS = 5_000
#: Batches counted per transaction when catching up (bounded transactions; the sealer keeps up one by one).
_CHUNK = 64


def bucket_of(when: datetime) -> datetime:
    """The start of the 15-minute UTC bucket holding ``when``."""
    return _EPOCH + ((when - _EPOCH) // BUCKET) * BUCKET


@dataclass(frozen=True, slots=True)
class Key:
    """The dimensions of a count. ``decision``/``recognition``/``reason`` are empty for encounters."""

    hospital_id: str
    kind: str  # "d" decision, "e" encounter
    categories: str
    decision: str
    recognition: str
    reason: str


@dataclass(slots=True)
class Sums:
    n: int = 0
    retrieved: int = 0
    tests: int = 0
    amount_minor: int = 0

    def add(self, other: Sums) -> None:
        self.n += other.n
        self.retrieved += other.retrieved
        self.tests += other.tests
        self.amount_minor += other.amount_minor


def key_sums(facts: DecisionFacts | EncounterFacts) -> tuple[Key, datetime, Sums]:
    if isinstance(facts, EncounterFacts):
        return (Key(facts.hospital_id, "e", join_codes(facts.categories), "", "", ""), facts.seen_at,
                Sums(1, int(facts.retrieved), 0, 0))
    return (Key(facts.hospital_id, "d", facts.category or "", facts.decision, facts.recognition, facts.reason or ""),
            facts.decided_at, Sums(1, 0, facts.tests, facts.amount_minor))


#: A batch's rollup before it is written: sums by key and 15-minute bucket.
BatchSums = dict[tuple[Key, datetime], Sums]


@dataclass(frozen=True, slots=True)
class Counted:
    """What a report sums: counts of one key in one slot of the report's time line, of records whose batch has
    anchor ``status`` (``pending``: not sealed yet; ``sealed``: no anchor yet)."""

    key: Key
    slot: int
    status: str
    sums: Sums


def todo_query() -> Select[str, int, int | None]:
    """The batches sealed and not counted yet (``kpi_todo``, a few rows) with their sizes, in key order: each
    batch looked up by its primary key from the todo row (a subquery per row, which no planner flattens into a
    join). As a join, PostgreSQL without statistics — autovacuum off, as on the CI machine — hashed the todo rows
    and read every batch the ledger ever sealed on every call: 4.3 ms a call at 14,000 batches and growing, the
    sealer's child asking after every event batch (a 336,000-verification replay, pg_stat_statements, issue 20).
    A size of None: the batch is gone (never, short of SQL by hand); callers skip it as the join did."""
    size = (select(Batch.size).where(Batch.hospital_id == KpiTodo.stream, Batch.seq == KpiTodo.seq)
            .correlate(KpiTodo).scalar_subquery())
    return select(KpiTodo.stream, KpiTodo.seq, size).order_by(KpiTodo.stream, KpiTodo.seq)


def todo_batches(s: Session) -> list[tuple[str, int, int]]:
    """(stream, seq, size) of every batch sealed and not counted yet, in key order (``todo_query``)."""
    return [(h, q, n) for h, q, n in s.execute(todo_query()) if n is not None]


class KpiRollup:
    """The rollup tables (migrations 0011, 0015) over a store. Thread-safe (each call is its own unit of work)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- writing ----------------------------------------------------------------------------------------------

    def roll_up(self) -> int:
        """Count every sealed event batch not counted yet whose records are all indexed; the number counted."""
        with self._store.read() as s:
            todo = todo_batches(s)
        done = 0
        for i in range(0, len(todo), _CHUNK):
            done += self._roll(todo[i:i + _CHUNK])
        return done

    def check(self, stream: str, known: Mapping[int, BatchSums] | None = None) -> list[tuple[int | None, str]]:
        """(seq, what differs) for every counted batch of ``stream`` whose stored counts are not the counts of its
        indexed records now, and (None, what differs) when the day and month sums of the stream's hospitals or its
        runs of batches are not those of its counted batches' indexed records: the KPI audit's proof that reports
        summed from the rollup are the index's figures.

        ``known``: ``batch_sums`` of batches whose index rows the caller has read already (the audit job, a
        range at a time); only the other counted batches' rows are read here. Why: reading a stream's every
        index row a second time, in one statement, was a quarter of the audit job's time at city size (py-spy of
        its processes over 203,018 records) and held the whole stream's rows in memory at once."""
        known = known or {}
        with self._store.snapshot() as s:  # a batch counted meanwhile is in every table read, or in none
            seqs = list(s.scalars(select(KpiRolled.seq).where(KpiRolled.stream == stream).order_by(KpiRolled.seq)))
            stored: dict[int, dict[tuple[Key, datetime], tuple[int, int, int, int]]] = defaultdict(dict)
            for c in s.execute(select(*_ROLLUP.columns).where(KpiCount.stream == stream)):
                key = Key(c.hospital_id, c.kind, c.categories, c.decision, c.recognition, c.reason)
                stored[c.seq][(key, c.bucket)] = (c.n, c.retrieved, c.tests, c.amount_minor)
            facts = batch_facts(s, [(stream, q) for q in seqs if q not in known])
            runs: dict[tuple[str, datetime, str], list[tuple[int, int]]] = defaultdict(list)
            for r in s.execute(select(*_RUNS.columns).where(KpiRun.stream == stream)):
                runs[(r.level, r.bucket, r.category)].append((r.first_seq, r.last_seq))
            # Each batch's sums once: compared with its stored rows below and summed into the levels and runs.
            derived_sums = {seq: known[seq] if seq in known else batch_sums(facts.get((stream, seq), ()))
                            for seq in seqs}
            derived_rows = {seq: _rows(sums) for seq, sums in derived_sums.items()}
            hospitals = {r["hospital_id"] for rows in derived_rows.values() for r in rows}
            hospitals.add(stream.removesuffix(STREAM_SUFFIX))  # a row of its hospital that no record made
            # Columns, not ORM objects: a stream's hospitals hold thousands of day and month rows, and building an
            # entity per row (identity map included) was a quarter of this check (bench_audit --profile).
            level_stored = {(r.level, r.bucket, r.hospital_id, r.kind, r.categories, r.decision, r.recognition,
                             r.reason): [r.n, r.retrieved, r.tests, r.amount_minor]
                            for r in s.execute(select(*_SUMS.columns).where(KpiSum.hospital_id.in_(hospitals)))}
        out: list[tuple[int | None, str]] = []
        for seq, sums in derived_sums.items():
            derived = {k: (v.n, v.retrieved, v.tests, v.amount_minor) for k, v in sums.items()}
            if derived != stored.get(seq, {}):
                changed = len(set(derived.items()) ^ set(stored.get(seq, {}).items()))
                out.append((seq, f"the KPI counts of batch {seq} differ from its indexed records in {changed} "
                                 "rollup row(s)"))
        level_derived = dict(kpi_levels.level_sums(r for rows in derived_rows.values() for r in rows))
        if level_derived != level_stored:
            changed = len({k for k in level_derived.keys() | level_stored.keys()
                           if level_derived.get(k) != level_stored.get(k)})
            out.append((None, f"the day and month KPI sums of {sorted(hospitals)} differ from the indexed records "
                              f"of the counted batches in {changed} row(s)"))
        want: dict[tuple[str, datetime, str], list[tuple[int, int]]] = defaultdict(list)
        for seq, rows in derived_rows.items():
            for run_key in kpi_levels.run_keys(rows):
                want[run_key].append((seq, seq))
        got = {k: kpi_levels.merge_runs(v) for k, v in runs.items()}
        if {k: kpi_levels.merge_runs(v) for k, v in want.items()} != got:
            out.append((None, f"the runs of counted batches of {stream} by day and month differ from the indexed "
                              "records of its counted batches"))
        return out

    def _roll(self, batches: Sequence[tuple[str, int, int]]) -> int:
        with self._store.read() as s:
            facts = batch_facts(s, [(h, q) for h, q, _ in batches])
        complete = [(h, q) for h, q, size in batches if len(facts.get((h, q), ())) == size]
        if not complete:
            return 0
        per_batch = [(stream, seq, _rows(batch_sums(facts.get((stream, seq), ())), stream, seq))
                     for stream, seq in complete]
        rows = [r for _, _, batch in per_batch for r in batch]
        try:
            with self._store.unit_of_work() as s:
                conn = s.connection()
                _INSERT_ROLLED.run(conn, complete)
                if rows:
                    _INSERT_ROLLUP.run_values(conn, rows)
                s.execute(delete(KpiTodo).where(tuple_(KpiTodo.stream, KpiTodo.seq).in_(complete)))
                kpi_levels.add(s, per_batch)
        except IntegrityError:  # another process counted some of them first: the rest one by one
            if len(complete) == 1:
                return 0
            return sum(self._roll([(h, q, len(facts[(h, q)]))]) for h, q in complete)
        return len(complete)


def _rows(sums: BatchSums, stream: str = "", seq: int = 0) -> list[dict[str, Any]]:
    """Rollup rows (the columns of ``kpi_rollup``) of one batch's sums."""
    return [{"stream": stream, "seq": seq, "hospital_id": k.hospital_id, "bucket": b, "kind": k.kind,
             "categories": k.categories, "decision": k.decision, "recognition": k.recognition, "reason": k.reason,
             "n": v.n, "retrieved": v.retrieved, "tests": v.tests, "amount_minor": v.amount_minor}
            for (k, b), v in sorted(sums.items(), key=lambda kv: (kv[0][1], _dims(kv[0][0])))]


def _dims(k: Key) -> tuple[str, ...]:
    return (k.hospital_id, k.kind, k.categories, k.decision, k.recognition, k.reason)


def batch_sums(facts: Iterable[DecisionFacts | EncounterFacts]) -> BatchSums:
    """The rollup of some records (a batch's): sums by key and bucket."""
    sums: BatchSums = defaultdict(Sums)
    for f in facts:
        key, when, one = key_sums(f)
        sums[(key, bucket_of(when))].add(one)
    return sums


def batch_facts(s: Session, batches: Sequence[tuple[str, int]]) -> dict[tuple[str, int], list[
        DecisionFacts | EncounterFacts]]:
    """The indexed decisions and encounters of these batches, by batch. Asked ``_PAIRS`` batches at a time: a
    stream's every counted batch (the audit's rollup check) is tens of thousands at city size, two parameters
    each, past PostgreSQL's 65,535 parameters of one statement."""
    out: dict[tuple[str, int], list[DecisionFacts | EncounterFacts]] = defaultdict(list)
    pairs = list(batches)
    at = (BatchLeaf.hospital_id.label("batch_stream"), BatchLeaf.seq.label("batch_seq"))
    for i in range(0, len(pairs), _PAIRS):
        where = tuple_(BatchLeaf.hospital_id, BatchLeaf.seq).in_(pairs[i:i + _PAIRS])
        for d in s.execute(select(*DECISION_COLUMNS, *at).join(
                BatchLeaf, BatchLeaf.record_version_id == Decision.record_version_id).where(where)):
            out[(d.batch_stream, d.batch_seq)].append(decision_facts(d))
        for e in s.execute(select(*ENCOUNTER_COLUMNS, *at).join(
                BatchLeaf, BatchLeaf.record_version_id == Encounter.record_version_id).where(where)):
            out[(e.batch_stream, e.batch_seq)].append(encounter_facts(e))
    return out


__all__ = ["BUCKET", "BatchSums", "Counted", "Key", "KpiRollup", "Sums", "batch_facts", "batch_sums", "bucket_of",
           "key_sums"]
