"""FHIR R4 results → ledger records: Observation, DiagnosticReport, ImagingStudy and Bundles of them.

What is committed is the resource itself, as a *canonical projection* (``content.type = "fhir-resource"``),
not a lossy summary: a FHIR result's components, panels and interpretations are what a receiving doctor
reads. The record's other fields (code, subject, times, status) are the ledger's index into it.

The projection must give one leaf per result however the JSON was spelt, so it is built from the
``fhir.resources`` R4B model's own serialisation (which normalises ``+00:00`` to ``Z``, base64 line
breaks, decimals) rather than from the submitted text, and ``meta`` and ``text`` (server bookkeeping and
generated narrative, both rewritten by servers on every copy) are dropped from every resource in it.
R4B models validate R4 results: the result resources did not change between R4 and R4B, and fhir.resources
8 ships no R4 package. Mapping tables and refusal reasons: docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from mrledger.ledger.canonical import parse_json
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.formats._common import (
    FormatError,
    VersionArg,
    build_record,
    fhir_span,
    issued_not_before_effective,
    lineage,
)
from mrledger.ledger.formats._fhir_policy import (
    ACCEPTED_VERSIONS,
    EVERY_CATEGORY,
    R5_REFUSAL,
    RESULT_CATEGORIES,
    Skipped,
    declared_r5,
    document_sections,
    not_a_result,
    r5_validates,
    skipped_reason,
    summarise,
)
from mrledger.ledger.formats._fhir_refs import (
    Index,
    Resource,
    contained,
    deep_copy,
    fold,
    reference_type,
    report_observations,
    without_history,
)
from mrledger.ledger.records import Kind, ResultRecord, Status, format_time

RESULT_TYPES = ("Observation", "DiagnosticReport", "ImagingStudy")
#: ``document``: a patient summary (IPS) travels as one; its results are taken out of it (the Composition is
#: skipped, the Observations and reports its sections reference are entries of the Bundle).
BUNDLE_TYPES = ("collection", "transaction", "searchset", "batch", "document")
#: Dropped from every resource (top level and contained) before committing; see the module docstring.
VOLATILE = ("meta", "text")

STATUS: dict[str, Status] = {
    "final": "final", "amended": "amended", "appended": "amended", "corrected": "corrected",
    "entered-in-error": "entered-in-error", "preliminary": "preliminary", "registered": "preliminary",
    "partial": "preliminary", "available": "final",
}
REFUSED_STATUS = {
    "cancelled": "status 'cancelled': the result was never produced, so there is nothing to commit",
    "unknown": "status 'unknown': the sender does not know whether the result is final, so it cannot be committed",
}
#: LOINC ECG codes and the IEEE 11073 MDC ECG code the R4 examples use (Observation-ekg).
ECG_CODES = frozenset({
    ("http://loinc.org", "11524-6"), ("http://loinc.org", "8601-7"), ("http://loinc.org", "34534-8"),
    ("http://loinc.org", "18844-1"), ("urn:oid:2.16.840.1.113883.6.24", "131328"),
})
#: DiagnosticReport.category → kind: HL7 v2 table 0074 (diagnostic service section) and the SNOMED /
#: LOINC radiology codes the examples use. Anything else is "other" unless the report's results decide.
REPORT_CATEGORY: dict[str, Kind] = {
    **dict.fromkeys(("LAB", "CH", "HM", "MB", "MCB", "MYC", "PAR", "SR", "VR", "BLB", "CP", "SP", "PAT",
                     "TX", "SC", "IMM", "CG", "OSL", "HLA"), "lab"),
    **dict.fromkeys(("RAD", "CT", "MR", "US", "NMR", "NMS", "RX", "CUS", "OUS", "VUS", "XRC", "394914008",
                     "LP29684-5"), "imaging"),
    **dict.fromkeys(("EC",), "ecg"),
}
OBSERVATION_CATEGORY: dict[str, Kind] = {"laboratory": "lab", "imaging": "imaging"}


@dataclass(frozen=True, slots=True)
class FhirResults:
    """What one FHIR input yields: its records, and every Bundle entry that was not committed with why."""

    records: list[ResultRecord]
    skipped: list[Skipped] = field(default_factory=list)


def from_fhir(
    data: bytes | str | Mapping[str, Any],
    hospital_id: str,
    *,
    version: VersionArg = 1,
    supersedes: VersionArg | None = None,
    default_tz: tzinfo = UTC,
    include: Collection[str] = EVERY_CATEGORY,
) -> list[ResultRecord]:
    """One record per DiagnosticReport, standalone Observation and ImagingStudy in ``data`` (``read_fhir``,
    which also says what was skipped). As a library function it maps every Observation category; HTTP intake
    applies the category policy (``include``, ledger/formats/_fhir_policy.py)."""
    return read_fhir(data, hospital_id, version=version, supersedes=supersedes, default_tz=default_tz,
                     include=include).records


def read_fhir(
    data: bytes | str | Mapping[str, Any],
    hospital_id: str,
    *,
    version: VersionArg = 1,
    supersedes: VersionArg | None = None,
    default_tz: tzinfo = UTC,
    include: Collection[str] = (),
    fhir_version: str | None = None,
) -> FhirResults:
    """One record per DiagnosticReport, standalone Observation and ImagingStudy in ``data``, and the Bundle
    entries skipped (not results: an Encounter, a Claim, a vital sign not asked for with ``include``).

    ``version``/``supersedes``: see ``mrledger.ledger.formats._common.lineage`` (an ``amended`` or ``corrected``
    resource needs version ≥ 2, which only the caller knows). ``default_tz`` applies to FHIR dates and
    times without an offset. ``include``: Observation categories that are not results but are to be committed
    anyway. ``fhir_version``: the media type's ``fhirVersion`` parameter, if any. All or nothing: if one result
    of a Bundle is refused, the Bundle is, so a partial submission never looks complete.
    """
    resource = _load(data)
    rtype = resource.get("resourceType")
    where = _name(resource)
    if fhir_version is not None and not fhir_version.startswith(ACCEPTED_VERSIONS) and not fhir_version.startswith("5"):
        raise FormatError(f"fhirVersion {fhir_version} is not accepted: this endpoint takes R4 (4.0.1, or R4B 4.3)")
    if declared_r5(resource, fhir_version):
        raise FormatError(R5_REFUSAL, where=where)
    if rtype == "Bundle":
        return _from_bundle(resource, hospital_id, version, supersedes, default_tz, include)
    if rtype not in RESULT_TYPES:
        raise FormatError(
            f"a {rtype} is not a result (expected Observation, DiagnosticReport, ImagingStudy or a Bundle of them)",
            where=where,
        )
    normal = _normalise(resource, where)
    if rtype == "Observation" and (reason := not_a_result(normal, include)) is not None:
        raise FormatError(reason, where=where)
    index = Index([(None, normal)])
    return FhirResults([_record(normal, None, index, [], hospital_id, version, supersedes, default_tz)])


def project(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical projection of one resource: what ``content.resource`` commits. Public so that a
    receiving hospital can recompute it from the FHIR resource it was shown."""
    projection: dict[str, Any] = _strip(_normalise(dict(resource), _name(resource)))
    return projection


# -- input -------------------------------------------------------------------------------------------


def _load(data: bytes | str | Mapping[str, Any]) -> Resource:
    if isinstance(data, Mapping):
        obj: Any = deep_copy(dict(data))
    else:
        try:
            obj = parse_json(data)
        except EncodingError as exc:
            raise FormatError(f"not FHIR JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("resourceType"), str):
        raise FormatError("not a FHIR resource: a JSON object with a 'resourceType' is expected")
    return obj


def _name(resource: Mapping[str, Any]) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) else str(resource.get("resourceType"))


def _normalise(resource: Resource, where: str) -> Resource:
    """Validate against the R4B model and return its serialisation: the one spelling we commit."""
    try:
        model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except KeyError as exc:
        raise FormatError(f"unknown resourceType {resource['resourceType']!r}", where=where) from exc
    except (ValidationError, ValueError, TypeError) as exc:
        if r5_validates(resource):
            raise FormatError(f"{R5_REFUSAL}; as R4: {_first_error(exc)}", where=where) from exc
        raise FormatError(f"not a valid FHIR resource: {_first_error(exc)}", where=where) from exc
    normal: Resource = parse_json(model.model_dump_json())
    return normal


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc}: {first['msg']}" if loc else str(first["msg"])
    return str(exc)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        is_resource = "resourceType" in value
        return {k: _strip(v) for k, v in value.items() if not (is_resource and k in VOLATILE)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


# -- bundles -----------------------------------------------------------------------------------------


def _from_bundle(
    bundle: Resource, hospital_id: str, version: VersionArg, supersedes: VersionArg | None, default_tz: tzinfo,
    include: Collection[str],
) -> FhirResults:
    """Every result of a Bundle. Only result entries are validated (each with the R4B model): an Encounter or
    a Claim in a patient's transaction Bundle is skipped with its reason, not able to refuse the results."""
    where = _name(bundle)
    btype = bundle.get("type")
    if btype not in BUNDLE_TYPES:
        raise FormatError(
            f"Bundle type {btype!r} is not accepted (expected one of {', '.join(BUNDLE_TYPES)})",
            where=where,
        )
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise FormatError("not a valid FHIR resource: entry: Input should be a valid list", where=where)
    positions: list[int] = []
    entries: list[tuple[str | None, Resource]] = []
    skipped: list[Skipped] = []
    for i, entry in enumerate(raw):
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        full_url = full_url if isinstance(full_url, str) else None
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            skipped.append(Skipped(i, full_url, None, "the entry holds no resource"))
            continue
        if resource["resourceType"] in RESULT_TYPES:
            try:
                resource = _normalise(resource, _name(resource))
            except FormatError as exc:
                raise FormatError(f"entry {i} ({full_url or _name(resource)}): {exc}", where=where) from exc
        positions.append(i)
        entries.append((full_url, resource))
    index = Index(entries)
    folded = report_observations(index)
    inside = {pos for found in folded.values() for pos in found}
    sections = _sections(index) if btype == "document" else {}
    records: list[ResultRecord] = []
    for pos, (full_url, resource) in enumerate(entries):
        rtype = resource["resourceType"]
        if pos in inside:
            continue
        reason = skipped_reason(rtype, btype) if rtype not in RESULT_TYPES else (
            not_a_result(resource, include) if rtype == "Observation" else None)
        if reason is None and rtype == "Observation" and pos in sections and not sections[pos][1] \
                and not any(c in RESULT_CATEGORIES for c in _category_codes(resource)):
            reason = (f"listed in the document's section {sections[pos][0]!r}, not in its results section, "
                      "and not categorised as a result")
        if reason is not None:
            skipped.append(Skipped(positions[pos], full_url, rtype, reason))
            continue
        try:
            records.append(
                _record(resource, full_url, index, folded.get(pos, []), hospital_id, version, supersedes, default_tz)
            )
        except FormatError as exc:
            raise FormatError(f"entry {positions[pos]} ({full_url or _name(resource)}): {exc}", where=where) from exc
    skipped.sort(key=lambda s: s.entry)
    if not records:
        detail = f": {summarise(skipped)}" if skipped else ""
        raise FormatError(f"holds no Observation, DiagnosticReport or ImagingStudy to commit{detail}",
                          where=f"Bundle {where}")
    return FhirResults(records, skipped)


def _sections(index: Index) -> dict[int, tuple[str, bool]]:
    """A document Bundle's entries (by position) that its Composition lists, with their section: an Observation
    in "Reason for admission" is part of a narrative, one in "Results" a result."""
    composition = next((r for _, r in index.entries if r["resourceType"] == "Composition"), None)
    if composition is None:
        return {}
    out: dict[int, tuple[str, bool]] = {}
    for reference, section in document_sections(composition).items():
        pos = index.find(reference)
        if pos is not None:
            out[pos] = section
    return out


# -- one result --------------------------------------------------------------------------------------


def _record(
    resource: Resource,
    full_url: str | None,
    index: Index,
    pulled: list[int],
    hospital_id: str,
    version: VersionArg,
    supersedes: VersionArg | None,
    default_tz: tzinfo,
) -> ResultRecord:
    rtype = resource["resourceType"]
    where = _name(resource)
    status = _status(resource, where)
    result_id = _result_id(resource, full_url, where)
    members = [index.entries[p][1] for p in pulled]
    members += [c for c in resource.get("contained", []) if c.get("resourceType") == "Observation"]
    committed = fold(resource, pulled, index, where)
    if pulled:
        committed = _normalise(committed, where)  # the folded report must itself be valid FHIR
    effective, issued = _times(resource, default_tz, where)
    v, s = lineage(result_id, version, supersedes)
    obj: dict[str, Any] = {
        "hospital_id": hospital_id,
        "result_id": result_id,
        "version": v,
        "kind": _kind(resource, members),
        "code": _code(resource, where),
        "subject": _subject(resource, index, where),
        "effective": format_time(effective),
        "issued": format_time(issued),
        "status": status,
        "content": {"type": "fhir-resource", "resource_type": rtype, "resource": _strip(committed)},
    }
    if s is not None:
        obj["supersedes"] = s
    return build_record(obj, where=where)


def _status(resource: Resource, where: str) -> Status:
    raw = resource.get("status")
    if raw in REFUSED_STATUS:
        raise FormatError(REFUSED_STATUS[raw], where=where)
    if raw not in STATUS:
        raise FormatError(f"status {raw!r} is not a {resource['resourceType']} result status", where=where)
    return STATUS[raw]


def _result_id(resource: Resource, full_url: str | None, where: str) -> str:
    """Business identifier, else ``Type/id``, else a bundle entry's ``urn:uuid:``/``urn:oid:`` fullUrl
    (globally unique by construction, as in transaction bundles whose resources have no id yet)."""
    for identifier in resource.get("identifier", []):
        if isinstance(identifier.get("value"), str) and identifier["value"]:
            return str(identifier["value"])
    if isinstance(resource.get("id"), str):
        return f"{resource['resourceType']}/{resource['id']}"
    if full_url and full_url.startswith(("urn:uuid:", "urn:oid:")):
        return full_url
    raise FormatError("has neither an identifier nor an id, so the result cannot be named", where=where)


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if c.get("system") and c.get("code")]


def _coding(c: dict[str, Any]) -> dict[str, Any]:
    out = {"system": c["system"], "code": c["code"]}
    if c.get("display"):
        out["display"] = c["display"]
    return out


def _code(resource: Resource, where: str) -> dict[str, Any]:
    if resource["resourceType"] == "ImagingStudy":
        candidates = [c for pc in resource.get("procedureCode", []) for c in _codings(pc)]
        candidates += [c for c in resource.get("modality", []) if c.get("system") and c.get("code")]
        candidates += [s["modality"] for s in resource.get("series", []) if s.get("modality", {}).get("code")
                       and s["modality"].get("system")]
        if not candidates:
            raise FormatError("has no procedureCode or modality coding to name the study", where=where)
        return _coding(candidates[0])
    codings = _codings(resource.get("code"))
    if not codings:
        text = (resource.get("code") or {}).get("text")
        detail = f" (only the text {text!r})" if text else ""
        raise FormatError(f"code has no coding with a system and a code{detail}", where=where)
    return _coding(codings[0])


def _category_codes(resource: Resource) -> list[str]:
    return [c["code"] for cc in resource.get("category", []) for c in cc.get("coding", []) if c.get("code")]


def _is_ecg(observation: Resource) -> bool:
    codes = {(c["system"], c["code"]) for c in _codings(observation.get("code"))}
    sampled = "valueSampledData" in observation or any(
        "valueSampledData" in c for c in observation.get("component", [])
    )
    return sampled or bool(codes & ECG_CODES)


def _observation_kind(observation: Resource) -> Kind:
    if _is_ecg(observation):
        return "ecg"
    for code in _category_codes(observation):
        if code in OBSERVATION_CATEGORY:
            return OBSERVATION_CATEGORY[code]
    return "other"


def _kind(resource: Resource, members: list[Resource]) -> Kind:
    """Observation: ECG code or waveform → ecg, else its category. Report: its category (v2 table
    0074), else what its results agree on, else imaging if it references a study, else other."""
    rtype = resource["resourceType"]
    if rtype == "ImagingStudy":
        return "imaging"
    if rtype == "Observation":
        return _observation_kind(resource)
    for code in _category_codes(resource):
        if code in REPORT_CATEGORY:
            return REPORT_CATEGORY[code]
    kinds = {_observation_kind(m) for m in members}
    if len(kinds) == 1 and kinds != {"other"}:
        return kinds.pop()
    return "imaging" if resource.get("imagingStudy") else "other"


def time_texts(resource: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The texts the record's ``effective`` and ``issued`` come from (``effective`` standing in for a missing
    ``issued`` and the reverse): public so that verification can tell a time that was only a date, whose
    instant depends on the zone the hospital named."""
    effective = _effective_text(resource)
    issued = resource.get("issued")
    issued = issued if isinstance(issued, str) else None
    return effective or issued, issued or effective


def _effective_text(resource: Mapping[str, Any]) -> str | None:
    effective: str | None = None
    for key, path in (("effectiveDateTime", ()), ("effectiveInstant", ()), ("effectivePeriod", ("start",)),
                      ("effectivePeriod", ("end",)), ("started", ())):
        value: Any = resource.get(key)
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, str):
            effective = value
            break
    if effective is None:
        events = (resource.get("effectiveTiming") or {}).get("event") or []
        effective = events[0] if events else None
    return effective


def _times(resource: Resource, default_tz: tzinfo, where: str) -> tuple[datetime, datetime]:
    """effective[x] (a Period's start, a Timing's first event) or ImagingStudy.started; issued. Either
    stands in for the other when only one is present (documented): both are required by the record."""
    effective = _effective_text(resource)
    issued = resource.get("issued")
    issued = issued if isinstance(issued, str) else None
    first = effective or issued
    if first is None:
        raise FormatError("has neither effective[x] (or started) nor issued: the result has no time", where=where)
    eff = fhir_span(first, default_tz, "effective")
    iss = fhir_span(issued, default_tz, "issued") if issued else eff
    if effective is not None and issued:
        issued_not_before_effective(eff, iss, ("effective", "issued"), (effective, issued), where)
    return eff[0], iss[0]


def _subject(resource: Resource, index: Index, where: str) -> dict[str, Any]:
    """The patient: ``subject.identifier``, else the identifier of the Patient the reference resolves to
    (contained or in the bundle), else the literal reference itself (``Patient/f001``)."""
    ref = resource.get("subject")
    if not isinstance(ref, dict):
        raise FormatError("has no subject: a result must name the patient it belongs to", where=where)
    declared = ref.get("type")
    if declared and declared != "Patient":
        raise FormatError(f"subject is a {declared}, not a Patient", where=where)
    identifier = ref.get("identifier") or {}
    if identifier.get("value"):
        return _identifier(identifier)
    literal = ref.get("reference")
    if not isinstance(literal, str):
        shown = f" ({ref['display']!r})" if ref.get("display") else ""
        raise FormatError(f"subject has only a display name{shown}; it needs a reference or an identifier", where=where)
    target = contained(resource, literal)
    if target is None and not literal.startswith("#"):
        pos = index.find(literal)
        target = index.entries[pos][1] if pos is not None else None
    rtype = target["resourceType"] if target is not None else reference_type(literal)
    if rtype is None:
        raise FormatError(f"subject {literal!r} does not resolve, so it cannot be shown to be a Patient", where=where)
    if rtype != "Patient":
        raise FormatError(f"subject {literal!r} is a {rtype}, not a Patient", where=where)
    for ident in (target or {}).get("identifier", []):
        if ident.get("value"):
            return _identifier(ident)
    if literal.startswith("#"):
        raise FormatError(f"subject {literal!r} is a contained Patient without an identifier", where=where)
    return {"value": without_history(literal)}


def _identifier(identifier: dict[str, Any]) -> dict[str, Any]:
    out = {"value": identifier["value"]}
    if identifier.get("system"):
        out["system"] = identifier["system"]
    return out
