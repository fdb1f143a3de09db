"""The patient receipt as a QR code (PNG/SVG), and the public, content-free proof a reference QR needs.

The QR routes hand out the same document as ``GET …/receipt`` (patient id and values inside), so they
take the same roles. The proof route is public on purpose: a doctor scanning a reference QR
(``mrl-qref/1``, docs/receipt.md §14) has no token for the patient's hospital. It returns hashes only
(leaf, audit path, batch head, anchor) and only to a caller who already names the leaf hash, so it
reveals no content and cannot be used to enumerate a hospital's results.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.routes.results import HospitalPath, ResultPath
from mrledger.http.schemas import PARAM_422, problems
from mrledger.ledger.records import MAX_VERSION
from mrledger.service import qr
from mrledger.service.ledger import StatusPendingError
from mrledger.store import NotFoundError

router = APIRouter(prefix="/v1", tags=["results"])

FormQuery = Annotated[Literal["auto", "full", "ref", "ref-min"], Query(
    description="auto: the full receipt if its QR fits version "
                f"{qr.MAX_QR_VERSION} (ECC M), else a reference with the record, else one without")]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Default: the latest version")]
_PENDING = ("receipt-pending", "The receipt is not available yet", "the batch anchor is submitted, not confirmed",
            {"anchor_status": "submitted"})
_STATUS_PENDING: tuple[str, str, str, dict[str, Any]] = ("status-pending", "No status answer yet",
                   "no confirmed batch of this hospital commits a status map yet", {})
_MEDIA = {"png": "image/png", "svg": "image/svg+xml"}


def _confirmed_receipt(ledger: Any, hospital_id: str, result_id: str, version: int | None) -> dict[str, Any]:
    found, anchor_status = ledger.results.receipt(hospital_id, result_id, version)
    if found is None:
        raise Problem(409, "receipt-pending", "The receipt is not available yet",
                      f"the batch anchor is {anchor_status}, not confirmed", anchor_status=anchor_status)
    obj: dict[str, Any] = found.to_obj()
    return obj


def _qr(kind: Literal["png", "svg"], hospital_id: str, result_id: str, ledger: ServicesDep, principal: PrincipalDep,
        version: int | None, form: str) -> Response:
    authorize(principal, "hospital", "auditor", "admin", hospital_id=hospital_id)
    receipt = _confirmed_receipt(ledger, hospital_id, result_id, version)
    chosen: str
    if form == "auto":
        text, chosen = qr.qr_text(receipt)
    else:
        chosen = form
        text = qr.encode(receipt if form == "full" else qr.reference(receipt, with_record=form == "ref"))
    ledger.access_log.log(principal, "receipt-qr", hospital_id=hospital_id, result_id=result_id,
                          version=receipt["record"]["version"])
    body = qr.render(text, kind, title=f"mrledger receipt {hospital_id} {result_id}")
    # Patient data inside: never cached by proxies or the browser.
    return Response(body, media_type=_MEDIA[kind], headers={
        "Cache-Control": "no-store", "X-Mrl-Qr-Form": chosen, "X-Mrl-Qr-Version": str(qr.make(text).version),
        "Content-Disposition": content_disposition(f"receipt-{result_id}.{kind}")})


def content_disposition(filename: str, disposition: str = "inline") -> str:
    """RFC 6266 with RFC 8187 ``filename*``: HTTP header values are Latin-1, so a result id outside it (a
    Chinese one) in ``filename="…"`` made the response a 500. ``filename*`` carries the name as UTF-8,
    percent-encoded; ``filename`` is an ASCII stand-in (other characters become ``_``) for the clients that
    predate it, and can hold neither a quote nor a line break."""
    fallback = _NOT_TOKEN.sub("_", filename)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._-]")


_QR_DOC = dict(
    responses={**problems(401, 403, 404, 409, 422, s422=PARAM_422, s409=_PENDING),
               200: {"description": "The QR code; headers X-Mrl-Qr-Form (full | ref | ref-min) and "
                                    "X-Mrl-Qr-Version tell what it carries and how large it is"}},
    response_class=Response,
)


@router.get("/hospitals/{hospital_id}/results/{result_id}/receipt.png",
            summary="The patient's receipt as a QR code, PNG (own hospital, auditor, admin)", **_QR_DOC)  # type: ignore[arg-type]
def receipt_png(hospital_id: HospitalPath, result_id: ResultPath, ledger: ServicesDep, principal: PrincipalDep,
                version: VersionQuery = None, form: FormQuery = "auto") -> Response:
    """For printing on the report: 8 pixels per module, quiet zone included."""
    return _qr("png", hospital_id, result_id, ledger, principal, version, form)


@router.get("/hospitals/{hospital_id}/results/{result_id}/receipt.svg",
            summary="The patient's receipt as a QR code, SVG (own hospital, auditor, admin)", **_QR_DOC)  # type: ignore[arg-type]
def receipt_svg(hospital_id: HospitalPath, result_id: ResultPath, ledger: ServicesDep, principal: PrincipalDep,
                version: VersionQuery = None, form: FormQuery = "auto") -> Response:
    """Vector form for report templates, scales to any print size without blur."""
    return _qr("svg", hospital_id, result_id, ledger, principal, version, form)


@router.get(
    "/hospitals/{hospital_id}/results/{result_id}/proof",
    summary="Inclusion proof of a result version, hashes only (anyone who names its leaf hash)",
    description="What a reference QR (`mrl-qref/1`) lacks: `leaf`, `audit_path`, `batch` and `anchor` of the "
                "receipt, without record and salt. The caller must name the leaf hash; a wrong one is a 404 "
                "like an unknown result, so the route tells nothing to someone who does not hold the receipt.",
    responses=problems(404, 409, 422, s422=PARAM_422, s409=_PENDING),
)
def proof(hospital_id: HospitalPath, result_id: ResultPath, ledger: ServicesDep, principal: PrincipalDep,
          leaf_hash: Annotated[str, Query(pattern="^[0-9a-f]{64}$", description="lower-hex leaf hash")],
          version: VersionQuery = None) -> Any:
    # The leaf hash is checked before anything else is said (even "pending"), and a result id that was never
    # stored gets the very answer of a wrong leaf (the store's own 404 names the difference), so a caller
    # without the leaf cannot learn whether a result id exists (scripts/attack.py found the two apart).
    try:
        infos = {i.version: i for i in ledger.store.versions(hospital_id, result_id)}
    except NotFoundError:
        infos = {}
    info = infos.get(max(infos) if version is None else version) if infos else None
    if info is None or info.leaf_hash.hex() != leaf_hash:
        raise NotFoundError(f"no result {result_id!r} with that leaf at hospital {hospital_id!r}")
    receipt = _confirmed_receipt(ledger, hospital_id, result_id, info.version)
    ledger.access_log.log(principal, "proof", hospital_id=hospital_id, result_id=result_id,
                          version=receipt["record"]["version"])
    return JSONResponse(qr.proof_of(receipt), headers={"Cache-Control": "no-store"})


@router.get(
    "/hospitals/{hospital_id}/results/{result_id}/status-proof",
    summary="Is this version still current? The status-map proof of a result (anyone who names its status key)",
    description="`mrl-status-proof/1` (docs/receipt.md §17): the map proof of the result's entry as of the "
                "hospital's latest confirmed batch, that batch's head, map root and anchor. The caller names the "
                "result's status key, which only a receipt's holder can derive (from the first version's salt); "
                "any other key is a 404 like an unknown result. Check it with the receipt and the chain "
                "(`mrledger verify --status`), not by trusting this node.",
    responses=problems(404, 409, 422, s422=PARAM_422, s409=_STATUS_PENDING),
)
def status_proof(hospital_id: HospitalPath, result_id: ResultPath, ledger: ServicesDep, principal: PrincipalDep,
                 key: Annotated[str, Query(pattern="^[0-9a-f]{64}$", description="lower-hex status key")]) -> Any:
    try:
        doc = ledger.results.status_document(hospital_id, result_id, bytes.fromhex(key))
    except StatusPendingError as exc:
        raise Problem(409, "status-pending", "No status answer yet", str(exc)) from exc
    ledger.access_log.log(principal, "status-proof", hospital_id=hospital_id, result_id=result_id)
    return JSONResponse(doc.to_obj(), headers={"Cache-Control": "no-store"})
