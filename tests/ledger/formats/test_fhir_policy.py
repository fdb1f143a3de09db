"""What the FHIR adapter takes (issue 16, points 4, 6, 7): which Observations are results, what a Bundle's skipped
entries are, document Bundles, and FHIR R5.

Built from the official examples: ``hl7.fhir.r4.examples@4.0.1`` (a patient's transaction Bundle is assembled from
its Patient, Encounter, Claim, vital-sign, social-history, survey and laboratory examples, as a generated patient
record holds them; ``Bundle-father``, the package's document Bundle) and ``hl7.fhir.r5.examples@5.0.0`` (every R5
result example).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mrledger.ledger.formats import FormatError
from mrledger.ledger.formats._fhir_policy import OPTIONAL_CATEGORIES, R5_REFUSAL
from mrledger.ledger.formats.fhir import read_fhir
from tests.ledger.formats.test_fhir import EXAMPLES, ROOT

_R5 = ROOT / "node_modules" / "hl7.fhir.r5.examples"
R5 = _R5 / "package" if (_R5 / "package").is_dir() else _R5
needs_r5 = pytest.mark.skipif(not R5.is_dir(), reason=f"{R5} is absent (run npm ci)")
HID = "nl-test"
#: (example, fullUrl) of the assembled transaction Bundle, in entry order.
PATIENT_RECORD = [
    ("Patient-example.json", None), ("Encounter-example.json", None), ("Claim-100150.json", None),
    ("Observation-blood-pressure.json", None), ("Observation-secondsmoke.json", None),
    ("Observation-date-lastmp.json", None), ("Observation-f001.json", None), ("Observation-bloodgroup.json", None),
]


def _example(name: str, folder: Path = EXAMPLES) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data


def patient_bundle() -> dict[str, Any]:
    """A transaction Bundle shaped like a generated patient record: urn:uuid fullUrls, POST requests."""
    entries = []
    for n, (name, _) in enumerate(PATIENT_RECORD):
        resource = _example(name)
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}", "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_a_patient_record_commits_its_results_and_lists_every_skipped_entry() -> None:
    found = read_fhir(patient_bundle(), HID)
    assert [r.result_id for r in found.records] == ["6323", "Observation/bloodgroup"]
    assert [(s.entry, s.resource_type, s.reason.split(" (")[0]) for s in found.skipped] == [
        (0, "Patient", "a Patient is not a result"),
        (1, "Encounter", "an Encounter is not a result"),
        (2, "Claim", "a Claim is not a result"),
        (3, "Observation", "category vital-signs is not a result"),
        (4, "Observation", "category social-history is not a result"),
        (5, "Observation", "category survey is not a result"),
    ]
    assert all(s.full_url and s.full_url.startswith("urn:uuid:") for s in found.skipped)
    assert "ask with include=vital-signs" in found.skipped[3].reason
    asked = read_fhir(patient_bundle(), HID, include={"vital-signs", "survey"})
    # Observation-blood-pressure's identifier is a urn:uuid value.
    assert [r.result_id for r in asked.records] == ["urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281",
                                                    "Observation/date-lastmp", "6323", "Observation/bloodgroup"]
    assert [s.resource_type for s in asked.skipped] == ["Patient", "Encounter", "Claim", "Observation"]


@pytest.mark.parametrize("category", OPTIONAL_CATEGORIES)
def test_an_observation_that_is_not_a_result_is_refused_unless_asked(category: str) -> None:
    obs = _example("Observation-f001.json")
    obs["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": category}]}]
    with pytest.raises(FormatError, match=f"category {category} is not a result .* ask with include={category}"):
        read_fhir(obs, HID)
    assert len(read_fhir(obs, HID, include={category}).records) == 1
    obs["category"].append({"coding": [{"code": "laboratory"}]})  # a result category wins
    assert len(read_fhir(obs, HID).records) == 1


def test_a_bundle_of_nothing_but_skipped_entries_is_refused_with_the_list() -> None:
    bundle = patient_bundle()
    bundle["entry"] = bundle["entry"][:4]
    with pytest.raises(FormatError, match=r"holds no .* to commit: entry 0 .*a Patient is not a result.*entry 3"):
        read_fhir(bundle, HID)


def _document_with_results() -> dict[str, Any]:
    """``Bundle-father`` (a discharge summary) with a results section naming a lab Observation entry, as an IPS
    carries its results."""
    doc = _example("Bundle-father.json")
    glucose = _example("Observation-f001.json")
    url = "urn:uuid:9d2c2a1e-7f3b-4c55-9a57-000000000001"
    doc["entry"].append({"fullUrl": url, "resource": glucose})
    doc["entry"][0]["resource"]["section"].append({
        "title": "Results", "code": {"coding": [{"system": "http://loinc.org", "code": "30954-2"}]},
        "entry": [{"reference": url}]})
    return doc


def test_document_bundles_give_up_their_results() -> None:
    father = _example("Bundle-father.json")
    assert father["type"] == "document"
    with pytest.raises(FormatError) as info:  # no results in it: refused, saying what each entry was
        read_fhir(father, HID)
    assert "a Composition is not a result" in str(info.value)
    assert "listed in the document's section 'Reason for admission', not in its results section" in str(info.value)
    found = read_fhir(_document_with_results(), HID)
    assert [r.result_id for r in found.records] == ["6323"]
    assert found.records[0].content.resource["valueQuantity"]["value"] == 6.3  # type: ignore[union-attr]
    assert {s.resource_type for s in found.skipped} == {"Composition", "Practitioner", "Patient", "Encounter",
                                                       "Observation", "MedicationRequest", "AllergyIntolerance",
                                                       "MedicationStatement"}


@needs_r5
def test_r5_results_are_taken_as_r4_or_refused_naming_the_version() -> None:
    files = sorted(p for prefix in ("Observation", "DiagnosticReport", "ImagingStudy")
                   for p in R5.glob(f"{prefix}-*.json"))
    assert len(files) >= 55
    outcomes = {"accepted": 0, "r5": 0, "mapping": 0}
    for path in files:
        try:
            read_fhir(path.read_bytes(), HID, include=OPTIONAL_CATEGORIES)
            outcomes["accepted"] += 1
        except FormatError as exc:
            assert "not a valid FHIR resource" not in str(exc), (path.name, str(exc))  # never a bare model error
            outcomes["r5" if R5_REFUSAL in str(exc) else "mapping"] += 1
    assert outcomes["r5"] >= 1 and outcomes["accepted"] >= 40, outcomes
    study = _example("ImagingStudy-example.json", R5)
    with pytest.raises(FormatError, match="this is FHIR R5; this endpoint takes R4"):
        read_fhir(study, HID)


def test_a_declared_fhir_version_is_honoured() -> None:
    obs = _example("Observation-f001.json")
    assert len(read_fhir(obs, HID, fhir_version="4.0").records) == 1
    assert len(read_fhir(obs, HID, fhir_version="4.3").records) == 1
    with pytest.raises(FormatError, match="this is FHIR R5; this endpoint takes R4"):
        read_fhir(obs, HID, fhir_version="5.0")
    with pytest.raises(FormatError, match=r"fhirVersion 3\.0 is not accepted"):
        read_fhir(obs, HID, fhir_version="3.0")
    profiled = copy.deepcopy(obs)
    profiled["meta"] = {"profile": ["http://hl7.org/fhir/StructureDefinition/Observation|5.0.0"]}
    with pytest.raises(FormatError, match="this is FHIR R5"):
        read_fhir(profiled, HID)
    profiled["meta"] = {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]}  # version-neutral
    assert len(read_fhir(profiled, HID).records) == 1
