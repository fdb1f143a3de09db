"""What the decision audit reads from the KPI index (service/kpi_audit.py): the event streams, their batches with
their anchors, and the index rows as the facts their records commit, a bounded piece at a time.

A mixin of ``EventIndex`` (store/decisions.py), which writes those rows: split from it by concern, so that the
write path a decision takes and the audit's reads can be read — and grow — apart.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, and_, bindparam, func, select

from mrledger.store.events import STREAM_SUFFIX, DecisionFacts, EncounterFacts, ItemRef, split_codes
from mrledger.store.fastread import Prepared
from mrledger.store.models import Anchor, Batch, BatchLeaf, Decision, Encounter, Hospital, RecordVersion
from mrledger.store.repository import Store


def items_of(text: str) -> tuple[ItemRef, ...]:
    return tuple(ItemRef.from_obj(o) for o in json.loads(text))


#: An index row as the facts its record commits.
Facts = DecisionFacts | EncounterFacts


@dataclass(frozen=True, slots=True)
class AuditBatch:
    """A batch of an event stream as the audit checks it: its head, its status-map root and where its anchor
    says it is (registry, block; None before it is anchored)."""

    seq: int
    size: int
    root: bytes
    map_root: bytes | None
    status: str | None
    contract: str | None
    block_number: int | None


#: Index rows read per statement by the audit (``EventIndex.strays``).
_PAGE = 1000
DECISION_COLUMNS = tuple(Decision.__table__.columns)
ENCOUNTER_COLUMNS = tuple(Encounter.__table__.columns)


def _named(columns: Sequence[Any]) -> Callable[[Iterable[Any]], Any]:
    """A DB-API row of ``columns`` as a tuple that reads like SQLAlchemy's ``Row`` (``row.verdict``): what
    ``decision_facts`` and ``encounter_facts`` take, made in C (``namedtuple._make``)."""
    row_type: Any = namedtuple("IndexRow", [c.name for c in columns])  # type: ignore[misc]
    return cast(Callable[[Iterable[Any]], Any], row_type._make)


_DECISION_ROW, _ENCOUNTER_ROW = _named(DECISION_COLUMNS), _named(ENCOUNTER_COLUMNS)


def _placed(model: type[Decision] | type[Encounter]) -> Prepared:
    """The index rows of one table pointing at a record of a stream's batches ``lo``..``hi``, compiled once per
    dialect and fetched on the DB-API cursor (``fastread.Prepared``). Why: the audit reads every index row of a
    region once, 2.35 M at city size, and SQLAlchemy's per-row result handling was ~12 % of the audit processes'
    samples (py-spy, issue 20) for rows that only become facts. Measured over a 300,000 replay's 609,127 rows
    (five alternated rounds, docs/scaling.md): the reads' client CPU 10.82 → 8.37 s (median), the audit job
    36.5 → 35.5 s."""
    placed = select(BatchLeaf.record_version_id).where(BatchLeaf.hospital_id == bindparam("stream"),
                                                       BatchLeaf.seq.between(bindparam("lo"), bindparam("hi")))
    return Prepared(select(*model.__table__.columns).where(model.stream == bindparam("stream"),
                                                           model.record_version_id.in_(placed)))


_PLACED_DECISIONS, _PLACED_ENCOUNTERS = _placed(Decision), _placed(Encounter)


def decision_facts(d: Decision | Row[*tuple[Any, ...]]) -> DecisionFacts:
    return DecisionFacts(d.verification_id, d.hospital_id, d.token_id, d.verified_at, d.decided_at,
                         d.result_hospital_id, d.result_ref, d.result_version, d.verdict, d.recognition,
                         split_codes(d.rule_reasons), d.category, items_of(d.items), d.currency, d.decision, d.reason,
                         d.detail)


def encounter_facts(e: Encounter | Row[*tuple[Any, ...]]) -> EncounterFacts:
    return EncounterFacts(e.hospital_id, e.encounter_ref, e.seen_at, e.patient_hash, e.retrieved,
                          split_codes(e.categories))


class EventAudit:
    """The audit's reads of an ``EventIndex`` (which sets ``_store``)."""

    _store: Store

    def streams(self) -> list[str]:
        """Every event stream registered in this database."""
        with self._store.read() as s:
            return list(s.scalars(select(Hospital.id).where(Hospital.id.endswith(STREAM_SUFFIX))
                                  .order_by(Hospital.id)))

    # -- reading for the audit job, a bounded piece at a time (service/kpi_audit.py) ----------------------------

    def stream_records(self, stream: str) -> int:
        """How many records a stream holds (sealed or not): the audit's progress denominator."""
        with self._store.read() as s:
            return int(s.scalar(select(func.count()).select_from(RecordVersion)
                                .where(RecordVersion.hospital_id == stream)) or 0)

    def audit_batches(self, stream: str, after_seq: int, limit: int) -> list[AuditBatch]:
        """Up to ``limit`` batches of a stream after ``after_seq``, in order, with their anchors."""
        q = (select(Batch.seq, Batch.size, Batch.root, Batch.map_root, Anchor.status, Anchor.contract,
                    Anchor.block_number)
             .outerjoin(Anchor, and_(Anchor.hospital_id == Batch.hospital_id, Anchor.seq == Batch.seq))
             .where(Batch.hospital_id == stream, Batch.seq > after_seq).order_by(Batch.seq).limit(limit))
        with self._store.read() as s:
            return [AuditBatch(int(seq), int(size), bytes(root), None if mr is None else bytes(mr), status, contract,
                               block) for seq, size, root, mr, status, contract, block in s.execute(q)]

    def indexed_in_batches(self, stream: str, first_seq: int, last_seq: int) -> list[tuple[int, Facts]]:
        """(record version id, facts) of the index rows of a stream pointing at a record of its batches
        ``first_seq``..``last_seq``: one statement per table, whatever the number of rows."""
        params = {"stream": stream, "lo": first_seq, "hi": last_seq}
        with self._store.serial_read() as s:
            conn = s.connection()
            out: list[tuple[int, Facts]] = [
                (int(d.record_version_id), decision_facts(d))
                for d in map(_DECISION_ROW, _PLACED_DECISIONS.rows(conn, params))]
            out += [(int(e.record_version_id), encounter_facts(e))
                    for e in map(_ENCOUNTER_ROW, _PLACED_ENCOUNTERS.rows(conn, params))]
        return out

    def indexed_pending(self, stream: str, record_version_ids: Sequence[int]) -> list[tuple[int, Facts]]:
        """The same for records the caller read as not sealed yet, by their ids — not through ``pending_leaves``
        again: a record the sealer sealed between the two reads would otherwise have lost its index rows (and been
        reported ``unindexed``)."""
        ids = list(record_version_ids)
        with self._store.serial_read() as s:
            out: list[tuple[int, Facts]] = [(int(d.record_version_id), decision_facts(d)) for d in s.execute(
                select(*DECISION_COLUMNS).where(Decision.stream == stream, Decision.record_version_id.in_(ids)))]
            out += [(int(e.record_version_id), encounter_facts(e)) for e in s.execute(
                select(*ENCOUNTER_COLUMNS).where(Encounter.stream == stream, Encounter.record_version_id.in_(ids)))]
        return out

    def strays(self, stream: str, limit: int = _PAGE) -> list[Facts]:
        """Index rows of a stream that point at no record of that stream (at most ``limit``)."""
        mine = select(RecordVersion.id).where(RecordVersion.hospital_id == stream)
        with self._store.serial_read() as s:
            out: list[Facts] = [decision_facts(d) for d in s.execute(
                select(*DECISION_COLUMNS).where(Decision.stream == stream, Decision.record_version_id.not_in(mine))
                .limit(limit))]
            out += [encounter_facts(e) for e in s.execute(
                select(*ENCOUNTER_COLUMNS).where(Encounter.stream == stream,
                                                  Encounter.record_version_id.not_in(mine)).limit(limit))]
        return out[:limit]


__all__ = ["DECISION_COLUMNS", "ENCOUNTER_COLUMNS", "AuditBatch", "EventAudit", "Facts", "decision_facts",
           "encounter_facts", "items_of"]
