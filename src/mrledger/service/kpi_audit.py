"""The audit check of the KPIs: do the KPI tables say exactly what the anchored event streams hold?

The KPIs are counted from index rows (``decisions``, ``encounters``); the tamper evidence is in the event
streams' records, batches and anchors. This check ties the two together, per stream:

1. every batch's leaves give its stored root, with the stored size (``root-mismatch``: a leaf edited, added,
   dropped or moved), and, when this node has a chain, the registry holds that root and size for the stream
   (``chain-mismatch`` / ``not-on-chain``: the database's batch itself rewritten);
2. every index row's record, read through the store's public API (``Store.opened_versions``: whatever the store
   keeps it as, decrypted for the whole stream in one statement), hashes to its leaf (``leaf-mismatch``: the
   stored record edited); that the leaf is in its batch's root is step 1;
3. every index row rebuilds (``mrledger.store.events``) to a record whose leaf, under the stored salt, is that leaf
   (``altered``: a KPI row edited after the fact — the fields that differ are named);
4. every record of the stream has its index row (``unindexed``: dropped from the KPIs) and every index row a
   record of its stream (``not-in-stream``: added to the KPIs).

So an auditor holding only the chain can prove that no decision or encounter was added, changed or dropped
after it was anchored. Records not yet in a confirmed batch are checked against the database only and
counted as ``unanchored``. Costs two hashes and one decryption per record and one registry read per batch: for
audits, not polling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from mrledger.ledger import MerkleTree, ResultRecord, commit
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.status import CONFIRMED, INCLUDED
from mrledger.service.ledger import Services
from mrledger.service.verification import ChainUnavailableError
from mrledger.store.decisions import StoredLeaf
from mrledger.store.events import DecisionFacts, EncounterFacts, events_stream
from mrledger.store.kpi_rollup import KpiRollup
from mrledger.store.results import OpenedVersion


class _StreamBatch(NamedTuple):
    """An event stream's batch as the registry knows it (the stream id is its "hospital" there)."""

    hospital_id: str
    seq: int
    root: bytes
    size: int


def _problem(kind: str, stream: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "stream": stream, "detail": detail, **extra}


def _fields(rebuilt: ResultRecord, stored: ResultRecord) -> list[str]:
    """Which committed fields differ between the record rebuilt from a KPI row and the stored one."""
    mine, theirs = rebuilt.to_obj(), stored.to_obj()
    out = [k for k in sorted(set(mine) | set(theirs)) if k != "content" and mine.get(k) != theirs.get(k)]
    a, b = mine["content"].get("data", {}), theirs["content"].get("data", {})
    out += [f"data.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out or ["content"]


def _check_row(ledger: Services, stream: str, facts: DecisionFacts | EncounterFacts, placed: StoredLeaf | None,
               opened: dict[bytes, OpenedVersion], problems: list[dict[str, Any]]) -> None:
    """Step 3 for one KPI row: its record (``opened``: the stream's records as the store decrypts them) must be
    the one the row points at, must hash to its leaf, and must be exactly what the row rebuilds. That the leaf
    is in its batch's root is step 1's (the batch's leaves give its root), not repeated per record."""
    ident = ({"verification_id": facts.verification_id} if isinstance(facts, DecisionFacts)
             else {"encounter_ref": facts.encounter_ref, "hospital_id": facts.hospital_id})
    if placed is None:
        problems.append(_problem("not-in-stream", stream, "a KPI row points at no record of this stream", **ident))
        return
    where = {"result_id": facts.result_key, "seq": placed.seq, **ident}
    try:
        rebuilt = facts.record()
    except MrLedgerError:
        problems.append(_problem("altered", stream, "the KPI row no longer makes a valid record", fields=["record"],
                                 **where))
        return
    stored = opened.get(ledger.store.result_key(stream, facts.result_key))
    if stored is None:
        problems.append(_problem("altered", stream, "no record of this stream has the KPI row's identity",
                                 fields=["result_id"], **where))
        return
    if placed.seq is None:  # not sealed yet: nothing anchored to compare with, the database's record is all there is
        if rebuilt.hospital_id != stream or rebuilt.canonical_bytes() != stored.record.canonical_bytes():
            problems.append(_problem("altered", stream, "the KPI row differs from the committed (unsealed) record",
                                     fields=_fields(rebuilt, stored.record), **where))
        return
    if stored.record_version_id != placed.record_version_id:
        problems.append(_problem("altered", stream, "the KPI row points at another record than its identity names",
                                 fields=["record_version_id"], **where))
        return
    if commit(stored.record, stored.salt) != stored.leaf_hash:
        problems.append(_problem("leaf-mismatch", stream, "the stored record does not hash to its stored leaf",
                                 **where))
    if rebuilt.hospital_id != stream or commit(rebuilt, stored.salt) != stored.leaf_hash:
        problems.append(_problem("altered", stream, "the KPI row differs from the anchored record",
                                 fields=_fields(rebuilt, stored.record), **where))


def audit_stream(ledger: Services, stream: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check one event stream; (summary, problems)."""
    index = ledger.events
    leaves = index.stream_leaves(stream)
    roots = index.batch_roots(stream)
    decisions, encounters = index.indexed(stream)
    problems: list[dict[str, Any]] = []
    chain_checked = _batches(ledger, stream, leaves, roots, problems)
    by_id = {r.record_version_id: r for r in leaves}
    rows: list[tuple[int, DecisionFacts | EncounterFacts]] = [*decisions.items(), *encounters.items()]
    opened = ledger.store.opened_versions(stream) if rows else {}
    for rv_id, facts in rows:
        _check_row(ledger, stream, facts, by_id.get(rv_id), opened, problems)
    indexed = {rv_id for rv_id, _ in rows}
    for r in leaves:
        if r.record_version_id not in indexed:
            problems.append(_problem("unindexed", stream, "a committed record is missing from the KPI tables",
                                     leaf_hash=r.leaf_hash.hex(), seq=r.seq))
    problems += [_problem("rollup-mismatch", stream, detail, seq=seq)
                 for seq, detail in KpiRollup(ledger.store).check(stream)]
    confirmed = {seq for seq, (_, _, status) in roots.items() if status == CONFIRMED}
    summary = {"stream": stream, "records": len(leaves), "decisions": len(decisions),
               "encounters": len(encounters), "batches": len(roots), "confirmed_batches": len(confirmed),
               "unanchored_records": sum(r.seq not in confirmed for r in leaves), "chain_checked": chain_checked}
    return summary, problems


def _batches(ledger: Services, stream: str, records: Sequence[StoredLeaf],
             roots: dict[int, tuple[bytes, int, str | None]], problems: list[dict[str, Any]]) -> bool:
    """Step 1: leaves → stored roots, stored roots → the registry. Whether the chain was asked."""
    leaves: dict[int, list[tuple[int, bytes]]] = {}
    for r in records:
        if r.seq is not None and r.leaf_index is not None:
            leaves.setdefault(r.seq, []).append((r.leaf_index, r.leaf_hash))
    for seq, (root, size, _) in sorted(roots.items()):
        mine = sorted(leaves.get(seq, []))
        if [i for i, _ in mine] != list(range(size)) or MerkleTree([h for _, h in mine]).root != root:
            problems.append(_problem("root-mismatch", stream, f"the leaves of batch {seq} do not give its stored "
                                                              "root and size", seq=seq))
    chain = ledger.chain
    if chain is None:
        return False
    for seq, (root, size, status) in sorted(roots.items()):
        if status not in (INCLUDED, CONFIRMED):
            continue
        try:
            # Against the registry its anchor names (a v1 predecessor after an upgrade), with the map root a v2
            # word binds, looked for first in the block the outbox recorded.
            state = ledger.outbox.state(stream, seq)
            holding = chain.holds(_StreamBatch(stream, seq, root, size), state.contract if state else None,
                                  ledger.store.map_root(stream, seq), state.block_number if state else None)
        except Exception as exc:  # no verdict without the chain: the caller gets a 503 and asks again
            raise ChainUnavailableError(f"cannot read the registry: {type(exc).__name__}: {exc}") from exc
        on_chain = holding.entry
        if on_chain is None:
            problems.append(_problem("not-on-chain", stream, f"batch {seq} is {status} here but not in the "
                                                             "registry", seq=seq))
        elif not holding.holds:
            problems.append(_problem("chain-mismatch", stream, f"the registry holds {holding.what} for batch {seq}, "
                                                               f"the database root {root.hex()} size {size}",
                                     seq=seq))
    return True


def audit(ledger: Services, hospital_id: str | None = None) -> dict[str, Any]:
    """Every event stream (or one hospital's): summaries and problems; ``ok`` when there is none."""
    streams = [events_stream(hospital_id)] if hospital_id is not None else ledger.events.streams()
    known = set(ledger.events.streams())
    summaries, problems = [], []
    for stream in streams:
        if stream not in known:
            continue
        summary, found = audit_stream(ledger, stream)
        summaries.append(summary)
        problems += found
    return {"ok": not problems, "streams": summaries, "problems": problems,
            "checked_records": sum(s["records"] for s in summaries)}


__all__ = ["audit", "audit_stream"]
