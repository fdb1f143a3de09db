"""Verifications, and the KPI index of decisions and encounters (tables of migration 0006).

Verifications are written like the access log: directly, or under ``mrledger serve`` from a buffer flushed
every 100 ms (one committed insert per verification would cost what it cost the access log, a third of a
verification under load). The process also keeps its latest verifications in memory, so a decision right after
its verification finds it without a read; a crash can lose the last 100 ms of them (a decision naming one then
gets a 404 and the doctor verifies again).

A decision is indexed in the transaction that commits its record to the hospital's event stream
(``Store.submit``'s ``within``), with the verification it names: one commit per decision. Before issue 20 they
were three (the buffer's flush, the record, the index), and a city replay's request threads spent most of their
time waiting on them (py-spy). On PostgreSQL a new decision is one statement, its own transaction (``write_new``,
store/decision_write.py); ``Store.submit`` with ``indexing`` takes every other case. An encounter report is
submitted (one transaction) and then indexed (a second one). Should the process die in between, the record is in
the stream but not in the index: the audit check reports it (``unindexed``) and the retried request, which
resolves to the same record, indexes it. A decision committed that way by an earlier version is indexed the same
way. The index rows hold every committed field (``mrledger.store.events``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, insert, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mrledger.ledger import ResultRecord, canonicalize
from mrledger.store.buffer import BufferedRows
from mrledger.store.bulk import IN_CHUNK, DriverInsert, delete_in_chunks
from mrledger.store.decision_write import DECISION_FIELDS, RECORD, VERIFICATION, decision_alone
from mrledger.store.errors import ConflictError, NotFoundError
from mrledger.store.event_audit import (
    ENCOUNTER_COLUMNS,
    AuditBatch,
    EventAudit,
    Facts,
    decision_facts,
    encounter_facts,
    items_of,
)
from mrledger.store.events import (
    DecisionFacts,
    EncounterFacts,
    ItemRef,
    events_stream,
    join_codes,
    split_codes,
)
from mrledger.store.models import (
    Decision,
    Encounter,
    RecordVersion,
    Verification,
)
from mrledger.store.repository import Accepted, Store, Within


@dataclass(frozen=True, slots=True)
class VerificationRow:
    """What a verification answered: enough to record a decision about it without trusting the client."""

    id: str
    at: datetime
    token_id: int | None
    role: str | None
    hospital_id: str
    result_ref: str
    version: int
    verdict: str
    recognition: str | None
    reasons: tuple[str, ...]
    category: str | None
    items: tuple[ItemRef, ...]


def _items_json(items: Sequence[ItemRef]) -> str:
    return canonicalize([i.to_obj() for i in items]).decode("utf-8")


_DECISIONS = cast(Table, Decision.__table__)
_VERSIONS = cast(Table, RecordVersion.__table__)


# The decision's row, its ``record_version_id`` looked up in the same statement: the ORM's insert after a SELECT
# of the id was a round trip more and a fifth of a decision's CPU in the API (py-spy). Looked up by the record's
# unique key (stream, keyed result id, version 1) and checked against its leaf: ``record_versions`` has no index on
# the leaf, so a lookup by (stream, leaf) read every record of the stream — a stream holds every decision and
# encounter of its hospital, so each decision cost more than the one before it (EXPLAIN, issue 20).
def _decision_insert(own_insert: Any) -> Insert:
    return cast(Insert, own_insert(_DECISIONS).from_select(
        [*DECISION_FIELDS, "record_version_id"],
        select(*(bindparam(n, type_=_DECISIONS.c[n].type) for n in DECISION_FIELDS), RecordVersion.id).where(
            RecordVersion.hospital_id == bindparam("stream", type_=_DECISIONS.c.stream.type),
            RecordVersion.result_hmac == bindparam("result_hmac", type_=_VERSIONS.c.result_hmac.type),
            RecordVersion.version == literal_column("1"),  # literal: the driver's rows carry no bind for it
            RecordVersion.leaf_hash == bindparam("leaf", type_=_VERSIONS.c.leaf_hash.type))))


#: Skipping a verification decided before (by a doctor of another hospital, in another stream): ``add_decision``
#: then refuses, and the record it came with is not committed.
_INSERT_DECISION = DriverInsert(_decision_insert(insert), (*DECISION_FIELDS, "result_hmac", "leaf"),
                                skipping=_decision_insert)

#: A report's encounters in one statement on PostgreSQL (mrledger.store.bulk), up to 1,000 of them.
_INSERT_ENCOUNTERS = DriverInsert.values(cast(Table, Encounter.__table__), tuple(c.name for c in ENCOUNTER_COLUMNS))

#: How long a verification is served from the memory of the process that answered it (``EventIndex._fresh``).
RECENT = timedelta(minutes=10)

#: The verification index's columns, in the order rows are handed to the driver.
_COLUMNS = ("id", "at", "token_id", "role", "hospital_id", "result_ref", "version", "verdict", "recognition",
            "reasons", "category", "items")


def _decision_row(d: DecisionFacts) -> dict[str, object]:
    """A decision's index row but the record's id, by column."""
    return {"verification_id": d.verification_id, "hospital_id": d.hospital_id, "stream": d.stream,
            "token_id": d.token_id, "verified_at": d.verified_at, "decided_at": d.decided_at,
            "result_hospital_id": d.result_hospital_id, "result_ref": d.result_ref,
            "result_version": d.result_version, "verdict": d.verdict, "recognition": d.recognition,
            "rule_reasons": join_codes(d.rule_reasons), "category": d.category, "items": _items_json(d.items),
            "currency": d.currency, "decision": d.decision, "reason": d.reason, "detail": d.detail}


def _verification_row(v: VerificationRow) -> dict[str, object]:
    return {"id": v.id, "at": v.at, "token_id": v.token_id, "role": v.role, "hospital_id": v.hospital_id,
            "result_ref": v.result_ref, "version": v.version, "verdict": v.verdict, "recognition": v.recognition,
            "reasons": join_codes(v.reasons), "category": v.category, "items": _items_json(v.items)}


class EventIndex(BufferedRows, EventAudit):
    """The tables of decisions, encounters and the verifications they refer to. Thread-safe."""

    def __init__(self, store: Store, recent: int = 20_000) -> None:
        self._store = store
        # Skipping existing rows: a decision writes the verification it names in its own transaction
        # (``add_decision``), and this buffer may write the same row before or after it.
        super().__init__(store.unit_of_work, cast(Table, Verification.__table__), _COLUMNS, "verifications",
                         skip_existing=True)
        #: This process's latest verifications by id (oldest evicted first): a doctor decides seconds after
        #: verifying, and the decision then needs no read — and no write of the buffer — before its own
        #: transaction.
        self._recent: OrderedDict[str, VerificationRow] = OrderedDict()
        self._recent_max = recent
        self._recent_lock = threading.Lock()
        #: Verifications a decision's transaction is writing or wrote (``indexing``), which the buffer's next write
        #: leaves out: written twice, the buffer's transaction waited on the decision's uncommitted row, or the
        #: decision on the buffer's (lock waits sampled under load, docs/scaling.md). Emptied by every write, so it
        #: holds one interval's decisions at most; ``release`` puts back the row of a decision that failed.
        self._claimed: set[str] = set()
        #: A decision in one statement (``write_new``), with and without its verification: PostgreSQL only.
        self._one_statement = store.engine.dialect.name == "postgresql"
        self._alone = {False: decision_alone(None), True: decision_alone(_COLUMNS)}

    # -- verifications --------------------------------------------------------------------------------

    def remember(self, v: VerificationRow) -> None:
        with self._recent_lock:
            self._recent[v.id] = v
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)
        self._buffer.put(_verification_row(v))

    def verification(self, verification_id: str) -> VerificationRow | None:
        """The verification ``verification_id`` names: one of this process's latest ones from memory (written by
        its buffer or not yet), else from the database. Not found there while buffering: looked for once more
        after two write intervals, because the verification may have been answered by another API process of
        the node (``MRL_API_PROCESSES``) or another node of the region, whose buffer writes it within its
        interval — a doctor deciding at once through another process must not be told the verification does
        not exist. Only an unknown id waits (a token holder's mistake)."""
        found = self._fresh(verification_id)
        if found is not None:
            return found
        self.flush()  # one of this process's, older or answered under another clock: written before it is read
        found = self._verification(verification_id)
        wait = self._buffer.interval
        if found is None and wait is not None:
            time.sleep(2 * wait)
            found = self._verification(verification_id)
        return found

    def _write_rows(self, rows: list[dict[str, object]]) -> None:
        with self._recent_lock:
            claimed, self._claimed = self._claimed, set()
        todo = [row for row in rows if row["id"] not in claimed] if claimed else rows
        if todo:
            super()._write_rows(todo)

    def release(self, verification_id: str) -> None:
        """After a decision whose transaction failed: the verification it claimed from the buffer (``indexing``)
        is queued again, since a write since the claim may have left it out. Queued twice, it is skipped."""
        found = self._fresh(verification_id)
        if found is not None:
            with self._recent_lock:
                self._claimed.discard(verification_id)
            self._buffer.put(_verification_row(found))

    def _claim(self, verification_id: str) -> VerificationRow | None:
        """The verification a decision's write is about to commit, if this process answered it lately: the buffer
        then leaves it to that write (``_write_rows``), whose caller calls ``release`` if it fails."""
        fresh = self._fresh(verification_id)
        if fresh is not None and self._buffer.interval is not None:
            with self._recent_lock:
                self._claimed.add(fresh.id)
        return fresh

    def _fresh(self, verification_id: str) -> VerificationRow | None:
        """One of this process's latest verifications, if it was answered less than ``RECENT`` ago: far inside
        the shortest retention (a day), so what memory returns the retention job cannot have deleted."""
        found = self._recent.get(verification_id)
        if found is None or found.at < datetime.now(UTC) - RECENT:
            return None
        return found

    def _verification(self, verification_id: str) -> VerificationRow | None:
        with self._store.read() as s:
            v = s.get(Verification, verification_id)
            if v is None:
                return None
            return VerificationRow(v.id, v.at, v.token_id, v.role, v.hospital_id, v.result_ref, v.version, v.verdict,
                                   v.recognition, split_codes(v.reasons), v.category, items_of(v.items))

    # -- the index --------------------------------------------------------------------------------------

    def decision(self, verification_id: str) -> DecisionFacts | None:
        with self._store.read() as s:
            d = s.get(Decision, verification_id)
            return None if d is None else decision_facts(d)

    def encounters(self, hospital_id: str, encounter_refs: Iterable[str]) -> dict[str, EncounterFacts]:
        ids = sorted(set(encounter_refs))
        found: dict[str, EncounterFacts] = {}
        with self._store.read() as s:
            for i in range(0, len(ids), 500):
                q = select(Encounter).where(Encounter.hospital_id == hospital_id,
                                            Encounter.encounter_ref.in_(ids[i:i + 500]))
                found.update((e.encounter_ref, encounter_facts(e)) for e in s.scalars(q))
        return found

    def write_new(self, d: DecisionFacts, record: ResultRecord) -> Accepted | None:
        """Commit ``d`` as a new decision in one statement (store/decision_write.py) — its record ``record``, the
        record's pending leaf, its index row and the verification it names if this process answered it lately —
        and return the record's acceptance; or write nothing and return None, for ``Store.submit`` with
        ``indexing`` to decide: on SQLite, when the record's key is held, or when a constraint refused the
        statement. The caller calls ``release`` if it raises."""
        if not self._one_statement:
            return None
        row, leaf = self._store.first_version(d.stream, record)
        values = {**{RECORD + k: v for k, v in row.items()}, **_decision_row(d)}
        fresh = self._claim(d.verification_id)
        if fresh is not None:
            values.update({VERIFICATION + k: v for k, v in _verification_row(fresh).items()})
        statement = self._alone[fresh is not None]
        try:
            written = self._store.write_alone(*statement.bound(self._store.engine.dialect, values))
        except IntegrityError:
            written = []
        if not written:  # nothing written: the verification goes back to the buffer, unless the fallback claims it
            self.release(d.verification_id)
            return None
        return Accepted(d.stream, record.result_id, record.version, leaf, "accepted")

    def index_decision(self, d: DecisionFacts, leaf_hash: bytes) -> None:
        """Index, in a transaction of its own, a decision whose record ``Store.submit`` accepted with
        ``leaf_hash`` (idempotent): for a record committed by a request that died before indexing it."""
        with self._store.unit_of_work() as s:
            if s.get(Decision, d.verification_id) is None:
                self.add_decision(s, d, leaf_hash)

    def indexing(self, d: DecisionFacts) -> Within:
        """What ``Store.submit`` runs in the transaction committing ``d``'s record (its ``within``): the index row,
        and the verification it names if this process remembered it lately (it may not be written yet). The
        caller calls ``release`` if that transaction fails."""
        def within(s: Session, accepted: list[Accepted]) -> None:
            if accepted[0].status == "accepted":
                self.add_decision(s, d, accepted[0].leaf_hash, self._claim(d.verification_id))
        return within

    def add_decision(self, s: Session, d: DecisionFacts, leaf_hash: bytes, verification: VerificationRow | None = None
                     ) -> None:
        """Index decision ``d`` in ``s``, the transaction that commits its record (``Store.submit``'s ``within``),
        writing first the ``verification`` it names when given (the row this process may not have written yet:
        the index row refers to it; written again by the buffer, it is skipped). The decision must be new: its
        record, keyed by the verification, was accepted in ``s``. One statement, its record's id found in SQL by
        the leaf (``_INSERT_DECISION``)."""
        conn = s.connection()
        if verification is not None:
            self._insert.run_values(conn, [_verification_row(verification)])
        row = {**_decision_row(d), "result_hmac": self._store.keys.index(d.stream, d.result_key), "leaf": leaf_hash}
        if _INSERT_DECISION.run_values(conn, [row]) != 1:
            if s.get(Decision, d.verification_id) is not None:
                # An anonymous verification any doctor may decide, decided first for another hospital: its
                # record (in this doctor's stream) is rolled back with this transaction, and the caller answers
                # from the decision that stands.
                raise ConflictError(f"verification {d.verification_id} is decided in another stream",
                                    [(d.stream, d.result_key, 1)])
            raise NotFoundError(f"stream {d.stream!r} holds no record with leaf {leaf_hash.hex()}")

    def index_encounters(self, encounters: Sequence[tuple[EncounterFacts, bytes]]) -> None:
        """Index encounters whose records ``Store.submit`` accepted, each with its leaf hash (idempotent:
        known ones are skipped)."""
        if not encounters:
            return
        try:
            self._index_encounters(encounters)
        except IntegrityError:  # a concurrent request indexed some of them first: the rest now
            self._index_encounters(encounters)

    def _index_encounters(self, encounters: Sequence[tuple[EncounterFacts, bytes]]) -> None:
        hospital_id = encounters[0][0].hospital_id
        known = self.encounters(hospital_id, [e.encounter_ref for e, _ in encounters])
        todo = [(e, leaf) for e, leaf in encounters if e.encounter_ref not in known]
        if not todo:
            return
        stream = events_stream(hospital_id)
        with self._store.unit_of_work() as s:
            ids = self._record_versions(s, stream, [(e.result_key, leaf) for e, leaf in todo])
            _INSERT_ENCOUNTERS.run_values(s.connection(), [
                {"hospital_id": e.hospital_id, "encounter_ref": e.encounter_ref, "stream": stream,
                 "record_version_id": ids[leaf], "seen_at": e.seen_at, "patient_hash": e.patient_hash,
                 "retrieved": e.retrieved, "categories": join_codes(e.categories)} for e, leaf in todo])

    def _record_versions(self, s: Session, stream: str, records: Sequence[tuple[str, bytes]]) -> dict[bytes, int]:
        """Record version ids by leaf hash of version 1 of ``records`` (result id, leaf) in ``stream``: looked up by
        their keyed result ids (the unique key's index; ``_decision_insert`` says why not by leaf) and matched by
        leaf. A record not found so (its keyed id made under a key rotated since) is looked up by its leaf: the
        leaf and the row id never change."""
        found: dict[bytes, int] = {}

        def look_up(column: Any, values: Sequence[bytes], *where: Any) -> None:
            for i in range(0, len(values), IN_CHUNK):
                q = select(RecordVersion.leaf_hash, RecordVersion.id).where(
                    RecordVersion.hospital_id == stream, column.in_(values[i:i + IN_CHUNK]), *where)
                found.update((bytes(leaf), int(rv)) for leaf, rv in s.execute(q))

        keys = self._store.keys
        look_up(RecordVersion.result_hmac, sorted({keys.index(stream, rid) for rid, _ in records}),
                RecordVersion.version == 1)
        look_up(RecordVersion.leaf_hash, [leaf for _, leaf in records if leaf not in found])
        missing = [leaf for _, leaf in records if leaf not in found]
        if missing:
            raise NotFoundError(f"stream {stream!r} holds no record with leaf {missing[0].hex()}")
        return found

    def prune(self, before: datetime, chunk: int = 10_000) -> int:
        """Delete the verifications older than ``before`` that no decision names, ``chunk`` rows per transaction
        (a long delete would hold SQLite's writer lock against submissions); the number deleted. A decision then
        naming one gets the 404 of an unknown verification, as it would after a crash lost it: verify again."""
        self.flush()
        return delete_in_chunks(self._store.unit_of_work, select(Verification.id).outerjoin(
            Decision, Decision.verification_id == Verification.id).where(
            Verification.at < before, Decision.verification_id.is_(None)), Verification.id, chunk)


__all__ = ["AuditBatch", "EventIndex", "Facts", "VerificationRow"]
