"""What the FHIR adapter takes, beyond the mapping itself: which Observations are results, which entries of a
Bundle are skipped and why, and which FHIR version a resource is.

**Results and not.** The ledger exists so that a test need not be repeated. Observations of the categories
``laboratory``, ``imaging`` and ``procedure`` (an ECG, a spirometry) are such tests, and so is an Observation
without a category (a hospital's result interface often sends none: ``Observation-f001``, a glucose). The
categories ``vital-signs``, ``social-history``, ``survey`` (HIV status or sexual orientation asked as a
question), ``exam``, ``therapy`` and ``activity`` are not: nobody repeats a blood pressure instead of trusting
another hospital's, and social history and survey answers are sensitive data the ledger should not hold by
default. They are committed only when the hospital asks for them (``include``). An Observation with both a
result category and another (``laboratory`` and ``survey``) is a result. A DiagnosticReport and an
ImagingStudy are always results; Observations folded into a report are part of it whatever their category.

**FHIR version.** The adapter takes R4 (validated with the R4B models, docs/formats.md). A resource that is
declared R5 — ``fhirVersion`` 5.x in the media type, or a ``meta.profile`` of the R5 core — or that validates
only as R5 is refused with that cause in words, not with a model error that never names the version.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

RESULT_CATEGORIES = ("laboratory", "imaging", "procedure")
#: Observation categories (http://terminology.hl7.org/CodeSystem/observation-category) that are not results;
#: committed only when named in ``include``.
OPTIONAL_CATEGORIES = ("vital-signs", "social-history", "survey", "exam", "therapy", "activity")
EVERY_CATEGORY = frozenset(OPTIONAL_CATEGORIES)
#: FHIR versions this adapter takes (``fhirVersion`` media type parameter): R4 and R4B.
ACCEPTED_VERSIONS = ("4.0", "4.3")
_R5_PROFILE = re.compile(r"(hl7\.org/fhir/(R5|5\.0(\.\d+)?)/|\|5\.0(\.\d+)?$)")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A Bundle entry that was not committed, and why (``entry`` is its position in ``Bundle.entry``)."""

    entry: int
    full_url: str | None
    resource_type: str | None
    reason: str

    def to_obj(self) -> dict[str, Any]:
        return {"entry": self.entry, "full_url": self.full_url, "resource_type": self.resource_type,
                "reason": self.reason}


def category_codes(resource: Mapping[str, Any]) -> list[str]:
    return [c["code"] for cc in resource.get("category", []) if isinstance(cc, dict)
            for c in cc.get("coding", []) if isinstance(c, dict) and isinstance(c.get("code"), str)]


def not_a_result(observation: Mapping[str, Any], include: Collection[str]) -> str | None:
    """Why an Observation is not committed under the category policy (module docstring), or None."""
    codes = category_codes(observation)
    if any(c in RESULT_CATEGORIES for c in codes):
        return None
    optional = [c for c in codes if c in OPTIONAL_CATEGORIES]
    if not optional or any(c in include for c in optional):
        return None
    shown = optional[0]
    return (f"category {shown} is not a result (results are laboratory, imaging, procedure or uncategorised "
            f"Observations); to commit it anyway, ask with include={shown}")


def skipped_reason(resource_type: str, bundle_type: str | None) -> str:
    if resource_type == "Composition" and bundle_type == "document":
        return "a Composition is not a result (the results its sections reference are taken from the Bundle)"
    article = "an" if resource_type[:1] in "AEIOU" else "a"
    return f"{article} {resource_type} is not a result"


def declared_r5(resource: Mapping[str, Any], fhir_version: str | None) -> bool:
    """The sender says this is R5: ``fhirVersion=5.x`` in the media type, or an R5 core profile."""
    if fhir_version is not None and fhir_version.startswith("5"):
        return True
    profiles = (resource.get("meta") or {}).get("profile") or []
    return any(isinstance(p, str) and _R5_PROFILE.search(p) for p in profiles)


def r5_validates(resource: Mapping[str, Any]) -> bool:
    """The resource is valid FHIR R5 (fhir.resources' default models): told apart from invalid R4 so that the
    refusal can name the version."""
    from fhir.resources import get_fhir_model_class as r5_model  # only on this (refusal) path

    try:
        r5_model(str(resource["resourceType"])).model_validate(dict(resource))
    except (KeyError, ValidationError, ValueError, TypeError):
        return False
    return True


#: LOINC codes of the Composition sections that hold results (IPS "Results", C-CDA "Relevant diagnostic tests
#: and/or laboratory data"; diagnostic imaging studies).
RESULT_SECTIONS = frozenset({"30954-2", "18748-4"})


def document_sections(composition: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """For a document Bundle: each reference its Composition's sections (nested too) make → (the section's
    title or code, whether it is a results section)."""
    out: dict[str, tuple[str, bool]] = {}
    stack = list(composition.get("section", []))
    while stack:
        section = stack.pop()
        if not isinstance(section, dict):
            continue
        codes = [c.get("code") for c in (section.get("code") or {}).get("coding", []) if isinstance(c, dict)]
        title = section.get("title") or next((c for c in codes if c), "untitled")
        results = any(c in RESULT_SECTIONS for c in codes)
        for entry in section.get("entry", []):
            if isinstance(entry, dict) and isinstance(entry.get("reference"), str):
                known = out.get(entry["reference"])
                out[entry["reference"]] = (title, results or bool(known and known[1]))
        stack.extend(section.get("section", []))
    return out


R5_REFUSAL = "this is FHIR R5; this endpoint takes R4 (4.0.1, or R4B 4.3)"


def summarise(skipped: list[Skipped], limit: int = 5) -> str:
    shown = "; ".join(f"entry {s.entry} ({s.full_url or s.resource_type}): {s.reason}" for s in skipped[:limit])
    return shown + (f"; and {len(skipped) - limit} more" if len(skipped) > limit else "")
