"""Verification for doctors: a receipt (anyone) or a held record (doctor token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from api.deps import LedgerDep, PrincipalDep, authorize
from api.problems import Problem
from api.routes.results import RawBody
from api.schemas import EXAMPLE_RECORD, VerifyByReceipt, VerifyByRecord, VerifyOut, json_body, problems
from api.verification import NotAReceiptError
from ledger import parse_json

router = APIRouter(prefix="/v1", tags=["verify"])

DESCRIPTION = """
Two forms:

* `{"receipt": {...}}` — an `mrl-receipt/1` document. **No token needed**: anyone holding a receipt may check it.
  Checked offline (record → leaf → inclusion proof), then against this ledger's registry on chain. The chain is
  the proof, so a hospital this node never registered still verifies.
* `{"hospital_id", "result_id", "version"?, "record": {...}}` — the result a doctor holds, compared with what the
  hospital committed (`doctor`, `auditor` or `admin` token). `version` defaults to the held record's own version.

`verdict`: **authentic** (content committed and anchored, anchor confirmed), **tampered** (a check failed;
`failed_check` names it), **unknown** (this ledger holds no such result, or cannot check the anchor's chain or
registry), **pending** (genuine so far, anchor not confirmed yet). `superseded_by` names a newer version when the
result was amended or corrected. Every verification is written to the access log (identities and verdict only).
"""



@router.post(
    "/verify", response_model=VerifyOut, summary="Verify a receipt (anyone) or a held record (doctor)",
    description=DESCRIPTION,
    responses=problems(400, 401, 403, 413, 422, 503, s422=(
        "not-a-receipt", "Not an mrl-receipt/1 document", "missing receipt fields: ['leaf']", {})),
    openapi_extra=json_body(VerifyByReceipt | VerifyByRecord, "A receipt, or a record with its identity", {
        "receipt": {"receipt": {"format": "mrl-receipt/1", "record": EXAMPLE_RECORD, "salt": "…",
                                "leaf": {"index": 0, "hash": "…"}, "audit_path": [], "batch": {}, "anchor": None}},
        "record": {"hospital_id": "gz-001", "result_id": EXAMPLE_RECORD["result_id"], "version": 1,
                   "record": EXAMPLE_RECORD}}),
)
def verify(body: RawBody, ledger: LedgerDep, principal: PrincipalDep) -> Any:
    obj = parse_json(body)
    if isinstance(obj, dict) and "receipt" in obj:
        if set(obj) != {"receipt"}:
            raise Problem(422, "validation", "Request does not match the schema",
                          f"unknown members next to 'receipt': {sorted(set(obj) - {'receipt'})}")
        try:
            outcome = ledger.verify_receipt(principal, obj["receipt"])
        except NotAReceiptError as exc:
            raise Problem(422, "not-a-receipt", "Not an mrl-receipt/1 document", str(exc)) from exc
        return outcome.to_obj()
    authorize(principal, "doctor", "auditor", "admin")
    try:
        request = VerifyByRecord.model_validate(obj, strict=True)
    except ValidationError as exc:
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)]
        raise Problem(422, "validation", "Request does not match the schema",
                      "send {\"receipt\": {...}} or {\"hospital_id\", \"result_id\", \"version\"?, \"record\"}",
                      errors=errors[:20]) from exc
    return ledger.verify_record(principal, request.hospital_id, request.result_id, request.version,
                                request.record).to_obj()
