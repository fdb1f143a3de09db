"""Intake of real formats over HTTP: a FHIR R4 resource or Bundle, or HL7 v2 ORU^R01 messages, as sent.

Why raw bodies with their own media types rather than JSON wrappers: interface engines post what they
hold (``application/fhir+json``, ER7 text) and should not need a mrledger-specific envelope. DICOM has no
endpoint: studies are large, and only their fingerprints need to travel, so ``mrledger submit --format
dicom`` fingerprints the files locally and posts the records to ``POST …/results`` (docs/formats.md).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import MEDIA_TYPE, PREFIX, Problem
from mrledger.http.routes.results import HospitalPath, RawBody
from mrledger.http.schemas import AcceptedOut, ProblemOut, SubmissionOut, problems
from mrledger.ledger.formats import FormatError
from mrledger.ledger.formats._fhir_policy import OPTIONAL_CATEGORIES, Skipped
from mrledger.node.settings import MAX_BODY_BYTES
from mrledger.service import intake

router = APIRouter(prefix="/v1", tags=["results"])

FHIR_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
HL7_TYPES = ("x-application/hl7-v2+er7", "application/hl7-v2", "text/plain")

TzQuery = Annotated[str | None, Query(
    max_length=64, examples=["America/New_York"],
    description="IANA time zone of the sender, applied to times without a UTC offset. HL7 v2: required when "
                "any time lacks an offset (422 otherwise). FHIR: only bare dates lack one; default UTC.")]


class IntakeResultOut(AcceptedOut):
    """A JSON submission's answer per record, plus what lineage decided (formats carry no version numbers)."""

    version: int = Field(description="The version the ledger assigned (lineage: docs/formats.md).")
    supersedes: int | None = Field(description="The version this one supersedes (null for version 1).")
    result_status: Literal["final", "amended", "corrected", "entered-in-error", "preliminary"]


class SkippedOut(BaseModel):
    """A Bundle entry that was not committed."""

    model_config = ConfigDict(frozen=True)

    entry: int = Field(description="Position in Bundle.entry (0-based).")
    full_url: str | None
    resource_type: str | None
    reason: str = Field(examples=["category vital-signs is not a result (…); to commit it anyway, ask with "
                                  "include=vital-signs"])


class IntakeOut(SubmissionOut):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "accepted": 1, "duplicates": 0,
        "results": [{"result_id": "f001", "version": 2, "supersedes": 1, "result_status": "amended",
                     "leaf_hash": "9f" * 32, "status": "accepted"}],
        "skipped": [{"entry": 0, "full_url": "urn:uuid:4d7c…", "resource_type": "Encounter",
                     "reason": "a Encounter is not a result"}]}]})

    results: list[IntakeResultOut]  # type: ignore[assignment]
    skipped: list[SkippedOut] = Field(
        default_factory=list, description="Every Bundle entry not committed, with the reason (resources that are "
                                          "not results, Observation categories not asked for with `include`). "
                                          "Empty for HL7 v2.")


IncludeQuery = Annotated[list[str] | None, Query(
    examples=[["vital-signs"]],
    description="Observation categories that are not results but are to be committed anyway: "
                + ", ".join(OPTIONAL_CATEGORIES) + " (repeat the parameter or separate with commas). Results "
                "(laboratory, imaging, procedure, uncategorised Observations, every DiagnosticReport and "
                "ImagingStudy) need no asking.")]


LINEAGE = """
**Versions are assigned by the ledger** from the result's status and what it already holds for (hospital,
result id): none held → version 1 (an amended/corrected result is refused, 422 `lineage`: there is nothing it
corrects); the same content as a held version, however spelt → that version, `status: "duplicate"`, same leaf;
changed and amended/corrected (HL7 `C`) or entered-in-error (HL7 `D`/`W`) → latest + 1 superseding the latest;
changed while the held latest is preliminary → latest + 1; any other change (final → final) → 409 `conflict`:
a changed result must be sent as amended or corrected. All or nothing: on any error nothing is written.
Only the hospital's own token (`hospital:<id>`). Errors: wrong content type 415; input that cannot become a
record 422 `unsupported-content`, whose `detail` names the resource path or segment and field.
"""

_S415: tuple[str, str, str, dict[str, Any]] = ("unsupported-media-type", "Unsupported content type",
         "content type 'application/xml' is not accepted here; use application/fhir+json", {})
_S422: tuple[str, str, str, dict[str, Any]] = ("unsupported-content", "The content cannot be taken as results",
         "Observation/f001: status 'cancelled': the result was never produced, so there is nothing to commit",
         {"where": "Observation/f001"})
_S409: tuple[str, str, str, dict[str, Any]] = ("conflict", "Conflicts with what the ledger holds",
         "result 'f001' differs from version 1 (final) held by this ledger, but is sent as final: a changed "
         "result must be sent as amended or corrected (FHIR status amended/corrected, HL7 'C')",
         {"keys": [{"hospital_id": "gz-001", "result_id": "f001", "version": 1}]})


def _responses(s409: Any, s422: Any) -> dict[int | str, dict[str, Any]]:
    """The documented problems; 415 is built here because ``problems`` has no default example for it."""
    name, title, detail, extra = _S415
    example = {"type": PREFIX + name, "title": title, "status": 415, "detail": detail, **extra}
    s415 = {"description": title, "content": {MEDIA_TYPE: {"schema": ProblemOut.model_json_schema(),
                                                            "example": example}}}
    return {**problems(400, 401, 403, 404, 409, 413, 422, s409=s409, s422=s422), 415: s415}


def _body_doc(media: Sequence[str], schema: dict[str, Any], example: Any, description: str) -> dict[str, Any]:
    """Every accepted media type with its schema; the example once, under the first JSON or text type, so
    generic tooling that cannot encode ``x-application/hl7-v2+er7`` still finds one it can send."""
    shown = next(m for m in media if m.endswith("json") or m.startswith("text/"))
    return {"requestBody": {"required": True, "description": description, "content": {
        m: {"schema": schema, **({"example": example} if m == shown else {})} for m in media}}}


_FHIR_EXAMPLE = {"resourceType": "Observation", "id": "f001", "status": "final",
                 "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
                 "subject": {"reference": "Patient/f001"}, "effectiveDateTime": "2013-04-02T09:30:10+01:00",
                 "valueQuantity": {"value": 6.3, "unit": "mmol/l"}}
_HL7_EXAMPLE = ("MSH|^~\\&|LIS|GZ001|||20240501073000||ORU^R01|M1|P|2.5\r"
                "PID|1||MRN-778812^^^GZ001\rOBR|1||LAB-2024-000123|2345-7^Glucose^LN|||20240501070000\r"
                "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1||||F\r")


def _media(request: Request, accepted: Sequence[str]) -> dict[str, str]:
    """The media type must be one of ``accepted`` (415 otherwise); returns its parameters (``charset``)."""
    header = request.headers.get("content-type", "")
    media, *params = (p.strip() for p in header.split(";"))
    if media.lower() not in accepted:
        raise Problem(415, "unsupported-media-type", "Unsupported content type",
                      f"content type {media or '(none)'!r} is not accepted here; use {', '.join(accepted)}")
    out: dict[str, str] = {}
    for p in params:
        key, _, value = p.partition("=")
        out[key.strip().lower()] = value.strip().strip('"')
    return out


def _zone(tz: str | None) -> tzinfo | None:
    if tz is None:
        return None
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Problem(422, "validation", "Request does not match the schema",
                      f"tz {tz!r} is not an IANA time zone name (e.g. Asia/Shanghai, America/New_York, UTC)",
                      errors=[{"loc": ["query", "tz"], "msg": "unknown time zone"}]) from exc


def _bounded(body: bytes) -> bytes:
    # The app's middleware refuses by Content-Length; a chunked body has none, so check what was read.
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, "payload-too-large", "Request body too large", f"the limit is {MAX_BODY_BYTES} bytes")
    return body


@contextmanager
def _as_problem() -> Iterator[None]:
    """An adapter's refusal is the sender's content, not a record field: its own problem type, with the
    adapter's reason (resource path, or segment and field) as the detail."""
    try:
        yield
    except FormatError as exc:
        extra = {"where": exc.where} if exc.where else {}
        raise Problem(422, "unsupported-content", "The content cannot be taken as results", str(exc),
                      **extra) from exc


def _include(values: list[str] | None) -> frozenset[str]:
    wanted = frozenset(v.strip() for value in values or [] for v in value.split(",") if v.strip())
    unknown = sorted(wanted - set(OPTIONAL_CATEGORIES))
    if unknown:
        raise Problem(422, "validation", "Request does not match the schema",
                      f"include: {', '.join(map(repr, unknown))} is not an Observation category that needs asking "
                      f"for (one of {', '.join(OPTIONAL_CATEGORIES)})",
                      errors=[{"loc": ["query", "include"], "msg": "unknown category"}])
    return wanted


def _out(hospital_id: str, outcomes: list[intake.IntakeOutcome], skipped: list[Skipped] | None = None) -> IntakeOut:
    new = sum(o.status == "accepted" for o in outcomes)
    return IntakeOut(hospital_id=hospital_id, accepted=new, duplicates=len(outcomes) - new,
                     skipped=[SkippedOut(**s.to_obj()) for s in skipped or []], results=[
        IntakeResultOut(result_id=o.result_id, version=o.version, supersedes=o.supersedes,
                        result_status=o.result_status,
                        leaf_hash=o.leaf_hash.hex(), status=o.status)
        for o in outcomes])


@router.post(
    "/hospitals/{hospital_id}/fhir", status_code=status.HTTP_202_ACCEPTED, response_model=IntakeOut,
    summary="Submit FHIR R4 results (the hospital's own token)",
    description="One Observation, DiagnosticReport or ImagingStudy, or a Bundle (collection, transaction, "
                "searchset, batch, document) of them, as `application/fhir+json` (or `application/json`), FHIR "
                "R4 (a `fhirVersion` media type parameter other than 4.0 / 4.3, or an R5 resource, is refused "
                "422 saying so). What is committed is the resource's canonical projection (docs/formats.md). "
                "Observations of the categories vital-signs, social-history, survey, exam, therapy and activity "
                "are not results: they are committed only when named in `include`; every Bundle entry not "
                "committed is listed in `skipped` with its reason." + LINEAGE,
    responses=_responses(_S409, _S422),
    openapi_extra=_body_doc(FHIR_TYPES[:2], {"type": "object"}, _FHIR_EXAMPLE, "A FHIR R4 resource or Bundle"),
)
def submit_fhir(hospital_id: HospitalPath, request: Request, body: RawBody, ledger: ServicesDep,
                principal: PrincipalDep, tz: TzQuery = None, include: IncludeQuery = None) -> IntakeOut:
    authorize(principal, "hospital", hospital_id=hospital_id)
    params = _media(request, FHIR_TYPES)
    if params.get("charset", "utf-8").lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise Problem(415, "unsupported-media-type", "Unsupported content type", "FHIR JSON must be UTF-8")
    zone = _zone(tz)
    categories = _include(include)
    with _as_problem():
        outcomes, skipped = ledger.intake.submit_fhir(hospital_id, _bounded(body), zone, categories,
                                                      params.get("fhirversion"))
    return _out(hospital_id, outcomes, skipped)


@router.post(
    "/hospitals/{hospital_id}/hl7v2", status_code=status.HTTP_202_ACCEPTED, response_model=IntakeOut,
    summary="Submit HL7 v2 ORU^R01 results (the hospital's own token)",
    description="One or more ORU^R01 messages in ER7 encoding (`x-application/hl7-v2+er7`; also "
                "`application/hl7-v2` and `text/plain`), segments separated by `\\r`, `\\n` or `\\r\\n`, "
                "MLLP framing and FHS/BHS batch wrappers allowed; one record per OBR. The `charset` "
                "parameter names the encoding (default UTF-8)." + LINEAGE,
    responses=_responses(_S409, (
        "unsupported-content", "The content cannot be taken as results",
        "message 1 OBR EM-811: OBR-7 (observation date/time) is empty: the result has no time",
        {"where": "message 1 OBR EM-811"})),
    openapi_extra=_body_doc(HL7_TYPES, {"type": "string"}, _HL7_EXAMPLE, "ORU^R01 message(s), ER7"),
)
def submit_hl7v2(hospital_id: HospitalPath, request: Request, body: RawBody, ledger: ServicesDep,
                 principal: PrincipalDep, tz: TzQuery = None) -> IntakeOut:
    authorize(principal, "hospital", hospital_id=hospital_id)
    encoding = _media(request, HL7_TYPES).get("charset", "utf-8")
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise Problem(415, "unsupported-media-type", "Unsupported content type",
                      f"charset {encoding!r} is not a known encoding") from exc
    zone = _zone(tz)
    with _as_problem():
        outcomes = ledger.intake.submit_hl7v2(hospital_id, _bounded(body), zone, encoding)
    return _out(hospital_id, outcomes)
