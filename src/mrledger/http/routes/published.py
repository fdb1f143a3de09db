"""Public, hash-only batch data: the signed head of a hospital's batches and their leaf hashes.

Why public: an auditor's monitor (``mrledger monitor``, docs/monitor.md) must check the node from outside,
holding no token, the way a Certificate Transparency monitor reads a log. What it needs is exactly what the
chain commits to: the batch head (hospital, seq, size, root, sealing time), the hospital's signature of it,
and the leaf hashes the root is built from. Each leaf is a salted commitment (``mrl-leaf/1``): without the
record and its 32-byte salt nothing can be learnt or checked from it, so this discloses no patient data, no
result id and no status — the size is on chain already (docs/access.md §2). Not written to the access log:
monitors poll, and nothing about a patient is read.

Registered before the results router so ``…/batches/head`` is not taken for ``…/batches/{seq}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.routes.results import MAX_SEQ, HospitalPath
from mrledger.http.schemas import PARAM_422, problems
from mrledger.ledger.statusmap import StatusValue
from mrledger.service.ledger import Services

router = APIRouter(prefix="/v1", tags=["results"])


class PublishedHead(BaseModel):
    hospital_id: str
    batch: dict[str, Any] = Field(description="the `mrl-batch/1` head, exactly as in receipts (docs/receipt.md §7)")
    signature: dict[str, Any] | None = Field(
        description="the hospital's `mrl-batch-sig/1` signature section (docs/signatures.md §3), null if unsigned")
    map_root: str | None = Field(None, description="the status-map root the batch committed (hex; null: sealed "
                                                   "before the map). On a v2 registry the anchored word hashes it "
                                                   "with the root and size (docs/receipt.md §18)")


class PublishedLeaves(PublishedHead):
    leaf_hashes: list[str] = Field(description="hex RFC 9162 leaf hashes of the salted commitments, in tree order")


def _head(ledger: Services, hospital_id: str, seq: int | None) -> PublishedHead:
    found = ledger.store.published_batch(hospital_id, seq)
    if found is None:
        what = "no batch" if seq is None else f"no batch {seq}"
        raise Problem(404, "not-found", "Not found", f"{what} for hospital {hospital_id!r}")
    head, signature = found
    map_root = ledger.store.map_root(hospital_id, head.seq)
    return PublishedHead(hospital_id=hospital_id, batch=head.to_obj(),
                         signature=None if signature is None else signature.to_obj(),
                         map_root=None if map_root is None else map_root.hex())


@router.get("/hospitals/{hospital_id}/batches/head", response_model=PublishedHead,
            summary="The latest sealed batch head and its signature (public, hashes only)",
            responses=problems(404, 422, s422=PARAM_422))
def latest_head(hospital_id: HospitalPath, ledger: ServicesDep) -> PublishedHead:
    return _head(ledger, hospital_id, None)


@router.get("/hospitals/{hospital_id}/batches/{seq}/leaves", response_model=PublishedLeaves,
            summary="A batch's signed head and leaf hashes (public, hashes only)",
            description="What a monitor re-derives the anchored root from. 404 when the node does not publish "
                        "the batch (never sealed, or its leaves are gone).",
            responses=problems(404, 422, s422=PARAM_422))
def batch_leaves(hospital_id: HospitalPath, seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
                 ledger: ServicesDep) -> PublishedLeaves:
    head = _head(ledger, hospital_id, seq)
    leaves = ledger.store.published_leaves(hospital_id, seq)
    if not leaves:
        raise Problem(404, "not-found", "Not found", f"batch {seq} of hospital {hospital_id!r} has no published leaves")
    return PublishedLeaves(**head.model_dump(), leaf_hashes=[h.hex() for h in leaves])


class MapEntry(BaseModel):
    key: str | None = Field(description="the result's status-map key (hex; null: a row the node has not keyed)")
    version: int
    status: Literal["current", "withdrawn"] = Field(description="what the version writes into the map")


class PublishedMap(BaseModel):
    hospital_id: str
    seq: int
    map_root: str | None = Field(description="the map root the batch committed (null: sealed before the map)")
    entries: list[MapEntry] = Field(description="per leaf, in tree order, the map change it makes")


@router.get("/hospitals/{hospital_id}/batches/{seq}/map", response_model=PublishedMap,
            summary="A batch's status-map root and the map change of each leaf (auditor, admin)",
            description="What a monitor re-derives the batch's map root from (docs/receipt.md §15, docs/monitor.md): "
                        "keys are salted hashes, but versions and withdrawals are facts about a hospital's results, "
                        "so this is for auditors, not the public. The leaf hashes are `…/leaves`.",
            responses=problems(401, 403, 404, 422, s422=PARAM_422))
def batch_map(hospital_id: HospitalPath, seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], ledger: ServicesDep,
              principal: PrincipalDep) -> PublishedMap:
    authorize(principal, "auditor", "admin")
    found = ledger.store.published_map(hospital_id, seq)
    if found is None:
        raise Problem(404, "not-found", "Not found", f"no batch {seq} for hospital {hospital_id!r}")
    root, rows = found
    return PublishedMap(hospital_id=hospital_id, seq=seq, map_root=None if root is None else root.hex(), entries=[
        MapEntry(key=None if key is None else key.hex(), version=version,
                 status=StatusValue.for_record(version, status, leaf).status) for key, version, status, leaf in rows])
