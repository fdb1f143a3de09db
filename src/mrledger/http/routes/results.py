"""Results of a hospital: submission, versions, receipts, batches."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, unquote, unquote_to_bytes

import pydantic_core
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from starlette.types import ASGIApp, Receive, Scope, Send

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.schemas import (
    EXAMPLE_RECORD,
    PARAM_422,
    BatchAnchorOut,
    BatchDetailOut,
    LookupId,
    ReceiptDoc,
    ResultOut,
    ResultVersionOut,
    SubmissionBatch,
    SubmissionOut,
    json_body,
    problems,
)
from mrledger.ledger import ResultRecord, parse_json
from mrledger.ledger.errors import RecordError
from mrledger.ledger.ids import lookup_id
from mrledger.ledger.records import MAX_VERSION
from mrledger.ledger.status import SEALED
from mrledger.node.settings import MAX_RECORDS_PER_REQUEST

router = APIRouter(prefix="/v1", tags=["results"])
#: Batch numbers are stored as 64-bit integers.
MAX_SEQ = 2**63 - 1

HospitalPath = Annotated[str, Path(description="Hospital id", examples=["gz-001"]), LookupId]
#: A result id is at most this many characters (``mrledger.ledger.records.Ident``).
MAX_RESULT_ID = 128


def _result_id(value: str) -> str:
    """The path segment as ``ResultIdPath`` left it (percent-encoded) → the result id. NFC like the record's
    own ids, so a client that sends the decomposed spelling of an accented id finds the stored one; an id with
    an invisible character is a 422 (no such id is ever accepted, ``mrledger.ledger.ids``)."""
    rid = lookup_id(unquote(value, errors="strict"))  # NFC; an invisible character is a ValueError (422)
    if not 1 <= len(rid) <= MAX_RESULT_ID:
        raise ValueError(f"a result id is 1 to {MAX_RESULT_ID} characters")
    return rid


ResultPath = Annotated[str, Path(
    description="The hospital's result id, percent-encoded as one path segment: `/` as `%2F`, `%` as `%25`, "
                "space as `%20`, `?` as `%3F`, `#` as `%23`, non-ASCII as UTF-8 (`encodeURIComponent`, Python "
                "`quote(id, safe='')`); at most 128 characters once decoded",
    examples=["LAB-2024-000123", "Observation%2Ff001"]), AfterValidator(_result_id)]


class ResultIdPath:
    """Routes result ids by the request's *raw* path, so any id can be named: ``Observation/f001`` (the id of a
    FHIR resource without an identifier), ``50%``, ``a?b#c``, ids in any script.

    Why: the ASGI server percent-decodes the path before routing, so ``…/results/Observation%2Ff001/receipt``
    reaches the router as ``…/results/Observation/f001/receipt`` and matches nothing (a 404 for a result that
    got a 202). A ``{result_id:path}`` route would instead make ids ending in ``/receipt`` or ``/proof``
    ambiguous. Here the result-id segment of the routes that take one is cut from the raw path, where ``%2F``
    is still a byte of the id and only a literal ``/`` separates segments, and handed to the router
    re-encoded as one segment (``quote(id, safe="")``); ``ResultPath`` decodes it again. Every other path is
    left as the server decoded it. Pure ASGI (no per-request task), like ``mrledger.http.app.BodyLimit``."""

    #: (literal segments before the id, suffixes after it) of every route with a ``{result_id}``; ``*`` is any
    #: one segment (the hospital id).
    ROUTES: tuple[tuple[tuple[bytes, ...], frozenset[bytes]], ...] = (
        ((b"v1", b"hospitals", b"*", b"results"),
         frozenset({b"", b"receipt", b"receipt.png", b"receipt.svg", b"proof", b"status-proof"})),
        ((b"v1", b"audit", b"hospitals", b"*", b"results"), frozenset({b"lineage"})),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = self.route_path(scope)
            if path is not None:
                scope["path"] = path  # in place: the router writes the matched route into this scope (metrics)
        await self.app(scope, receive, send)

    @classmethod
    def route_path(cls, scope: Scope) -> str | None:
        """The path to route by, or None to keep the server's."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        parts = raw.split(b"?", 1)[0].split(b"/")
        if len(parts) < 6 or parts[0] != b"":
            return None
        for before, suffixes in cls.ROUTES:
            n = len(before) + 1
            if len(parts) not in (n + 1, n + 2) or not all(
                    want in (b"*", got) for want, got in zip(before, parts[1:n], strict=True)):
                continue
            suffix = parts[n + 1] if len(parts) == n + 2 else b""
            if suffix not in suffixes or not parts[n] or (len(parts) == n + 2 and not suffix):
                return None
            try:
                rid = unquote_to_bytes(parts[n]).decode("utf-8")
                head = [unquote_to_bytes(p).decode("utf-8") for p in parts[:n]]
            except UnicodeDecodeError:
                return None  # not UTF-8: routed as the server decoded it, and answered there
            return "/".join([*head, quote(rid, safe="")] + ([suffix.decode("ascii")] if suffix else []))
        return None


async def raw_body(request: Request) -> bytes:
    """The body as sent: parsed strictly by the route so what is committed is exactly what was sent (no
    coercion, no duplicate keys, no NaN)."""
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]

SUBMIT_DESCRIPTION = f"""
Submit one record (the body is a `ResultRecord` object) or up to **{MAX_RECORDS_PER_REQUEST}** records at once
(`{{"records": [...]}}`, 1..{MAX_RECORDS_PER_REQUEST} records; split larger uploads). Only the hospital's own token
(`hospital:<id>`) may submit, and every record's `hospital_id` must be the path's.

All or nothing: on any error nothing is written. Idempotent per (hospital, result_id, version): the same content
again returns the leaf it got the first time (`status: "duplicate"`); other content is a 409 problem listing the
conflicting keys. A later version must name the version it `supersedes`.

Errors: malformed JSON (duplicate keys, NaN, trailing data) 400 `malformed`; an invalid record 422
`invalid-record` whose `field` names the record and field (`records[3].content.observations.0.value`).
"""


def _records(obj: Any, hospital_id: str) -> list[ResultRecord]:
    single = not (isinstance(obj, dict) and "records" in obj)
    if single:
        items, prefix = [obj], ""
    else:
        if set(obj) != {"records"}:
            raise Problem(422, "invalid-submission", "Submission is not valid",
                          f"unknown members next to 'records': {sorted(set(obj) - {'records'})}")
        items = obj["records"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_RECORDS_PER_REQUEST:
            raise Problem(422, "invalid-submission", "Submission is not valid",
                          f"'records' must be a list of 1 to {MAX_RECORDS_PER_REQUEST} records "
                          f"(got {len(items) if isinstance(items, list) else type(items).__name__})",
                          field="records")
        prefix = "records[{}]"
    records = []
    for i, item in enumerate(items):
        where = prefix.format(i)
        try:
            record = ResultRecord.from_obj(item)
        except RecordError as exc:
            field = ".".join(p for p in (where, exc.field or "") if p) or None
            raise RecordError(exc.reason, field=field) from exc
        if record.hospital_id != hospital_id:
            raise RecordError(f"record of hospital {record.hospital_id!r} submitted for {hospital_id!r}",
                              field=".".join(p for p in (where, "hospital_id") if p))
        records.append(record)
    return records


@router.post(
    "/hospitals/{hospital_id}/results", status_code=status.HTTP_202_ACCEPTED, response_model=SubmissionOut,
    summary="Submit results (the hospital's own token)", description=SUBMIT_DESCRIPTION,
    responses=problems(400, 401, 403, 404, 409, 413, 422, 503),
    openapi_extra=json_body(ResultRecord | SubmissionBatch, "One record, or {\"records\": [...]}",
                            {"single": EXAMPLE_RECORD, "list": {"records": [EXAMPLE_RECORD]}}),
)
def submit(hospital_id: HospitalPath, body: RawBody, ledger: ServicesDep, principal: PrincipalDep) -> Response:
    authorize(principal, "hospital", hospital_id=hospital_id)
    records = _records(parse_json(body), hospital_id)
    accepted = ledger.intake.submit(hospital_id, records)
    new = sum(a.status == "accepted" for a in accepted)
    # Written directly in SubmissionOut's shape: building 1,000 AcceptedOut models and having FastAPI
    # validate them again through the response model cost ~4 µs per record, 5 % of the request
    # (in-process ASGI measurement); schemathesis holds the answer to the schema.
    answer = {"hospital_id": hospital_id, "accepted": new, "duplicates": len(accepted) - new,
              "results": [{"result_id": a.result_id, "version": a.version, "leaf_hash": a.leaf_hash.hex(),
                           "status": a.status} for a in accepted]}
    return Response(pydantic_core.to_json(answer), status_code=status.HTTP_202_ACCEPTED,
                    media_type="application/json")


@router.get(
    "/hospitals/{hospital_id}/results/{result_id}", response_model=ResultOut,
    summary="Versions of a result (own hospital, auditor, admin)",
    description="Every version with its leaf and anchoring progress. Each lookup is written to the access log. "
                "Not for doctors: an id and a token would tell whether any hospital holds a result, with its status, "
                "leaf hashes and times; a doctor holding the result learns its later versions from `POST /v1/verify` "
                "(docs/access.md).",
    responses=problems(401, 403, 404, 422, s422=PARAM_422),
)
def result_versions(hospital_id: HospitalPath, result_id: ResultPath, ledger: ServicesDep,
                    principal: PrincipalDep) -> ResultOut:
    authorize(principal, "hospital", "auditor", "admin", hospital_id=hospital_id)
    versions = ledger.results.versions(hospital_id, result_id)
    ledger.access_log.log(principal, "lookup", hospital_id=hospital_id, result_id=result_id)
    return ResultOut(hospital_id=hospital_id, result_id=result_id, versions=[
        ResultVersionOut(version=v.version, status=v.status, supersedes=v.supersedes, leaf_hash=v.leaf_hash.hex(),
                   accepted_at=v.accepted_at, batch_seq=v.batch_seq, leaf_index=v.leaf_index,
                   anchor_status=anchor_status)
        for v, anchor_status in versions])


@router.get(
    "/hospitals/{hospital_id}/results/{result_id}/receipt", response_model=ReceiptDoc,
    summary="The patient's receipt (own hospital, auditor, admin)",
    description="The `mrl-receipt/1` document (docs/receipt.md) once the batch anchor is confirmed. Before that a "
                "409 problem `urn:mrledger:problem:receipt-pending` whose `anchor_status` says how far anchoring "
                "got (pending | sealed | submitted | included).",
    responses=problems(401, 403, 404, 409, 422, s422=PARAM_422, s409=(
        "receipt-pending", "The receipt is not available yet", "the batch anchor is submitted, not confirmed",
        {"anchor_status": "submitted"})),
)
def receipt(hospital_id: HospitalPath, result_id: ResultPath, ledger: ServicesDep, principal: PrincipalDep,
            version: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Default: the latest version")]
            = None) -> Any:
    authorize(principal, "hospital", "auditor", "admin", hospital_id=hospital_id)
    found, anchor_status = ledger.results.receipt(hospital_id, result_id, version)
    if found is None:
        raise Problem(409, "receipt-pending", "The receipt is not available yet",
                      f"the batch anchor is {anchor_status}, not confirmed", anchor_status=anchor_status)
    ledger.access_log.log(principal, "receipt", hospital_id=hospital_id, result_id=result_id,
                          version=found.record.version)
    # Returned as built: a model round trip could re-spell the record (nulls, numbers) and break the leaf.
    return JSONResponse(found.to_obj())


@router.get(
    "/hospitals/{hospital_id}/batches/{seq}", response_model=BatchDetailOut,
    summary="A sealed batch (own hospital, auditor, admin)",
    description="The batch head, its anchoring state (with confirmations when this node has a chain) and its "
                "leaf hashes in tree order.",
    responses=problems(401, 403, 404, 422, s422=PARAM_422),
)
def batch(hospital_id: HospitalPath, seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], ledger: ServicesDep,
          principal: PrincipalDep) -> BatchDetailOut:
    authorize(principal, "hospital", "auditor", "admin", hospital_id=hospital_id)
    view = ledger.results.batch(hospital_id, seq)
    a = view.anchor
    anchor = BatchAnchorOut(status=SEALED) if a is None else BatchAnchorOut(
        status=a.status,
        chain_id=a.chain_id, contract=a.contract, tx_hash=a.tx_hash, block_number=a.block_number,
        block_hash=a.block_hash, confirmations=view.confirmations)
    return BatchDetailOut(hospital_id=hospital_id, seq=seq, size=view.head.size, root=view.head.root.hex(),
                    sealed_at=view.head.sealed_at, anchor=anchor, leaf_hashes=[h.hex() for h in view.leaf_hashes])

