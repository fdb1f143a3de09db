"""Doctors record what they did after a verification; hospital systems report encounters (service/decisions.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize, get_principal, get_services
from mrledger.http.problems import Problem
from mrledger.http.schemas import HospitalId, problems
from mrledger.http.strict_json import StrictJsonRoute, content_type, decodes_as_json
from mrledger.ledger import parse_json
from mrledger.service.decisions import MAX_DETAIL, MAX_ENCOUNTERS, DecisionRefused, EncounterIn
from mrledger.store.events import DecisionFacts

router = APIRouter(prefix="/v1", tags=["decisions"], route_class=StrictJsonRoute)

_ULID = r"^[0-9A-HJKMNP-TV-Z]{26}$"
_VID = "01JD3S4V6Q8E2N7W0X5K9C1B2A"
_LEAF = "9f2c1e4b7d0a5f3e8c6b2a1d4e7f0c3b6a9d2e5f8c1b4a7d0e3f6c9b2a5d8e1f"
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")]
#: Free text: printable, tab and line breaks allowed (it is committed inside the event record).
FreeText = Annotated[str, Field(min_length=1, max_length=MAX_DETAIL, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]


def _text_only(value: Any) -> Any:
    """A time is an RFC 3339 string: pydantic would also take 0 as the epoch, which no hospital system means."""
    if not isinstance(value, str):
        raise ValueError("a time is an RFC 3339 string with a UTC offset")
    return value


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_text_only)]


def _problem(exc: DecisionRefused) -> Problem:
    return Problem(exc.status, exc.name, exc.title, exc.detail)


# -- decisions ------------------------------------------------------------------------------------------


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"verification_id": _VID, "decision": "recognised"},
        {"verification_id": _VID, "decision": "reordered", "reason": "condition-changed"},
        {"verification_id": _VID, "decision": "reordered", "reason": "other", "detail": "result illegible"}]})

    verification_id: Annotated[str, Field(pattern=_ULID, description="From the answer of POST /v1/verify.")]
    decision: Literal["recognised", "reordered"] = Field(
        description="recognised: the doctor accepted the result instead of repeating the test; reordered: she "
                    "repeats it.")
    reason: Slug | None = Field(None, description="Why the test is repeated: one of the catalogue's reorder "
                                                  "reasons (GET /v1/catalogue). Required when the programme would "
                                                  "recognise the result; not allowed with recognised.")
    detail: FreeText | None = Field(None, description="Free text with the reason (required for `other`). Committed: "
                                                      "write no patient data here.")


class ResultRef(BaseModel):
    hospital_id: str
    result_ref: str = Field(description="Keyed hash of the result id (HMAC-SHA256 under the regional key): result "
                                        "ids can embed patient identifiers, so decisions do not hold them.")
    version: int


class DecisionItemOut(BaseModel):
    system: str
    code: str
    category: str
    price: float | None = Field(description="Price when decided, in `currency` (null: the catalogue has none).")


class DecisionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "verification_id": _VID, "hospital_id": "qd-002", "stream": "qd-002.events",
        "result_key": f"decision:{_VID}", "decision": "recognised", "reason": None, "detail": None,
        "verified_at": "2024-05-02T08:59:30Z", "decided_at": "2024-05-02T09:00:00Z",
        "verified": {"hospital_id": "gz-001", "result_ref": "5d" * 32, "version": 1},
        "verdict": "authentic", "recognition": "recognise", "rule_reasons": [],
        "category": "clinical-biochemistry",
        "items": [{"system": "http://loinc.org", "code": "2345-7", "category": "clinical-biochemistry",
                   "price": 5.0}],
        "tests_avoided": 1, "money_saved": 5.0, "currency": "CNY", "leaf_hash": _LEAF, "status": "accepted"}]})

    verification_id: str
    hospital_id: str = Field(description="The doctor's hospital: the decision counts for it.")
    stream: str = Field(description="The event stream the decision is committed in (a pseudo-hospital).")
    result_key: str = Field(description="The decision's result id in its stream (for receipts and lineage).")
    decision: Literal["recognised", "reordered"]
    reason: str | None
    detail: str | None
    verified_at: datetime
    decided_at: datetime
    verified: ResultRef = Field(description="The verified result (hospital, keyed result reference, version).")
    verdict: str = Field(description="The verification's verdict, as the node answered it.")
    recognition: Literal["recognise", "reorder"] = Field(description="The programme's verdict on that result.")
    rule_reasons: list[str] = Field(description="Its reason codes (docs/recognition.md §4).")
    category: str | None
    items: list[DecisionItemOut]
    tests_avoided: int = Field(description="Catalogue items not repeated: those of a recognised result, else 0.")
    money_saved: float = Field(description="Their prices, in `currency`.")
    currency: str
    leaf_hash: str = Field(description="hex leaf of the decision's record (mrl-leaf/1)")
    status: Literal["accepted", "duplicate"] = Field(description="duplicate: this decision was recorded before "
                                                                 "(a retried request); nothing was written.")


def decision_out(d: DecisionFacts, leaf: bytes, state: Literal["accepted", "duplicate"]) -> DecisionOut:
    return DecisionOut(
        verification_id=d.verification_id, hospital_id=d.hospital_id, stream=d.stream, result_key=d.result_key,
        decision=d.decision, reason=d.reason, detail=d.detail,
        verified_at=d.verified_at, decided_at=d.decided_at,
        verified=ResultRef(hospital_id=d.result_hospital_id, result_ref=d.result_ref, version=d.result_version),
        verdict=d.verdict, recognition=d.recognition, rule_reasons=list(d.rule_reasons),
        category=d.category, items=[DecisionItemOut(system=i.system, code=i.code, category=i.category,
                                                    price=None if i.price_minor is None else i.price_minor / 100)
                                    for i in d.items],
        tests_avoided=d.tests, money_saved=d.amount_minor / 100, currency=d.currency, leaf_hash=leaf.hex(),
        status=state)


DECISION_DESCRIPTION = """
After a verification (`POST /v1/verify` answers a `verification_id`), the doctor records what she did:
`recognised` (accepted the result instead of repeating the test) or `reordered` (with a `reason` from the
catalogue's `reorder_reasons`; required when the programme's verdict was `recognise`). Needs a doctor token
**affiliated with a hospital** (role `doctor:<hid>`): the decision counts for that hospital. A verification made
with a doctor token is decided with that token; one made without a token (a patient's receipt checked on the
page) by any affiliated doctor.

The node supplies what was verified (result, verdict, recognition, catalogue items and their current prices)
from its own record of the verification; the client cannot claim it. The decision is committed in the
hospital's event stream `<hid>.events`, sealed and anchored like results (docs/kpis.md). One decision per
verification: the same one again is answered 200 `duplicate`, another one 409 `already-decided`.

Problems: 403 `not-affiliated`, `not-your-verification`; 404 `unknown-verification`; 422 `reason-required`,
`decision-not-allowed` (recognised, but the programme said reorder), `unknown-reason`, `detail-required`,
`reason-not-applicable`.
"""


@router.post("/decisions", status_code=status.HTTP_201_CREATED, response_model=DecisionOut,
             summary="Record a recognition decision (affiliated doctor)", description=DECISION_DESCRIPTION,
             responses={200: {"description": "This decision was recorded before (status duplicate)",
                              "model": DecisionOut},
                        **problems(400, 401, 403, 404, 409, 413, 422, 503, s404=(
                            "unknown-verification", "Unknown verification", f"no verification {_VID!r}", {}),
                            s409=("already-decided", "A decision is already recorded",
                                  f"verification {_VID} was decided recognised; decisions are not replaced", {}),
                            s422=("reason-required", "A reason is required", "the programme would recognise this "
                                  "result: say why it is repeated", {}))})
def record_decision(body: DecisionIn, ledger: ServicesDep, principal: PrincipalDep) -> Response:
    """Answers the model serialised once, as a ``Response``: returned as a model, FastAPI validates it again
    against ``response_model`` before serialising it (~8 % of an API process's event loop in a city replay,
    where every verification is followed by a decision; py-spy, issue 20). ``response_model`` stays for the
    OpenAPI document."""
    authorize(principal, "doctor")
    try:
        done = ledger.decisions.decide(principal, body.verification_id, body.decision, body.reason, body.detail)
    except DecisionRefused as exc:
        raise _problem(exc) from exc
    code = status.HTTP_200_OK if done.status == "duplicate" else status.HTTP_201_CREATED
    return Response(decision_out(done.facts, done.leaf_hash, done.status).model_dump_json(), status_code=code,
                    media_type="application/json")


def declares_json(scope: Scope) -> bool:
    """The fast lane (mrledger.http.fastlane) takes a decision whose body is declared JSON; any other
    Content-Type (or none: FastAPI's strict content type then validates the raw bytes) is FastAPI's to answer."""
    value = content_type(scope)
    return value is not None and decodes_as_json(value)


async def record_decision_lane(request: Request) -> Response:
    """``POST /v1/decisions`` on the fast lane: what FastAPI's handler did for ``record_decision``, in its order,
    without its dependency solver (a decision follows every verification of a city replay, issue 20). The body
    decoded strictly (a 400 ``malformed`` before anything else, as ``StrictJsonRoute``), then the caller (401),
    then the body validated against ``DecisionIn`` with its errors located under ``body`` as FastAPI locates
    them (422), then the handler on a worker thread. tests/http/test_fastlane.py holds the two paths together."""
    raw = await request.body()
    obj = parse_json(raw) if raw else None
    ledger = await get_services(request)
    principal = await get_principal(request, ledger)
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        body = DecisionIn.model_validate(obj, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from exc
    response: Response = await run_in_threadpool(record_decision, body, ledger, principal)
    return response


# -- encounters -----------------------------------------------------------------------------------------


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = Field(
        None, description="The identifier's system (a regional patient id system makes hashes comparable across "
                          "hospitals).")
    value: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")] = Field(
        description="The patient identifier: hashed (HMAC-SHA256, regional key) on arrival, never stored or logged.")


class EncounterItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encounter_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$",
                                       description="The hospital's own id of the encounter (idempotency key).")]
    patient: PatientIn
    seen_at: Rfc3339 = Field(description="When the doctor saw the patient (RFC 3339 with a UTC offset).")
    retrieved: StrictBool = Field(description="Whether the recognisable results were retrieved (verified).")
    categories: Annotated[list[Slug], Field(max_length=16)] = Field(
        default_factory=list, description="Catalogue categories of the recognisable results (per-category rates).")


class EncountersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "hospital_id": "qd-002", "encounters": [{
            "encounter_id": "ENC-2024-000451", "patient": {"system": "urn:cn:resident-id", "value": "SYNTHETIC-0001"},
            "seen_at": "2024-05-02T08:55:00+08:00", "retrieved": True, "categories": ["clinical-biochemistry"]}]}]})

    hospital_id: HospitalId
    encounters: Annotated[list[EncounterItem], Field(min_length=1, max_length=MAX_ENCOUNTERS)]


class EncounterOut(BaseModel):
    encounter_id: str
    encounter_ref: str = Field(description="What the ledger holds instead of the id: its keyed hash.")
    leaf_hash: str
    status: Literal["accepted", "duplicate"]


class EncountersOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hospital_id": "qd-002", "stream": "qd-002.events", "accepted": 1, "duplicates": 0,
        "encounters": [{"encounter_id": "ENC-2024-000451", "encounter_ref": "3c" * 32, "leaf_hash": _LEAF,
                        "status": "accepted"}]}]})

    hospital_id: str
    stream: str
    accepted: int
    duplicates: int
    encounters: list[EncounterOut]


ENCOUNTER_DESCRIPTION = f"""
A hospital system reports that a doctor saw a patient for whom recognisable results existed, and whether they
were retrieved (verified): the denominator of the retrieval rate (docs/kpis.md). Only the hospital's own token
(`hospital:<id>`) may report for it. 1..{MAX_ENCOUNTERS} encounters per request, all or nothing; the same
encounter again is a duplicate, the same `encounter_id` with other content a 409.

The patient identifier is hashed on arrival (HMAC-SHA256 under the regional key, `MRL_REGIONAL_KEY`) and only
the hash is committed; the clear identifier is neither stored nor logged. Encounters are committed in the
hospital's event stream `<hid>.events` like results.
"""


@router.post("/encounters", status_code=status.HTTP_202_ACCEPTED, response_model=EncountersOut,
             summary="Report encounters (hospital)", description=ENCOUNTER_DESCRIPTION,
             responses=problems(400, 401, 403, 409, 413, 422, 503, s409=(
                 "conflict", "Conflicts with what the ledger holds",
                 "encounter(s) ['ENC-2024-000451'] were reported before with other content", {}),
                 s422=("unknown-category", "Not a catalogue category", "encounter ENC-1: 'pet' is not one of [...]",
                       {})))
def report_encounters(body: EncountersIn, ledger: ServicesDep, principal: PrincipalDep) -> Any:
    authorize(principal, "hospital", hospital_id=body.hospital_id)
    items = [EncounterIn(e.encounter_id, e.patient.system, e.patient.value, e.seen_at, e.retrieved,
                         tuple(e.categories)) for e in body.encounters]
    try:
        done = ledger.decisions.report(body.hospital_id, items)
    except DecisionRefused as exc:
        raise _problem(exc) from exc
    accepted = sum(r.status == "accepted" for r in done)
    return EncountersOut(hospital_id=body.hospital_id, stream=done[0].facts.stream, accepted=accepted,
                         duplicates=len(done) - accepted,
                         encounters=[EncounterOut(encounter_id=r.encounter_id, encounter_ref=r.facts.encounter_ref,
                                                  leaf_hash=r.leaf_hash.hex(), status=r.status) for r in done])
