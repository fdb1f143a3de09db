"""The audit check of the KPIs: do the KPI tables say exactly what the anchored event streams hold?

The KPIs are counted from index rows (``decisions``, ``encounters``); the tamper evidence is in the event
streams' records, batches and anchors. This check ties the two together, per stream:

1. every batch's leaves give its stored root, with the stored size (``root-mismatch``: a leaf edited, added,
   dropped or moved), and, when this node has a chain, the registry holds that root and size for the stream
   (``chain-mismatch`` / ``not-on-chain``: the database's batch itself rewritten; service/kpi_audit_chain.py);
2. every index row's record, as the store decrypts it, hashes to its leaf (``leaf-mismatch``: the stored record
   edited, or a row that no longer decrypts); that the leaf is in its batch's root is step 1;
3. every index row rebuilds (``mrledger.store.events``) to exactly that record (``altered``: a KPI row edited
   after the fact — the fields that differ are named);
4. every record of the stream has its index row (``unindexed``: dropped from the KPIs) and every index row a
   record of its stream (``not-in-stream``: added to the KPIs);
5. every counted batch's rollup rows are the counts of its index rows now (``rollup-mismatch``), summed from the
   rows read for step 3 (only a batch counted after those reads is read again).

So an auditor holding only the chain can prove that no decision or encounter was added, changed or dropped
after it was anchored. Records not yet in a confirmed batch are checked against the database only and
counted as ``unanchored``.

**At city size** (issue 20: millions of records) the check reads a stream a range of whole batches at a time
(``CHUNK_RECORDS`` records: leaves, records, index rows and the registry's entries for them, each range in its
own short transactions), so its memory does not grow with the ledger, and a caller learns its progress after
each range (``DecisionAudit.progress``). Per record it costs two decryptions, one serialisation of the
rebuilt record compared byte for byte with the stored one, and one leaf hash over the stored bytes: a record is
parsed and validated only when it differs (profiled: parsing both sides was half the time). ``audit`` runs it
synchronously for ``GET /v1/audit/decisions`` and refuses ledgers over ``MAX_SYNC_RECORDS``; larger ones are
audited by a job (service/audit_jobs.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mrledger.ledger import MerkleTree, ResultRecord, commit
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.leaf import commit_canonical
from mrledger.ledger.status import CONFIRMED
from mrledger.service.kpi_audit_chain import chain_problems
from mrledger.service.kpi_audit_chain import problem as _problem
from mrledger.service.ledger import Services
from mrledger.store.decisions import AuditBatch, Facts
from mrledger.store.events import DecisionFacts, events_stream, is_event_stream
from mrledger.store.kpi_rollup import BatchSums, KpiRollup, batch_sums
from mrledger.store.results import OpenedLeaf

#: Records held in memory at once: a range of whole batches (a larger batch alone).
CHUNK_RECORDS = 5_000
#: Largest ledger (records in the event streams audited) ``GET /v1/audit/decisions`` checks in one request.
MAX_SYNC_RECORDS = 50_000
#: Batch heads read per statement when ranging over a stream.
_BATCH_PAGE = 512


class AuditTooLargeError(MrLedgerError):
    """More records than one request may check: audit them with a job (``POST /v1/audit/decisions/jobs``)."""

    def __init__(self, records: int, limit: int) -> None:
        super().__init__(f"{records} records to check; one request checks at most {limit}")
        self.records, self.limit = records, limit


class Findings:
    """The problems found: all of them counted (by kind), the first ``keep`` of them kept (None: all), so a
    ledger with a million problems cannot exhaust memory."""

    def __init__(self, keep: int | None = None) -> None:
        self.keep, self.kept, self.count, self.by_kind = keep, list[dict[str, Any]](), 0, Counter[str]()

    def add(self, problem: dict[str, Any]) -> None:
        self.count += 1
        self.by_kind[problem["kind"]] += 1
        if self.keep is None or len(self.kept) < self.keep:
            self.kept.append(problem)

    def merge(self, kept: Sequence[dict[str, Any]], count: int, by_kind: dict[str, int]) -> None:
        """Add what another ``Findings`` found (an audit process's part): all of it counted, its kept problems
        kept while there is room."""
        self.count += count
        self.by_kind.update(by_kind)
        room = len(kept) if self.keep is None else max(0, self.keep - len(self.kept))
        self.kept.extend(kept[:room])


def _fields(rebuilt: ResultRecord, stored: ResultRecord) -> list[str]:
    """Which committed fields differ between the record rebuilt from a KPI row and the stored one."""
    mine, theirs = rebuilt.to_obj(), stored.to_obj()
    out = [k for k in sorted(set(mine) | set(theirs)) if k != "content" and mine.get(k) != theirs.get(k)]
    a, b = mine["content"].get("data", {}), theirs["content"].get("data", {})
    out += [f"data.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out or ["content"]


def _plain_json(obj: dict[str, Any]) -> bytes:
    """``obj`` as JSON with sorted keys and no whitespace, by the C encoder. For what event records hold (ASCII
    keys, strings, integers, booleans) these are its RFC 8785 bytes; equal to the stored canonical bytes, they
    prove the row rebuilds exactly the stored record (both parse to one JSON value). Anything else only compares
    unequal and takes the slow path, which canonicalises and validates properly. Profiled: ``canonicalize`` was a
    third of the per-record time (its NFC and number checks, in Python)."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return b""


def _check_row(stream: str, facts: Facts, leaf: OpenedLeaf | None, found: Findings) -> None:
    """Steps 2 and 3 for one KPI row and the record it points at (``leaf``)."""
    ident = ({"verification_id": facts.verification_id} if isinstance(facts, DecisionFacts)
             else {"encounter_ref": facts.encounter_ref, "hospital_id": facts.hospital_id})
    if leaf is None:
        found.add(_problem("not-in-stream", stream, "a KPI row points at no record of this stream", **ident))
        return
    where = {"result_id": facts.result_key, "seq": leaf.seq, **ident}
    if leaf.canonical is None or leaf.salt is None:
        found.add(_problem("leaf-mismatch", stream, "the stored record does not decrypt under its row's identity "
                                                    "(its ciphertext, salt or leaf was edited)", **where))
        return
    mine = _plain_json(facts.record_obj())
    if mine != leaf.canonical:  # the rare case: parse both, let the record's own rules decide, name the fields
        try:
            rebuilt = ResultRecord.from_obj(facts.record_obj())
        except MrLedgerError:
            found.add(_problem("altered", stream, "the KPI row no longer makes a valid record", fields=["record"],
                               **where))
            return
        if rebuilt.hospital_id != stream or rebuilt.canonical_bytes() != leaf.canonical:
            _differs(stream, rebuilt, leaf, where, found)
            return
    if leaf.seq is not None and commit_canonical(stream, facts.result_key, leaf.version, leaf.canonical,
                                                 leaf.salt) != leaf.leaf_hash:
        found.add(_problem("leaf-mismatch", stream, "the stored record does not hash to its stored leaf", **where))


def _differs(stream: str, rebuilt: ResultRecord, leaf: OpenedLeaf, where: dict[str, Any], found: Findings) -> None:
    assert leaf.canonical is not None and leaf.salt is not None
    stored = ResultRecord.from_json(leaf.canonical)
    if rebuilt.result_id != stored.result_id:
        found.add(_problem("altered", stream, "the KPI row points at another record than its identity names",
                           fields=["record_version_id"], **where))
        return
    if leaf.seq is None:  # not sealed yet: nothing anchored to compare with, the database's record is all there is
        found.add(_problem("altered", stream, "the KPI row differs from the committed (unsealed) record",
                           fields=_fields(rebuilt, stored), **where))
        return
    if commit(stored, leaf.salt) != leaf.leaf_hash:
        found.add(_problem("leaf-mismatch", stream, "the stored record does not hash to its stored leaf", **where))
    found.add(_problem("altered", stream, "the KPI row differs from the anchored record",
                       fields=_fields(rebuilt, stored), **where))


def _check_records(stream: str, leaves: Sequence[OpenedLeaf], rows: Sequence[tuple[int, Facts]],
                   found: Findings) -> None:
    """Steps 2-4 for a piece of a stream: its records and the index rows pointing at them."""
    by_id = {r.record_version_id: r for r in leaves}
    indexed = set()
    for rv_id, facts in rows:
        indexed.add(rv_id)
        _check_row(stream, facts, by_id.get(rv_id), found)
    for r in leaves:
        if r.record_version_id not in indexed:
            found.add(_problem("unindexed", stream, "a committed record is missing from the KPI tables",
                               leaf_hash=r.leaf_hash.hex(), seq=r.seq))


def _batch_sums(batches: Sequence[AuditBatch], leaves: Sequence[OpenedLeaf],
                rows: Sequence[tuple[int, Facts]]) -> dict[int, BatchSums]:
    """Each batch's rollup from its index rows (``rows``: of the records ``leaves`` places in ``batches``), as
    ``KpiRollup.check`` would read them again."""
    seq_of = {leaf.record_version_id: leaf.seq for leaf in leaves}
    facts: dict[int, list[Facts]] = {b.seq: [] for b in batches}
    for rvid, f in rows:
        seq = seq_of.get(rvid)
        if seq in facts:
            facts[seq].append(f)
    return {seq: batch_sums(fs) for seq, fs in facts.items()}


def _check_roots(stream: str, batches: Sequence[AuditBatch], leaves: Sequence[OpenedLeaf], found: Findings) -> None:
    """Step 1 in the database: each batch's leaves (in order) give its stored root and size."""
    by_seq: dict[int, list[tuple[int, bytes]]] = {}
    for r in leaves:
        if r.seq is not None and r.leaf_index is not None:
            by_seq.setdefault(r.seq, []).append((r.leaf_index, r.leaf_hash))
    for b in batches:
        mine = by_seq.get(b.seq, [])
        if [i for i, _ in mine] != list(range(b.size)) or MerkleTree([h for _, h in mine]).root != b.root:
            found.add(_problem("root-mismatch", stream, f"the leaves of batch {b.seq} do not give its stored root "
                                                        "and size", seq=b.seq))


class DecisionAudit:
    """One run of the check over some streams, a bounded piece at a time. ``progress`` is called after every
    piece (and every stream) with this object, whose counters say how far it got."""

    def __init__(self, ledger: Services, *, chunk: int = CHUNK_RECORDS, keep: int | None = None,
                 progress: Callable[[DecisionAudit], None] = lambda _: None) -> None:
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.ledger, self.chunk, self.progress = ledger, chunk, progress
        self.found = Findings(keep)
        self.streams: list[dict[str, Any]] = []
        self.records_checked = self.batches_checked = 0

    def run(self, streams: Sequence[str]) -> None:
        for stream in streams:
            self.streams.append(self.stream(stream))
            self.progress(self)

    def part(self, stream: str) -> dict[str, Any]:
        """One stream checked, as a part another run can ``absorb``: what an audit process sends back (plain
        data: it crosses a pipe)."""
        summary = self.stream(stream)
        return {"summary": summary, "kept": self.found.kept, "count": self.found.count,
                "by_kind": dict(self.found.by_kind), "records": self.records_checked, "batches": self.batches_checked}

    def absorb(self, part: dict[str, Any]) -> None:
        """A stream another process checked (``part``), counted in this run as if checked here."""
        self.streams.append(part["summary"])
        self.found.merge(part["kept"], part["count"], part["by_kind"])
        self.records_checked += part["records"]
        self.batches_checked += part["batches"]
        self.progress(self)

    def stream(self, stream: str) -> dict[str, Any]:
        """Check one event stream; its summary."""
        index, store, chain = self.ledger.events, self.ledger.store, self.ledger.chain
        s = {"stream": stream, "records": 0, "decisions": 0, "encounters": 0, "batches": 0, "confirmed_batches": 0,
             "unanchored_records": 0, "chain_checked": chain is not None}
        after = -1
        sums: dict[int, BatchSums] = {}  # each batch's rollup as its rows read here say: for the rollup check
        while page := index.audit_batches(stream, after, _BATCH_PAGE):
            take: list[AuditBatch] = []
            size = 0
            for b in page:  # whole batches up to ``chunk`` records
                if take and size + b.size > self.chunk:
                    break
                take.append(b)
                size += b.size
            after = take[-1].seq
            leaves = store.opened_in_batches(stream, take[0].seq, take[-1].seq)
            rows = index.indexed_in_batches(stream, take[0].seq, take[-1].seq)
            _check_roots(stream, take, leaves, self.found)
            if chain is not None:
                for p in chain_problems(chain, stream, take):
                    self.found.add(p)
            _check_records(stream, leaves, rows, self.found)
            sums.update(_batch_sums(take, leaves, rows))
            confirmed = {b.seq for b in take if b.status == CONFIRMED}
            self._count(s, leaves, rows, batches=len(take), confirmed=len(confirmed),
                        unanchored=sum(r.seq not in confirmed for r in leaves))
        last_id = 0
        while leaves := store.opened_pending(stream, last_id, self.chunk):
            last_id = leaves[-1].record_version_id
            rows = index.indexed_pending(stream, [leaf.record_version_id for leaf in leaves])
            _check_records(stream, leaves, rows, self.found)
            self._count(s, leaves, rows, batches=0, confirmed=0, unanchored=len(leaves))
        strays = index.strays(stream)
        for facts in strays:
            _check_row(stream, facts, None, self.found)
        self._count(s, [], [(0, f) for f in strays], batches=0, confirmed=0, unanchored=0)
        for seq, detail in KpiRollup(store).check(stream, sums):
            self.found.add(_problem("rollup-mismatch", stream, detail, seq=seq))
        return s

    def _count(self, s: dict[str, Any], leaves: Sequence[OpenedLeaf], rows: Sequence[tuple[int, Facts]], *,
               batches: int, confirmed: int, unanchored: int) -> None:
        decisions = sum(isinstance(f, DecisionFacts) for _, f in rows)
        s["records"] += len(leaves)
        s["decisions"] += decisions
        s["encounters"] += len(rows) - decisions
        s["batches"] += batches
        s["confirmed_batches"] += confirmed
        s["unanchored_records"] += unanchored
        self.records_checked += len(leaves)
        self.batches_checked += batches
        self.progress(self)

    def result(self) -> dict[str, Any]:
        """The answer of ``GET /v1/audit/decisions``: ``ok`` when no problem was found."""
        return {"ok": self.found.count == 0, "streams": self.streams, "problems": self.found.kept,
                "checked_records": sum(s["records"] for s in self.streams)}


def streams_of(ledger: Services, hospital_id: str | None = None) -> list[str]:
    """The event streams an audit of every hospital (or of one) checks: those registered here."""
    known = ledger.events.streams()
    return known if hospital_id is None else [s for s in known if s == events_stream(hospital_id)]


def is_hospital(ledger: Services, hospital_id: str) -> bool:
    """Whether an audit may be asked about ``hospital_id``: a hospital registered here, not an event stream."""
    return not is_event_stream(hospital_id) and hospital_id in dict(ledger.store.hospitals())


def records_of(ledger: Services, streams: Sequence[str]) -> int:
    return sum(ledger.events.stream_records(s) for s in streams)


def audit(ledger: Services, hospital_id: str | None = None, *, limit: int | None = None) -> dict[str, Any]:
    """Every event stream (or one hospital's) in one call: summaries and problems; ``ok`` when there is none.
    AuditTooLargeError beyond ``limit`` records (default ``MAX_SYNC_RECORDS``): a request would run for minutes."""
    limit = MAX_SYNC_RECORDS if limit is None else limit
    streams = streams_of(ledger, hospital_id)
    total = records_of(ledger, streams)
    if total > limit:
        raise AuditTooLargeError(total, limit)
    run = DecisionAudit(ledger)
    run.run(streams)
    return run.result()


__all__ = ["CHUNK_RECORDS", "MAX_SYNC_RECORDS", "AuditTooLargeError", "DecisionAudit", "Findings", "audit",
           "is_hospital", "records_of", "streams_of"]
