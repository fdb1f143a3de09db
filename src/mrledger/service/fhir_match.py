"""When two FHIR results say the same thing: the comparison intake (a resend is a duplicate) and verification (is
the resource a doctor holds the one the hospital committed?) share.

Why not byte equality of the records: the same result travels in spellings a server rewrites without changing
what it says, and a wrong ``tampered`` makes a doctor repeat a test (issue 16, point 5):

* **Equal instants are equal**: ``2013-04-02T09:30:10+01:00`` and ``2013-04-02T08:30:10Z`` (and ``…10.000Z``)
  name one instant. Every full FHIR instant in the committed projection is compared as that instant.
* **A date-only time** (``2013-04-02``) becomes an instant only through the zone the hospital named at intake
  (docs/formats.md), which a doctor does not know: the record's ``effective`` / ``issued`` taken from such a
  value are equal when they are midnight of that date in some UTC offset (−12:00 … +14:00, quarter hours).
* **Grouping** (``report_shell``): a report submitted in a Bundle is committed with its Observations folded
  into ``contained``; the same report held alone carries references instead. The report's own content is
  compared without the Observations, which verification then accounts for separately.

Everything else is compared exactly, as committed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Any

from mrledger.ledger import ResultRecord
from mrledger.ledger.canonical import canonicalize
from mrledger.ledger.formats import FormatError
from mrledger.ledger.formats._common import fhir_instant
from mrledger.ledger.formats.fhir import time_texts
from mrledger.ledger.records import format_time

#: A FHIR instant / dateTime with a time and a UTC offset: the only times whose spelling may differ for one value.
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$")
_LINEAGE_FIELDS = ("version", "supersedes")
_TIME_FIELDS = ("effective", "issued")
#: What a reference to an Observation folded into (or left out of) a report is compared as.
FOLDED = "#observation"
#: UTC offsets in use span −12:00 … +14:00.
_MAX_OFFSET = timedelta(hours=14)


def _instants(value: Any) -> Any:
    """``value`` with every full FHIR instant written once, in UTC (``format_time``)."""
    if isinstance(value, str):
        if _INSTANT.match(value):
            try:
                return format_time(fhir_instant(value, UTC, "time"))
            except FormatError:
                return value
        return value
    if isinstance(value, dict):
        return {k: _instants(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instants(v) for v in value]
    return value


def _body(record: ResultRecord, *, shell: bool = False) -> bytes:
    obj = {k: v for k, v in record.to_obj().items() if k not in _LINEAGE_FIELDS}
    content = obj["content"]
    if content.get("type") == "fhir-resource":
        for key in _TIME_FIELDS:  # compared by ``_times_match``: they depend on the hospital's zone
            obj.pop(key)
        resource = report_shell(content["resource"]) if shell else content["resource"]
        obj["content"] = {**content, "resource": _instants(resource)}
    return canonicalize(obj)


def _date_only(text: str | None) -> bool:
    return text is not None and "T" not in text


def _times_match(candidate: ResultRecord, held: ResultRecord) -> bool:
    if candidate.content.type != "fhir-resource":
        return (candidate.effective, candidate.issued) == (held.effective, held.issued)
    texts = time_texts(candidate.content.resource)
    for name, text in zip(_TIME_FIELDS, texts, strict=True):
        a, b = getattr(candidate, name), getattr(held, name)
        if a == b:
            continue
        # The candidate was mapped with the doctor's zone (UTC by default); the same date in the hospital's.
        if not (_date_only(text) and abs(a - b) <= _MAX_OFFSET and (a - b) % timedelta(minutes=15) == timedelta(0)):
            return False
    return True


def same_content(candidate: ResultRecord, held: ResultRecord) -> bool:
    """The two records say the same thing (version and supersedes aside)."""
    if candidate.canonical_bytes() == held.canonical_bytes():
        return True
    return _body(candidate) == _body(held) and _times_match(candidate, held)


def same_report(candidate: ResultRecord, held: ResultRecord) -> bool:
    """Both are DiagnosticReports that say the same thing once their Observations are set aside
    (``report_shell``): the same report grouped differently (held alone, committed with its Observations in a
    Bundle, or the reverse)."""
    for r in (candidate, held):
        if r.content.type != "fhir-resource" or r.content.resource_type != "DiagnosticReport":
            return False
    return _body(candidate, shell=True) == _body(held, shell=True) and _times_match(candidate, held)


def report_shell(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without its Observations: contained Observations removed, and each reference in ``result``
    (to a folded Observation ``#id``, or to one held elsewhere ``Observation/x``, ``urn:uuid:…``) replaced by
    ``FOLDED``. What is left — codes, subject, times, status, conclusion, performer, the number and order of
    results — is what the report itself says."""
    out = {k: v for k, v in report.items() if k != "contained"}
    kept = [c for c in report.get("contained", []) if c.get("resourceType") != "Observation"]
    if kept:
        out["contained"] = kept
    if "result" in report:
        out["result"] = [{**r, "reference": FOLDED} if isinstance(r, dict) and "reference" in r else r
                         for r in report["result"]]
    return out


def folded_observations(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Observations committed inside a report (its contained Observations)."""
    return [c for c in report.get("contained", []) if isinstance(c, dict) and c.get("resourceType") == "Observation"]


def observation_ids(observation: Mapping[str, Any]) -> list[str]:
    """The result ids an Observation answers to on its own, as ``mrledger.ledger.formats.fhir`` names results: each
    identifier value, and ``Observation/<id>``. Local ids the adapter made up when folding (``obs<n>``) are
    not names anyone holds."""
    ids = [i["value"] for i in observation.get("identifier", []) if isinstance(i, dict) and i.get("value")]
    local = observation.get("id")
    if isinstance(local, str) and not re.fullmatch(r"obs\d+(-1)*", local):
        ids.append(f"Observation/{local}")
    return list(dict.fromkeys(ids))


def aliases(record: ResultRecord) -> list[str]:
    """The ids under which ``record`` must also be findable: those of the Observations folded into a report."""
    if record.content.type != "fhir-resource" or record.content.resource_type != "DiagnosticReport":
        return []
    return [i for o in folded_observations(record.content.resource) for i in observation_ids(o)
            if i != record.result_id]


def _without_refs(value: Any) -> Any:
    """References to Observations compared as ``FOLDED``: inside a report they read ``#id``, alone
    ``Observation/id`` or a fullUrl (a panel's ``hasMember``)."""
    if isinstance(value, dict):
        out = {k: _without_refs(v) for k, v in value.items()}
        ref = value.get("reference")
        if isinstance(ref, str) and (ref.startswith(("#", "urn:uuid:", "urn:oid:")) or "Observation/" in ref):
            out["reference"] = FOLDED
        return out
    if isinstance(value, list):
        return [_without_refs(v) for v in value]
    return value


def _observation_key(observation: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in observation.items() if k not in ("id", "meta", "text")}
    return canonicalize(_instants(_without_refs(body)))


def find_inside(observation: Mapping[str, Any], report: ResultRecord) -> tuple[bool, bool]:
    """(an Observation with one of ``observation``'s ids is folded into ``report``, one of those says the
    same thing). The second is the match; the first without it is a changed value."""
    names = set(observation_ids(observation))
    key = _observation_key(observation)
    named = same = False
    if report.content.type != "fhir-resource":
        return False, False
    for inside in folded_observations(report.content.resource):
        if names & set(observation_ids(inside)):
            named = True
            same = same or _observation_key(inside) == key
    return named, same
