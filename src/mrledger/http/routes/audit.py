"""Auditors: lineage, batches in seq order with gaps, database-vs-chain consistency, access log.

Roles ``auditor`` and ``admin`` only. Every audit read — including one that fails — writes an
access-log entry (action ``audit-…``): who looked at a hospital's ledger is itself audit evidence.
The database is never trusted to check itself: ``/consistency`` reads the registry contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import MEDIA_TYPE, Problem
from mrledger.http.routes.results import ResultPath
from mrledger.ledger.records import HOSPITAL_ID_PATTERN
from mrledger.ledger.status import CONFIRMED, INCLUDED, SEALED, BatchStatus
from mrledger.service.audit import chain_consistency
from mrledger.service.ledger import Services
from mrledger.store import UnknownHospitalError
from mrledger.store.access import Principal
from mrledger.store.anchor_rows import AnchorState

router = APIRouter(prefix="/v1", tags=["audit"])

ROLES = ("auditor", "admin")
#: Largest page of ``/batches`` and ``/access-log``: each batch on a page costs one anchor lookup.
MAX_PAGE = 1000

HospitalPath = Annotated[str, Path(pattern=f"^{HOSPITAL_ID_PATTERN}$", description="Hospital id")]

_PROBLEM = {"type": "object", "required": ["type", "title", "status"],
            "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                           "detail": {"type": "string"}, "instance": {"type": "string"}},
            "additionalProperties": True}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {MEDIA_TYPE: {"schema": _PROBLEM}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("No, unknown or revoked bearer token"),
    403: _problem("The token's role is not auditor or admin"),
    422: _problem("A parameter does not match the schema"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem("Unknown hospital or result")}
CHAIN_DOWN: dict[int | str, dict[str, Any]] = {
    503: _problem("No chain configured on this node, or the chain node does not answer")}


# -- response models ------------------------------------------------------------------------------

class AnchorOut(BaseModel):
    status: BatchStatus = Field(description="sealed: no anchoring yet; submitted: transaction sent; included: "
                                             "in a block; confirmed: deep enough to count")
    chain_id: int | None = None
    contract: str | None = None
    tx_hash: str | None = None
    block_number: int | None = None
    block_hash: str | None = None
    confirmed_at: datetime | None = None


class VersionOut(BaseModel):
    version: int
    status: str
    supersedes: int | None
    leaf_hash: str = Field(description="hex SHA-256 leaf hash (RFC 9162 leaf of the salted commitment)")
    accepted_at: datetime
    batch_seq: int | None = Field(description="null while the version waits to be sealed")
    leaf_index: int | None
    anchor: AnchorOut | None = Field(description="null while the version is not in a batch")


class Lineage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "result_id": "R1", "chain_intact": True, "breaks": [],
        "versions": [{"version": 1, "status": "final", "supersedes": None, "leaf_hash": "ab" * 32,
                      "accepted_at": "2024-05-01T08:00:00Z", "batch_seq": 1, "leaf_index": 0,
                      "anchor": {"status": "confirmed", "chain_id": 31337, "contract": "0x5FbD…0aa3",
                                 "tx_hash": "0x…", "block_number": 12, "block_hash": "0x…",
                                 "confirmed_at": "2024-05-01T08:00:07Z"}}]}]})

    hospital_id: str
    result_id: str
    versions: list[VersionOut] = Field(description="in version order")
    chain_intact: bool = Field(description="versions are 1..n, and each later version supersedes an earlier one held")
    breaks: list[str] = Field(description="what is wrong with the chain of versions, for people")


class BatchOut(BaseModel):
    seq: int
    size: int
    root: str = Field(description="hex RFC 9162 root")
    sealed_at: datetime
    anchor_status: BatchStatus


class Gaps(BaseModel):
    missing_seqs: list[int] = Field(description="seqs absent from the database's 1..last sequence (whole hospital)")
    anchoring: list[int] = Field(description="batches on this page not anchored although a later batch on this page "
                                             "is (the registry is gap-free, so the database lost track of them)")


class BatchTotals(BaseModel):
    batches: int = Field(description="batches of the hospital in the database")
    last_seq: int
    on_page: int
    confirmed_on_page: int


class BatchPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "next_after_seq": None,
        "batches": [{"seq": 1, "size": 3, "root": "cd" * 32, "sealed_at": "2024-05-01T08:00:05Z",
                     "anchor_status": "confirmed"}],
        "gaps": {"missing_seqs": [], "anchoring": []},
        "totals": {"batches": 1, "last_seq": 1, "on_page": 1, "confirmed_on_page": 1}}]})

    hospital_id: str
    batches: list[BatchOut]
    gaps: Gaps
    totals: BatchTotals
    next_after_seq: int | None = Field(description="pass as after_seq for the next page; null on the last page")


class MissingOnChain(BaseModel):
    seq: int
    anchor_status: BatchStatus
    alarm: bool = Field(description="true if the database believes it included/confirmed; sealed or submitted "
                                    "batches are simply not anchored yet")


class MissingInDb(BaseModel):
    seq: int
    root: str | None = Field(None, description="v1 registry: the anchored root (a v2 registry stores none)")
    size: int | None = None
    block_number: int
    tx_hash: str
    commitment: str | None = Field(None, description="v2 registry: the anchored commitment word")


class RootMismatch(BaseModel):
    seq: int
    source: Literal["batchOf", "BatchAnchored"]
    db_root: str
    chain_root: str | None = None
    db_size: int
    chain_size: int | None = None
    db_commitment: str | None = Field(None, description="v2 registry: the commitment the database's batch makes")
    chain_commitment: str | None = Field(None, description="v2 registry: the commitment the chain holds")


class Consistency(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "consistent": False, "chain_id": 31337, "contract": "0x5FbD…0aa3",
        "db_batches": 3, "chain_batches": 2, "last_seq_chain": 2, "last_seq_db": 3,
        "missing_on_chain": [{"seq": 3, "anchor_status": "sealed", "alarm": False}], "missing_in_db": [],
        "root_mismatches": [{"seq": 2, "source": "batchOf", "db_root": "00" * 32, "chain_root": "cd" * 32,
                             "db_size": 3, "chain_size": 3}]}]})

    hospital_id: str
    consistent: bool = Field(description="no root mismatch, nothing on chain missing here, no alarming gap, "
                                         "and the chain's lastSeq is not ahead of the database")
    chain_id: int
    contract: str
    db_batches: int
    chain_batches: int = Field(description="BatchAnchored events of this hospital since the deployment block")
    last_seq_chain: int
    last_seq_db: int
    missing_on_chain: list[MissingOnChain]
    missing_in_db: list[MissingInDb]
    root_mismatches: list[RootMismatch]


class AccessEntryOut(BaseModel):
    at: datetime
    role: str | None
    action: str
    hospital_id: str | None
    result_id: str | None
    version: int | None
    verdict: str | None


class AccessLogPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"limit": 100, "offset": 0, "entries": [
        {"at": "2024-05-01T09:00:00Z", "role": "doctor", "action": "verify-record", "hospital_id": "gz-001",
         "result_id": "R1", "version": 1, "verdict": "valid"}]}]})

    entries: list[AccessEntryOut] = Field(description="newest first")
    limit: int
    offset: int


# -- helpers --------------------------------------------------------------------------------------

class _Verdict:
    value = "ok"


@contextmanager
def _audited(ledger: Services, who: Principal, action: str, hospital_id: str | None = None,
             result_id: str | None = None) -> Iterator[_Verdict]:
    """Log the read after it ran, with its verdict — or ``error`` if it failed, since a failed look at a
    hospital's ledger is still a look."""
    verdict = _Verdict()
    try:
        yield verdict
    except Exception:
        ledger.access.log(who, action, ledger.clock(), hospital_id=hospital_id, result_id=result_id, verdict="error")
        raise
    ledger.access.log(who, action, ledger.clock(), hospital_id=hospital_id, result_id=result_id,
                      verdict=verdict.value)


def _require_hospital(ledger: Services, hospital_id: str) -> None:
    if hospital_id not in dict(ledger.store.hospitals()):
        raise UnknownHospitalError(f"unknown hospital {hospital_id!r}")


def _anchor(state: AnchorState | None) -> AnchorOut:
    if state is None:
        return AnchorOut(status=SEALED)
    return AnchorOut(status=state.status,
                     chain_id=state.chain_id, contract=state.contract, tx_hash=state.tx_hash,
                     block_number=state.block_number, block_hash=state.block_hash, confirmed_at=state.confirmed_at)


def _breaks(versions: list[int], supersedes: dict[int, int | None]) -> list[str]:
    found: list[str] = []
    missing = sorted(set(range(1, max(versions) + 1)) - set(versions))
    if missing:
        found.append(f"versions {missing} are missing")
    for v in versions:
        s = supersedes[v]
        if v == 1 and s is not None:
            found.append("version 1 supersedes something")
        elif v > 1 and (s is None or s >= v or s not in supersedes):
            found.append(f"version {v} supersedes {s}, which is not an earlier version held here")
    return found


# -- routes ---------------------------------------------------------------------------------------

@router.get("/audit/hospitals/{hid}/results/{result_id}/lineage", response_model=Lineage,
            summary="Every version of a result with its batch and anchor", responses={**ERRORS, **NOT_FOUND})
def lineage(hid: HospitalPath, result_id: ResultPath, ledger: ServicesDep, principal: PrincipalDep) -> Lineage:
    """Shows an auditor how a result evolved and where each version is committed, and flags a broken
    chain of versions (the store refuses one at submission, so a break means the database was altered)."""
    authorize(principal, *ROLES)
    with _audited(ledger, principal, "audit-lineage", hid, result_id) as verdict:
        infos = ledger.store.versions(hid, result_id)
        out = [VersionOut(version=i.version, status=i.status, supersedes=i.supersedes, leaf_hash=i.leaf_hash.hex(),
                          accepted_at=i.accepted_at, batch_seq=i.batch_seq, leaf_index=i.leaf_index,
                          anchor=None if i.batch_seq is None else _anchor(ledger.outbox.state(hid, i.batch_seq)))
               for i in infos]
        breaks = _breaks([i.version for i in infos], {i.version: i.supersedes for i in infos})
        verdict.value = "broken" if breaks else "intact"
    return Lineage(hospital_id=hid, result_id=result_id, versions=out, chain_intact=not breaks, breaks=breaks)


@router.get("/audit/hospitals/{hid}/batches", response_model=BatchPage, responses={**ERRORS, **NOT_FOUND},
            summary="A hospital's batches in seq order, with sequence and anchoring gaps")
def batches(hid: HospitalPath, ledger: ServicesDep, principal: PrincipalDep,
            after_seq: Annotated[int, Query(ge=0, le=2**63 - 1, description="return batches with seq > this")] = 0,
            limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> BatchPage:
    """Lets an auditor walk a hospital's gap-free sequence page by page and see which batches the
    database thinks are anchored; a missing seq or an anchoring gap means the database lost or hid a batch."""
    authorize(principal, *ROLES)
    with _audited(ledger, principal, "audit-batches", hid) as verdict:
        _require_hospital(ledger, hid)
        heads = ledger.store.batches(hid)
        seqs = {h.seq for h in heads}
        last = max(seqs, default=0)
        missing = sorted(set(range(1, last + 1)) - seqs)
        page = [h for h in heads if h.seq > after_seq][:limit]
        rows = [BatchOut(seq=h.seq, size=h.size, root=h.root.hex(), sealed_at=h.sealed_at,
                         anchor_status=_anchor(ledger.outbox.state(hid, h.seq)).status) for h in page]
        anchored = [r.seq for r in rows if r.anchor_status in (INCLUDED, CONFIRMED)]
        gaps = [r.seq for r in rows if r.anchor_status not in (INCLUDED, CONFIRMED) and anchored
                and r.seq < anchored[-1]]
        verdict.value = "gaps" if missing or gaps else "no-gaps"
    more = bool(page) and page[-1].seq < last
    return BatchPage(hospital_id=hid, batches=rows, gaps=Gaps(missing_seqs=missing, anchoring=gaps),
                     totals=BatchTotals(batches=len(heads), last_seq=last, on_page=len(rows),
                                   confirmed_on_page=sum(r.anchor_status == CONFIRMED for r in rows)),
                     next_after_seq=page[-1].seq if more else None)


@router.get("/audit/hospitals/{hid}/consistency", response_model=Consistency,
            summary="The database against the registry contract, for one hospital",
            responses={**ERRORS, **NOT_FOUND, **CHAIN_DOWN})
def consistency(hid: HospitalPath, ledger: ServicesDep, principal: PrincipalDep) -> Consistency:
    """Compares every database batch with the registry's ``batchOf`` and every ``BatchAnchored`` event of
    the hospital with the database, so neither side can drop or rewrite a batch unnoticed. Costs one
    ``eth_call`` per batch plus one log query: meant for audits, not for polling."""
    authorize(principal, *ROLES)
    with _audited(ledger, principal, "audit-consistency", hid) as verdict:
        found = chain_consistency(ledger.store, ledger.chain, hid)
        verdict.value = "consistent" if found.consistent else "inconsistent"
    return Consistency.model_validate(found.to_obj())


@router.get("/audit/access-log", response_model=AccessLogPage, summary="Who verified or audited what, newest first",
            responses=ERRORS)
def access_log(ledger: ServicesDep, principal: PrincipalDep,
               hospital_id: Annotated[str | None, Query(pattern=f"^{HOSPITAL_ID_PATTERN}$")] = None,
               result_id: Annotated[str | None, Query(min_length=1, max_length=128, description="Only accesses "
                                                      "to this result (needs hospital_id)")] = None,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
               offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> AccessLogPage:
    """The access log holds identifiers and verdicts only, never record content, so auditors may page
    through it; reading it is logged like any other audit read. The database holds result ids as keyed
    hashes (they can embed patient identifiers): an auditor asking about one names it in clear and the
    store looks up its hash (docs/encryption.md)."""
    authorize(principal, *ROLES)
    if result_id is not None and hospital_id is None:
        raise Problem(422, "validation", "Request does not match the schema", "result_id needs hospital_id")
    with _audited(ledger, principal, "audit-access-log", hospital_id, result_id):
        entries = ledger.access.entries(hospital_id=hospital_id, result_id=result_id, limit=limit, offset=offset)
    return AccessLogPage(entries=[AccessEntryOut(at=e.at, role=e.role, action=e.action, hospital_id=e.hospital_id,
                                                 result_id=e.result_id, version=e.version, verdict=e.verdict)
                                  for e in entries], limit=limit, offset=offset)
