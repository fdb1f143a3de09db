"""Request and response models of the HTTP API, separate from the ORM and from the ledger's own types.

Why separate: the wire format is a contract with hospitals and doctors; the database and the pure core
may change shape without changing it. Bodies that carry committed content (submissions, verification
requests) are read as raw bytes and parsed strictly (``mrledger.ledger.parse_json``) so the committed content is
exactly what was sent; their models here document the OpenAPI and check the envelope only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from mrledger.http.problems import MEDIA_TYPE, PREFIX
from mrledger.ledger.ids import lookup_id
from mrledger.ledger.records import HOSPITAL_ID_PATTERN, MAX_VERSION, ResultRecord
from mrledger.ledger.status import AnchorStatus, BatchStatus
from mrledger.ledger.verify import SignatureStatus
from mrledger.node.settings import MAX_RECORDS_PER_REQUEST

HEX32 = r"^[0-9a-f]{64}$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
HospitalId = Annotated[str, Field(pattern=f"^{HOSPITAL_ID_PATTERN}$", examples=["gz-001"])]
#: On every hospital or result id a request names to look something up (paths, verify-by-record): NFC, as
#: ingest stored it, so another spelling of the same id finds it; an invisible character (zero-width,
#: bidi control, …) is a 422 naming the parameter, since no stored id holds one (``mrledger.ledger.records.lookup_id``).
LookupId = AfterValidator(lookup_id)

_LEAF = "9f2c1e4b7d0a5f3e8c6b2a1d4e7f0c3b6a9d2e5f8c1b4a7d0e3f6c9b2a5d8e1f"
_ROOT = "3b8e0f1a6c2d9e4b7a0f5c8d1e6b3a9f2c5d8e1b4a7f0c3d6e9b2a5f8c1d4e7b"
_TX = "0x5e1f0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"
_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"

EXAMPLE_RECORD: dict[str, Any] = {
    "hospital_id": "gz-001", "result_id": "LAB-2024-000123", "version": 1, "kind": "lab",
    "code": {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum"},
    "subject": {"system": "urn:gz-001:mrn", "value": "MRN-778812"},
    "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
    "content": {"type": "observations", "observations": [
        {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 5.4, "unit": "mmol/L",
         "reference_range": {"low": 3.9, "high": 6.1}}]},
}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# -- hospitals --------------------------------------------------------------------------------------


class HospitalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": "gz-001", "name": "Guangzhou First People's Hospital",
         "submitters": ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"]}]})

    id: HospitalId
    # At least one visible character: the store refuses a blank name, so the schema says so too.
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=r"\S")]
    submitters: Annotated[list[Annotated[str, Field(pattern=ADDRESS)]], Field(max_length=32)] = Field(
        default_factory=list,
        description="Accounts allowed to anchor this hospital's batches on chain (default: this node's "
                    "anchoring account).")


class HospitalOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "gz-001", "name": "Guangzhou First People's Hospital", "on_chain_registered": True}]})

    id: str
    name: str
    on_chain_registered: bool = Field(description="Whether this call registered the hospital on chain. Always false "
                                                  "under `mrledger serve`: the API holds no admin key, and the "
                                                  "node leading the region puts the hospital and its submitters on "
                                                  "chain within a second, before it seals the hospital's first "
                                                  "batch.")


class HospitalSummary(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "gz-001", "name": "Guangzhou First People's Hospital"}]})

    id: str
    name: str


# -- submission -------------------------------------------------------------------------------------


class SubmissionBatch(BaseModel):
    """Documentation model of the list form of a submission (the route parses the raw body)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"records": [EXAMPLE_RECORD]}]})

    records: Annotated[list[ResultRecord], Field(min_length=1, max_length=MAX_RECORDS_PER_REQUEST)]


class AcceptedOut(_Out):
    result_id: str
    version: int
    leaf_hash: Annotated[str, Field(pattern=HEX32, description="SHA-256 leaf (mrl-leaf/1), hex")]
    status: Literal["accepted", "duplicate"] = Field(
        description="accepted: new to the ledger; duplicate: the ledger held this content (same leaf back).")


class SubmissionOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "accepted": 1, "duplicates": 0,
        "results": [{"result_id": "LAB-2024-000123", "version": 1, "leaf_hash": _LEAF, "status": "accepted"}]}]})

    hospital_id: str
    accepted: int = Field(description="Records new to the ledger.")
    duplicates: int = Field(description="Records the ledger already held with the same content (same leaf back).")
    results: list[AcceptedOut]


# -- results ----------------------------------------------------------------------------------------


class ResultVersionOut(_Out):
    version: int
    status: str
    supersedes: int | None
    leaf_hash: str
    accepted_at: datetime
    batch_seq: int | None
    leaf_index: int | None
    anchor_status: AnchorStatus = Field(description="pending: not sealed yet; sealed: in a batch not sent to the "
                                                    "chain; submitted / included / confirmed: anchoring progress.")


class ResultOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "result_id": "LAB-2024-000123",
        "versions": [{"version": 1, "status": "final", "supersedes": None, "leaf_hash": _LEAF,
                      "accepted_at": "2024-05-01T07:31:02Z", "batch_seq": 17, "leaf_index": 42,
                      "anchor_status": "confirmed"}]}]})

    hospital_id: str
    result_id: str
    versions: list[ResultVersionOut]


class LeafOut(BaseModel):
    index: int
    hash: str


class BatchHeadOut(_Out):
    format: Literal["mrl-batch/1"] = "mrl-batch/1"
    hospital_id: str
    seq: int
    size: int
    root: str
    sealed_at: str


class AnchorSection(BaseModel):
    chain_id: int
    contract: str
    tx_hash: str
    block_number: int
    block_hash: str


class SignatureSection(BaseModel):
    """The receipt's ``signature``: the hospital's ``mrl-batch-sig/1`` signature of the batch head
    (docs/signatures.md §3). Absent on receipts of unsigned batches; never ``null``."""

    alg: str = Field(description="ES256 (ECDSA P-256, DER) or Ed25519", examples=["ES256"])
    chain_id: int
    contract: str = Field(description="The registry that was signed: 0x + 40 lower-case hex digits")
    value: str = Field(description="The signature value, standard base64")
    certificates: list[str] = Field(description="DER certificates in base64, leaf first, then intermediates")


class ReceiptDoc(BaseModel):
    """Documentation model of ``mrl-receipt/1`` (docs/receipt.md); the route returns the receipt's own JSON."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "format": "mrl-receipt/1", "record": EXAMPLE_RECORD, "salt": "00" * 16,
        "leaf": {"index": 42, "hash": _LEAF}, "audit_path": [_ROOT],
        "batch": {"format": "mrl-batch/1", "hospital_id": "gz-001", "seq": 17, "size": 100, "root": _ROOT,
                  "sealed_at": "2024-05-01T07:35:00Z"},
        "anchor": {"chain_id": 31337, "contract": _CONTRACT, "tx_hash": _TX, "block_number": 1234,
                   "block_hash": _TX}}]})

    format: Literal["mrl-receipt/1"]
    record: ResultRecord
    salt: str
    leaf: LeafOut
    audit_path: list[str]
    batch: BatchHeadOut
    anchor: AnchorSection | None = None
    signature: SignatureSection = Field(None, description="Present when the batch is signed")  # type: ignore[assignment]
    extensions: dict[str, Any] = Field(default_factory=dict)
    critical: list[str] = Field(default_factory=list)


class BatchAnchorOut(_Out):
    status: BatchStatus
    chain_id: int | None = None
    contract: str | None = None
    tx_hash: str | None = None
    block_number: int | None = None
    block_hash: str | None = None
    confirmations: int | None = Field(None, description="Blocks on top of the anchoring block, inclusive; only when "
                                                        "this node has a chain configured.")


class BatchDetailOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "seq": 17, "size": 2, "root": _ROOT, "sealed_at": "2024-05-01T07:35:00Z",
        "anchor": {"status": "confirmed", "chain_id": 31337, "contract": _CONTRACT, "tx_hash": _TX,
                   "block_number": 1234, "block_hash": _TX, "confirmations": 12},
        "leaf_hashes": [_LEAF, _ROOT]}]})

    hospital_id: str
    seq: int
    size: int
    root: str
    sealed_at: datetime
    anchor: BatchAnchorOut
    leaf_hashes: list[str]


# -- verification -----------------------------------------------------------------------------------


class VerifyByReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    receipt: ReceiptDoc


class VerifyByRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "result_id": "LAB-2024-000123", "version": 1, "record": EXAMPLE_RECORD}]})

    hospital_id: HospitalId
    result_id: Annotated[str, Field(min_length=1, max_length=128), LookupId]
    version: Annotated[int, Field(ge=1, le=MAX_VERSION,
                                  description="Default: the held record's own version.")] | None = None
    record: dict[str, Any] = Field(description="The result as the doctor holds it (a ResultRecord object).")


EXAMPLE_FHIR: dict[str, Any] = {
    "resourceType": "Observation", "id": "f001", "status": "final",
    "identifier": [{"system": "http://www.bmc.nl/zorgportal/identifiers/observations", "value": "6323"}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8",
                         "display": "Glucose [Moles/volume] in Blood"}]},
    "subject": {"reference": "Patient/f001"}, "effectivePeriod": {"start": "2013-04-02T09:30:10+01:00"},
    "issued": "2013-04-03T15:30:10+01:00", "valueQuantity": {"value": 6.3, "unit": "mmol/l"}}


class VerifyByFhir(BaseModel):
    """The FHIR form: the resource the other hospital sent, mapped and matched by the server."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "fhir": EXAMPLE_FHIR}]})

    hospital_id: HospitalId
    fhir: dict[str, Any] = Field(description="A FHIR R4 Observation, DiagnosticReport or ImagingStudy, or a "
                                             "Bundle holding exactly one such result (a DiagnosticReport with "
                                             "its Observations counts as one).")
    tz: Annotated[str, Field(min_length=1, max_length=64, examples=["Asia/Shanghai"],
                             description="IANA zone for FHIR dates without a time: the one the hospital "
                                         "submitted with (default UTC, as at intake).")] | None = None


class CheckOut(_Out):
    name: str
    ok: bool
    detail: str = ""


class SupersededOut(_Out):
    version: int
    status: str
    issued: str
    batch_seq: int | None = None
    anchor_status: str | None = Field(None, description="pending (not sealed) | sealed | submitted | included | "
                                                         "confirmed")
    block_number: int | None = None
    tx_hash: str | None = None


class ItemOut(_Out):
    """A mutual-recognition catalogue item (``GET /v1/catalogue``; ``recognition.item`` of a verification)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "code": "2345-7", "system": "http://loinc.org", "name": "Glucose [Mass/volume] in Serum or Plasma",
        "category": "clinical-biochemistry", "window_days": 7}]})

    code: str = Field(description="LOINC code of a lab item; our id (`ct-head`) of an imaging item.")
    system: str = Field(description="`http://loinc.org` or `urn:mrledger:catalogue:imaging`.")
    name: str
    category: str
    window_days: int = Field(description="A result is recognised until `issued` + this many days (inclusive).")
    modalities: list[str] | None = Field(None, description="Imaging items: DICOM modalities.")
    body_parts: list[str] | None = Field(None, description="Imaging items: DICOM BodyPartExamined terms or SNOMED "
                                                           "CT codes; empty: any body part.")


class ReasonOut(_Out):
    code: Literal["not-authentic", "revoked", "superseded", "not-final", "not-in-catalogue", "too-old",
                  "hospital-not-eligible", "anchor-pending"]
    detail: str


class RecognitionOut(_Out):
    decision: Literal["recognise", "reorder"] = Field(
        description="recognise: the doctor may accept the result instead of repeating the test; reorder: at "
                    "least one reason below applies.")
    reasons: list[ReasonOut] = Field(description="Every reason that applies, in a fixed order; empty when "
                                                 "recognised.")
    item: ItemOut | None = Field(description="The catalogue item the result is (for a panel: the one with the "
                                             "shortest window); null when not in the catalogue.")
    category: str | None
    items: list[ItemOut] = Field(description="Every matched item (several for a panel or a multi-part study).")
    valid_until: str | None = Field(description="When the result stops being recognised: issued + window.")


class SignerOut(_Out):
    hospital_id: str | None = Field(description="The hospital the certificate names (SAN urn:mrledger:hospital:…)")
    subject: str = Field(description="Certificate subject, RFC 4514")
    issuer: str = Field(description="Issuing CA, RFC 4514")
    serial: str = Field(description="Certificate serial number, lower-case hex")
    not_before: str
    not_after: str
    fingerprint: str = Field(description="SHA-256 of the certificate's DER, lower-case hex")


class SignatureOut(_Out):
    status: SignatureStatus = Field(description="valid | absent (unsigned batch) | not-checked (this node has no "
                                                "trust anchors, or an earlier check failed) | the failure reason")
    alg: str | None = Field(description="ES256 or Ed25519, as the receipt says")
    signer: SignerOut | None = Field(description="Who signed — only once the signature verified (before that the "
                                                 "certificate's subject is an unproven claim).")


_SIGNER: dict[str, Any] = {
    "hospital_id": "gz-001", "subject": "CN=gz-001 batch signing,O=Guangzhou First People's Hospital",
    "issuer": "CN=Guangdong Health Issuing CA,O=Guangdong Health CA", "serial": "5f1c0e7a",
    "not_before": "2024-01-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z", "fingerprint": _LEAF}

_ITEM: dict[str, Any] = {"code": "2345-7", "system": "http://loinc.org",
                         "name": "Glucose [Mass/volume] in Serum or Plasma", "category": "clinical-biochemistry",
                         "window_days": 7}


class VerifyOut(_Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "verdict": "authentic", "hospital_id": "gz-001", "hospital_name": "Guangzhou First People's Hospital",
        "result_id": "LAB-2024-000123", "version": 1, "issued": "2024-05-01T07:30:00Z",
        "anchored_at": "2024-05-01T07:35:14Z", "chain_id": 31337, "contract": _CONTRACT, "tx_hash": _TX,
        "block_number": 1234, "confirmations": 12,
        "superseded_by": {"version": 2, "status": "corrected", "issued": "2024-05-02T09:00:00Z"},
        "failed_check": None,
        "checks": [{"name": "leaf-hash", "ok": True, "detail": ""},
                   {"name": "anchor-root", "ok": True, "detail": ""}],
        "revoked_by": None,
        "recognition": {"decision": "reorder", "reasons": [{"code": "superseded", "detail": "version 2 (corrected, "
                                                                                        "issued 2024-05-02T09:00:00Z) "
                                                                                        "supersedes version 1"}],
                        "item": _ITEM, "category": "clinical-biochemistry", "items": [_ITEM],
                        "valid_until": "2024-05-08T07:30:00Z"},
        "signature": {"status": "valid", "alg": "ES256", "signer": _SIGNER},
        "verification_id": "01JD3S4V6Q8E2N7W0X5K9C1B2A"}]})

    verdict: Literal["authentic", "tampered", "unknown", "pending", "revoked", "cannot-match"] = Field(
        description="authentic: the content is what the hospital anchored and the anchor is confirmed; tampered: "
                    "a check failed; unknown: this ledger cannot vouch for it (result not held, or no chain to "
                    "check against); pending: genuine so far but not (yet) confirmed on chain; revoked: genuine, "
                    "but the hospital has since declared the result entered-in-error (see revoked_by); "
                    "cannot-match (FHIR form): what the doctor holds cannot be decided against what was committed "
                    "— e.g. a report that matches, held with Observations the hospital never committed — the "
                    "failed check (grouping) says why; not a finding of tampering.")
    hospital_id: str | None
    hospital_name: str | None
    result_id: str | None
    version: int | None
    issued: str | None
    anchored_at: datetime | None = Field(description="Timestamp of the anchoring block, read from the chain.")
    chain_id: int | None
    contract: str | None
    tx_hash: str | None
    block_number: int | None
    confirmations: int | None
    superseded_by: SupersededOut | None = Field(description="The newest later version, if any: the result held "
                                                            "may be authentic yet outdated.")
    failed_check: str | None
    checks: list[CheckOut]
    revoked_by: SupersededOut | None = Field(None, description="The version (status entered-in-error) that "
                                                               "revoked the result, and when it was issued.")
    recognition: RecognitionOut | None = Field(None, description="May the doctor accept this result instead "
                                                                 "of repeating the test (docs/recognition.md)?")
    signature: SignatureOut | None = Field(None, description="The hospital's signature of the batch, as this node "
                                                             "checked it (docs/signatures.md). A failed signature "
                                                             "makes the verdict tampered (failed_check signature).")
    verification_id: str | None = Field(None, examples=["01JD3S4V6Q8E2N7W0X5K9C1B2A"],
                                        description="Names this verification for the doctor's decision "
                                                    "(POST /v1/decisions, docs/kpis.md): a ULID.")


# -- OpenAPI helpers --------------------------------------------------------------------------------


class ProblemOut(BaseModel):
    """RFC 9457 problem details. Extension members: ``field`` (invalid record), ``keys`` (conflict),
    ``anchor_status`` (receipt pending), ``errors`` (schema validation)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description=f"Stable problem type, a URN under {PREFIX}")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


_PROBLEM_EXAMPLES: dict[int, tuple[str, str, str, dict[str, Any]]] = {
    400: ("malformed", "Malformed input", "duplicate JSON key 'value'", {}),
    401: ("unauthenticated", "Bearer token required", "this endpoint needs a token", {}),
    403: ("forbidden", "Role not allowed", "role 'doctor' may not use this endpoint; allowed: hospital", {}),
    404: ("not-found", "Not found", "no result 'LAB-2024-000123' at hospital 'gz-001'", {}),
    409: ("conflict", "Conflicts with what the ledger holds", "1 record(s) were submitted before with other content",
          {"keys": [{"hospital_id": "gz-001", "result_id": "LAB-2024-000123", "version": 1}]}),
    413: ("payload-too-large", "Request body too large", "the limit is 16777216 bytes", {}),
    422: ("invalid-record", "A record is not valid", "records[3].content.observations.0.value: number must be finite",
          {"field": "records[3].content.observations.0.value"}),
    429: ("too-many-requests", "Too many anonymous verifications", "this address may verify 5 receipt(s) per "
          "second without a token (bursts of 30); retry later, or verify with a doctor's token", {}),
    503: ("chain-unavailable", "The chain could not be used", "cannot check the chain: ConnectionError", {}),
}


#: The 422 of routes without a body: a path or query parameter failed validation.
PARAM_422 = ("validation", "Request does not match the schema", "Input should be greater than or equal to 1",
             {"errors": [{"loc": ["path", "seq"], "msg": "Input should be greater than or equal to 1"}]})


def problems(*codes: int, **overrides: tuple[str, str, str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting each error status as ``application/problem+json``.
    ``overrides`` (``s409=(name, title, detail, extra)``) replace the default example of a status."""
    schema = ProblemOut.model_json_schema()
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        name, title, detail, extra = overrides.get(f"s{code}", _PROBLEM_EXAMPLES[code])
        example = {"type": PREFIX + name, "title": title, "status": code, "detail": detail, **extra}
        out[code] = {"description": title, "content": {MEDIA_TYPE: {"schema": schema, "example": example}}}
    return out


def inline_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of ``tp`` with every ``$ref`` resolved in place. Used for request bodies the routes
    read raw (FastAPI only puts the models it parses itself into ``components``); the models have no
    recursion, so resolving terminates."""
    schema = TypeAdapter(tp).json_schema(mode="validation")
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[ref.removeprefix("#/$defs/")]), **resolve(rest)}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def json_body(tp: Any, description: str, examples: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body the route reads itself."""
    return {"requestBody": {"required": True, "description": description, "content": {"application/json": {
        "schema": inline_schema(tp), "examples": {k: {"value": v} for k, v in examples.items()}}}}}
