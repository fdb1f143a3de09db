"""KPI counts that do not grow with the history: a rollup of every sealed batch of an event stream.

A KPI report over a city's year reads millions of decisions and encounters if it reads them one by one (issue 20
measured a report that never answered after 60,000 verifications). But a sealed batch never changes: its counts,
by 15-minute UTC bucket and by every dimension a report groups or filters on (hospital, kind, categories, the
doctor's decision, the programme's recognition, the reorder reason), are computed once — by the sealer right
after it seals an event batch, or by the first report that finds the batch uncounted — and written in one
transaction with a marker row (``kpi_rolled``), so a batch is counted completely or not at all. A report then
sums rollup rows in SQL (a few per batch), and reads one by one only what is not in a counted batch: records
still pending (the sealer's outbox, seconds of traffic) and the rare batch sealed before all its records were
indexed (a crash between a record's submission and its indexing; counted once its index rows are complete).

Every time zone's midnight falls on a 15-minute boundary of UTC, so every period and month of a report is a
whole number of buckets: the sums are exact, not approximations. Everything a report reads is read in one
snapshot (SQLite's transaction; REPEATABLE READ on PostgreSQL), so a batch sealed meanwhile is counted once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, insert, literal, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mrledger.ledger.status import CONFIRMED
from mrledger.store.decisions import _decision, _encounter
from mrledger.store.events import STREAM_SUFFIX, DecisionFacts, EncounterFacts, join_codes
from mrledger.store.models import Anchor, Batch, BatchLeaf, Decision, Encounter, KpiCount, KpiRolled, PendingLeaf
from mrledger.store.repository import Store

BUCKET = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


def _key_sums(facts: DecisionFacts | EncounterFacts) -> tuple[Key, datetime, Sums]:
    if isinstance(facts, EncounterFacts):
        return (Key(facts.hospital_id, "e", join_codes(facts.categories), "", "", ""), facts.seen_at,
                Sums(1, int(facts.retrieved), 0, 0))
    return (Key(facts.hospital_id, "d", facts.category or "", facts.decision, facts.recognition, facts.reason or ""),
            facts.decided_at, Sums(1, 0, facts.tests, facts.amount_minor))


@dataclass(frozen=True, slots=True)
class Counted:
    """What a report sums: counts of one key in one slot of the report's time line, from one batch (``seq`` None:
    not sealed yet) whose anchor has ``anchor`` status (None: sealed, not anchored yet)."""

    key: Key
    slot: int
    stream: str
    seq: int | None
    anchor: str | None
    sums: Sums


class KpiRollup:
    """The rollup tables (migration 0011) over a store. Thread-safe (each call is its own unit of work)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- writing ----------------------------------------------------------------------------------------------

    def roll_up(self) -> int:
        """Count every sealed event batch not counted yet whose records are all indexed; the number counted."""
        with self._store.read() as s:
            todo = [(h, q, n) for h, q, n in s.execute(
                _not_counted(Batch.size)
                .order_by(Batch.hospital_id, Batch.seq))]
        done = 0
        for i in range(0, len(todo), _CHUNK):
            done += self._roll(todo[i:i + _CHUNK])
        return done

    def check(self, stream: str) -> list[tuple[int, str]]:
        """(seq, what differs) for every counted batch of ``stream`` whose stored counts are not the counts of its
        indexed records now: the KPI audit's proof that reports summed from the rollup are the index's figures."""
        with self._store.read() as s:
            seqs = list(s.scalars(select(KpiRolled.seq).where(KpiRolled.stream == stream).order_by(KpiRolled.seq)))
            stored: dict[int, dict[tuple[Key, datetime], tuple[int, int, int, int]]] = defaultdict(dict)
            for c in s.scalars(select(KpiCount).where(KpiCount.stream == stream)):
                key = Key(c.hospital_id, c.kind, c.categories, c.decision, c.recognition, c.reason)
                stored[c.seq][(key, c.bucket)] = (c.n, c.retrieved, c.tests, c.amount_minor)
            facts = _batch_facts(s, [(stream, q) for q in seqs])
        out = []
        for seq in seqs:
            sums = _sums(facts.get((stream, seq), ()))
            derived = {k: (v.n, v.retrieved, v.tests, v.amount_minor) for k, v in sums.items()}
            if derived != stored.get(seq, {}):
                changed = len(set(derived.items()) ^ set(stored.get(seq, {}).items()))
                out.append((seq, f"the KPI counts of batch {seq} differ from its indexed records in {changed} "
                                 "rollup row(s)"))
        return out

    def _roll(self, batches: Sequence[tuple[str, int, int]]) -> int:
        with self._store.read() as s:
            facts = _batch_facts(s, [(h, q) for h, q, _ in batches])
        complete = [(h, q) for h, q, size in batches if len(facts.get((h, q), ())) == size]
        if not complete:
            return 0
        rows: list[dict[str, object]] = []
        for stream, seq in complete:
            sums = _sums(facts.get((stream, seq), ()))
            rows += [{"stream": stream, "seq": seq, "hospital_id": k.hospital_id, "bucket": b, "kind": k.kind,
                      "categories": k.categories, "decision": k.decision, "recognition": k.recognition,
                      "reason": k.reason, "n": v.n, "retrieved": v.retrieved, "tests": v.tests,
                      "amount_minor": v.amount_minor} for (k, b), v in sums.items()]
        try:
            with self._store.unit_of_work() as s:
                s.execute(insert(KpiRolled), [{"stream": h, "seq": q} for h, q in complete])
                if rows:
                    s.execute(insert(KpiCount), rows)
        except IntegrityError:  # another process counted some of them first: the rest one by one
            if len(complete) == 1:
                return 0
            return sum(self._roll([(h, q, len(facts[(h, q)]))]) for h, q in complete)
        return len(complete)

    # -- reading ----------------------------------------------------------------------------------------------

    def counted(self, slots: Sequence[tuple[datetime, datetime]], hospital_id: str | None = None, *,
                anchored_only: bool = False) -> list[Counted]:
        """Counts per key, slot, batch and anchor status of every decision and encounter whose time falls in one of
        ``slots`` (disjoint [start, end) UTC intervals on 15-minute boundaries, in order): rollup sums for counted
        batches, one by one for the rest, all read in one snapshot. ``anchored_only``: confirmed batches only."""
        self.roll_up()
        if not slots:
            return []
        lo, hi = slots[0][0], slots[-1][1]
        out: list[Counted] = []
        with self._snapshot() as s:
            r = KpiCount
            slot = _slot_case(r.bucket, slots)
            q = (select(r.hospital_id, r.kind, r.categories, r.decision, r.recognition, r.reason, slot, r.stream,
                        r.seq, Anchor.status, func.sum(r.n), func.sum(r.retrieved), func.sum(r.tests),
                        func.sum(r.amount_minor))
                 .outerjoin(Anchor, and_(Anchor.hospital_id == r.stream, Anchor.seq == r.seq))
                 .where(r.bucket >= lo, r.bucket < hi)
                 .group_by(r.hospital_id, r.kind, r.categories, r.decision, r.recognition, r.reason, slot, r.stream,
                           r.seq, Anchor.status))
            if hospital_id is not None:
                q = q.where(r.hospital_id == hospital_id)
            if anchored_only:
                q = q.where(Anchor.status == CONFIRMED)
            for h, kind, cats, dec, rec, reason, sl, stream, seq, status, n, ret, tests, amount in s.execute(q):
                if sl is None or sl < 0:
                    continue
                out.append(Counted(Key(h, kind, cats, dec, rec, reason), int(sl), stream, int(seq), status,
                                   Sums(int(n), int(ret), int(tests), int(amount))))
            out += self._uncounted(s, slots, hospital_id, anchored_only)
        return out

    def _uncounted(self, s: Session, slots: Sequence[tuple[datetime, datetime]], hospital_id: str | None,
                   anchored_only: bool) -> list[Counted]:
        """Records of the period not in a counted batch: pending ones, and those of batches not counted yet."""
        placed: list[tuple[DecisionFacts | EncounterFacts, str, int | None, str | None]] = []
        if not anchored_only:  # pending records have no anchor at all
            pending = PendingLeaf.record_version_id
            placed += [(_decision(d), d.stream, None, None) for d in s.scalars(
                select(Decision).join(PendingLeaf, pending == Decision.record_version_id))]
            placed += [(_encounter(e), e.stream, None, None) for e in s.scalars(
                select(Encounter).join(PendingLeaf, pending == Encounter.record_version_id))]
        open_batches = [(h, q) for h, q in s.execute(_not_counted())]
        if open_batches:
            status = dict(((h, q), st) for h, q, st in s.execute(
                select(Anchor.hospital_id, Anchor.seq, Anchor.status)
                .where(tuple_(Anchor.hospital_id, Anchor.seq).in_(open_batches))))
            for (stream, seq), batch in _batch_facts(s, open_batches).items():
                if anchored_only and status.get((stream, seq)) != CONFIRMED:
                    continue
                placed += [(f, stream, seq, status.get((stream, seq))) for f in batch]
        out = []
        for facts, stream, at, anchor in placed:
            key, when, one = _key_sums(facts)
            sl = _slot_of(when, slots)
            if sl is not None and (hospital_id is None or key.hospital_id == hospital_id):
                out.append(Counted(key, sl, stream, at, anchor, one))
        return out

    @contextmanager
    def _snapshot(self) -> Iterator[Session]:
        """One read transaction that sees one state of the database (SQLite's BEGIN already does)."""
        with self._store.read() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield s


def _not_counted(*extra: Any) -> Select[Any]:
    """(stream, seq, *extra) of the sealed event batches not in the rollup yet."""
    return (select(Batch.hospital_id, Batch.seq, *extra)
            .outerjoin(KpiRolled, and_(KpiRolled.stream == Batch.hospital_id, KpiRolled.seq == Batch.seq))
            .where(Batch.hospital_id.endswith(STREAM_SUFFIX), KpiRolled.seq.is_(None)))


def _sums(facts: Sequence[DecisionFacts | EncounterFacts]) -> dict[tuple[Key, datetime], Sums]:
    """The rollup of some records: sums by key and bucket."""
    sums: dict[tuple[Key, datetime], Sums] = defaultdict(Sums)
    for f in facts:
        key, when, one = _key_sums(f)
        sums[(key, bucket_of(when))].add(one)
    return sums


def _batch_facts(s: Session, batches: Sequence[tuple[str, int]]) -> dict[tuple[str, int], list[
        DecisionFacts | EncounterFacts]]:
    """The indexed decisions and encounters of these batches, by batch."""
    out: dict[tuple[str, int], list[DecisionFacts | EncounterFacts]] = defaultdict(list)
    if not batches:
        return out
    where = tuple_(BatchLeaf.hospital_id, BatchLeaf.seq).in_(list(batches))
    for d, h, q in s.execute(select(Decision, BatchLeaf.hospital_id, BatchLeaf.seq)
                             .join(BatchLeaf, BatchLeaf.record_version_id == Decision.record_version_id).where(where)):
        out[(h, q)].append(_decision(d))
    for e, h, q in s.execute(select(Encounter, BatchLeaf.hospital_id, BatchLeaf.seq)
                             .join(BatchLeaf, BatchLeaf.record_version_id == Encounter.record_version_id)
                             .where(where)):
        out[(h, q)].append(_encounter(e))
    return out


def _slot_case(column: Any, slots: Sequence[tuple[datetime, datetime]]) -> ColumnElement[int]:
    """SQL: the index of the slot holding ``column`` (−1 between slots)."""
    whens: list[tuple[ColumnElement[bool], int]] = []
    for i, (start, end) in enumerate(slots):
        whens.append((and_(column >= start, column < end), i))
    return case(*whens, else_=literal(-1))


def _slot_of(when: datetime, slots: Sequence[tuple[datetime, datetime]]) -> int | None:
    for i, (start, end) in enumerate(slots):
        if start <= when < end:
            return i
    return None


__all__ = ["BUCKET", "Counted", "Key", "KpiRollup", "Sums", "bucket_of"]
