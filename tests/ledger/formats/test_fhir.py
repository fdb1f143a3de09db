"""FHIR R4 adapter against the official HL7 R4 examples (npm ``hl7.fhir.r4.examples@4.0.1``, CC0).

Why real examples: they are what integrators copy, and they hold the shapes a hand-written fixture would
not think of (display-only subjects, text-only codes, bundles whose fullUrls do not end in Type/id,
transaction bundles without ids). Every result example is either accepted — and its leaf is then stable
under every re-spelling of the same resource — or refused with a reason listed here, so a change of
behaviour shows up as a diff of this file.
"""

from __future__ import annotations

import ast
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhir.resources.R4B import get_fhir_model_class

from mrledger.ledger import Receipt, RecordError, ResultRecord, build_batch, commit, verify_receipt
from mrledger.ledger.formats import FormatError, from_fhir
from mrledger.ledger.formats.fhir import project

ROOT = Path(__file__).resolve().parents[3]
_PKG = ROOT / "node_modules" / "hl7.fhir.r4.examples"
#: npm unpacks the tarball's ``package/`` folder into the package directory itself.
EXAMPLES = _PKG / "package" if (_PKG / "package").is_dir() else _PKG
SALT = bytes(range(16))
HOSPITAL = "nl-amc-01"


def _holds_report(path: Path) -> bool:
    entries = json.loads(path.read_text()).get("entry", [])
    return any(e.get("resource", {}).get("resourceType") == "DiagnosticReport" for e in entries)


def _example_files() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    prefixes = ("Observation", "DiagnosticReport", "ImagingStudy")
    files = [p for prefix in prefixes for p in EXAMPLES.glob(f"{prefix}-*.json")]
    files += [p for p in EXAMPLES.glob("Bundle-*.json") if _holds_report(p)]
    return sorted(files, key=lambda p: p.name)


FILES = _example_files()

#: Refused examples and why (substring of the FormatError message). Derived by running the adapter over
#: the package; each reason was checked against the file.
REFUSED = {
    # Issued a year before it was observed: refused since issue 16 (point 3), which the count below reflects.
    "Bundle-dg2.json": "DiagnosticReport/dg2: issued '2014-05-16T10:28:00+01:00' is before effective "
    "'2015-05-26T15:30:10+01:00': a result cannot be issued before it was observed",
    "Bundle-report.json": "DiagnosticReport/report: code has no coding with a system and a code (only the text "
    "'comprehensive bone marrow report')",
    "DiagnosticReport-gingival-mass.json": "subject has only a display name ('Max Jones')",
    "Observation-blood-pressure-cancel.json": "status 'cancelled': the result was never produced",
    "Observation-bmd.json": "has neither effective[x] (or started) nor issued",
    "Observation-decimal.json": "has neither effective[x] (or started) nor issued",
    "Observation-example-TPMT-haplotype-one.json": "status 'unknown'",
    "Observation-example-TPMT-haplotype-two.json": "status 'unknown'",
    "Observation-example-genetics-3.json": "code has no coding with a system and a code "
    "(only the text 'Further analysis')",
    "Observation-example-genetics-4.json": "code has no coding with a system and a code "
    "(only the text 'Allele ABC')",
    "Observation-example-genetics-5.json": "code has no coding with a system and a code "
    "(only the text 'PCR validation')",
    "Observation-example-genetics-brcapat.json": "has neither effective[x] (or started) nor issued",
    "Observation-example-haplotype1.json": "status 'unknown'",
    "Observation-example-haplotype2.json": "status 'unknown'",
    "Observation-eye-color.json": "code has no coding with a system and a code (only the text 'eye color')",
    "Observation-herd1.json": "subject 'Group/herd1' is a Group, not a Patient",
    "Observation-unsat.json": "status 'cancelled'",
    "Observation-vp-oyster.json": "subject has only a display name ('Sonoma oyster farm')",
}
#: 72 Observation/DiagnosticReport/ImagingStudy examples + 10 Bundles holding a DiagnosticReport.
EXPECTED_FILES, EXPECTED_ACCEPTED, EXPECTED_RECORDS = 82, 64, 70

SCHEMA: dict[str, Any] = json.loads((ROOT / "docs" / "receipt.schema.json").read_text())
RECORD_SCHEMA = jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/record"})


def _read(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


def _canonical(records: list[ResultRecord]) -> list[bytes]:
    return [r.canonical_bytes() for r in records]


def test_examples_are_installed() -> None:
    assert EXAMPLES.is_dir(), f"{EXAMPLES} is missing: run npm ci"
    assert len(FILES) == EXPECTED_FILES, [p.name for p in FILES]


def test_acceptance_and_refusal_counts() -> None:
    accepted = records = 0
    refused = set()
    for path in FILES:
        try:
            records += len(from_fhir(path.read_bytes(), HOSPITAL))
            accepted += 1
        except FormatError:
            refused.add(path.name)
    assert refused == set(REFUSED)
    assert (accepted, records) == (EXPECTED_ACCEPTED, EXPECTED_RECORDS)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_example(path: Path) -> None:
    raw = path.read_bytes()
    if path.name in REFUSED:
        with pytest.raises(FormatError) as info:
            from_fhir(raw, HOSPITAL)
        assert REFUSED[path.name] in str(info.value)
        assert isinstance(info.value, RecordError)
        return
    records = from_fhir(raw, HOSPITAL)
    assert records
    obj = json.loads(raw)
    model = get_fhir_model_class(obj["resourceType"]).model_validate(obj)
    spellings = {
        "pretty": json.dumps(obj, indent=4, ensure_ascii=True),
        "keys reversed": json.dumps(_reversed_keys(obj)),
        "fhir.resources round trip": model.model_dump_json(),
        "parsed dict": obj,
    }
    for name, spelling in spellings.items():
        assert _canonical(from_fhir(spelling, HOSPITAL)) == _canonical(records), name
    for record in records:
        assert ResultRecord.from_json(record.to_json()) == record
        assert not list(RECORD_SCHEMA.iter_errors(record.to_obj()))
        resource = record.to_obj()["content"]["resource"]
        assert "meta" not in resource and "text" not in resource
        assert all("meta" not in c and "text" not in c for c in resource.get("contained", []))


# -- what changes the leaf and what does not -----------------------------------------------------------


def _leaf(resource: dict[str, Any]) -> bytes:
    (record,) = from_fhir(resource, HOSPITAL)
    return commit(record, SALT)


def _set(obj: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


TAMPER = [
    ("value", ("valueQuantity", "value"), 6.4),
    ("unit", ("valueQuantity", "unit"), "mg/dL"),
    ("ucum unit", ("valueQuantity", "code"), "mg/dL"),
    ("code", ("code", "coding", 0, "code"), "2339-0"),
    ("subject", ("subject", "reference"), "Patient/f002"),
    ("reference range", ("referenceRange", 0, "high", "value"), 7.0),
    ("status", ("status",), "preliminary"),
    ("interpretation", ("interpretation", 0, "coding", 0, "code"), "N"),
    ("issued", ("issued",), "2013-04-04T15:30:10+01:00"),
]


@pytest.mark.parametrize(("path", "value"), [(p, v) for _, p, v in TAMPER], ids=[n for n, _, _ in TAMPER])
def test_any_change_to_the_result_changes_the_leaf(path: tuple[str | int, ...], value: Any) -> None:
    glucose = _read("Observation-f001.json")  # glucose 6.3 mmol/l, range 3.1-6.2, LOINC 15074-8
    assert _leaf(_set(glucose, path, value)) != _leaf(glucose)


def test_a_change_inside_a_bundled_panel_changes_the_report_leaf() -> None:
    lipids = _read("Bundle-lipids.json")
    changed = _set(lipids, ("entry", 1, "resource", "valueQuantity", "value"), 6.2)  # cholesterol 6.3 → 6.2
    assert _leaf(changed) != _leaf(lipids)


def test_meta_and_narrative_do_not_change_the_leaf() -> None:
    glucose = _read("Observation-f001.json")
    touched = _set(glucose, ("meta",), {"versionId": "7", "lastUpdated": "2024-01-01T00:00:00Z"})
    touched = _set(touched, ("text",), {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"})
    assert _leaf(touched) == _leaf(glucose)


def test_projection_is_the_committed_resource() -> None:
    glucose = _read("Observation-f001.json")
    (record,) = from_fhir(glucose, HOSPITAL)
    assert record.to_obj()["content"]["resource"] == project(glucose)


# -- mapping -------------------------------------------------------------------------------------------


def test_glucose_identity_mapping() -> None:
    (record,) = from_fhir(_read("Observation-f001.json"), HOSPITAL)
    assert record.result_id == "6323"  # identifier[0].value
    assert record.subject.value == "Patient/f001" and record.subject.system is None
    assert (record.code.system, record.code.code) == ("http://loinc.org", "15074-8")
    assert record.to_obj()["effective"] == "2013-04-02T08:30:10Z"  # effectivePeriod.start 09:30:10+01:00
    assert record.to_obj()["issued"] == "2013-04-03T14:30:10Z"
    assert (record.status, record.kind, record.version) == ("final", "other", 1)  # no category: not lab


@pytest.mark.parametrize(
    ("name", "kind"),
    [("Observation-ekg.json", "ecg"), ("Observation-bloodgroup.json", "lab"), ("Bundle-lipids.json", "lab"),
     ("DiagnosticReport-f201.json", "imaging"), ("ImagingStudy-example-xr.json", "imaging")],
)
def test_kind(name: str, kind: str) -> None:
    assert [r.kind for r in from_fhir(_read(name), HOSPITAL)] == [kind]


def test_contained_patient_identifier_is_the_subject() -> None:
    (record,) = from_fhir(_read("Observation-1minute-apgar-score.json"), HOSPITAL)
    assert (record.subject.system, record.subject.value) == ("http://acmehealthcare/org/mrns", "12345")


def test_bundled_observations_are_folded_into_their_report() -> None:
    (record,) = from_fhir(_read("Bundle-lipids.json"), HOSPITAL)
    report = record.to_obj()["content"]["resource"]
    assert [c["id"] for c in report["contained"]] == ["cholesterol", "triglyceride", "hdlcholesterol", "ldlcholesterol"]
    assert [r["reference"] for r in report["result"]] == ["#cholesterol", "#triglyceride", "#hdlcholesterol",
                                                         "#ldlcholesterol"]
    get_fhir_model_class("DiagnosticReport").model_validate(report)  # still valid FHIR


def test_transaction_bundle_without_ids_uses_urn_fullurls() -> None:
    records = from_fhir(_read("Bundle-hla-1.json"), HOSPITAL)
    # 1 report (with the 3 Observations it references) + the 6 Observations no report references.
    assert [r.content.resource_type for r in records] == ["DiagnosticReport"] + ["Observation"] * 6  # type: ignore[union-attr]
    assert records[0].result_id == "urn:uuid:b0a4b18e-94e7-4b1b-8031-c7ae4bdd8db9"
    assert len(records[0].to_obj()["content"]["resource"]["contained"]) == 3


def test_nested_panels_are_folded_transitively() -> None:
    (record,) = from_fhir(_read("Bundle-ghp.json"), HOSPITAL)  # report → 3 panels → 48 members
    assert len(record.to_obj()["content"]["resource"]["contained"]) == 51


def test_amended_result_needs_a_later_version() -> None:
    amended = _set(_read("Observation-f001.json"), ("status",), "amended")
    with pytest.raises(FormatError, match="amended or corrected result must be version 2 or later"):
        from_fhir(amended, HOSPITAL)
    (record,) = from_fhir(amended, HOSPITAL, version=2)
    assert (record.status, record.version, record.supersedes) == ("amended", 2, 1)
    (record,) = from_fhir(amended, HOSPITAL, version={"6323": 5}, supersedes={"6323": 3})
    assert (record.version, record.supersedes) == (5, 3)


MINIMAL = {"resourceType": "Observation", "id": "o", "status": "final", "issued": "2020-01-01T00:00:00Z",
           "code": {"coding": [{"system": "s", "code": "c"}]}}


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({"resourceType": "Patient", "id": "p"}, "a Patient is not a result"),
        ({"resourceType": "Bundle", "id": "h", "type": "history"}, "Bundle type 'history' is not accepted"),
        ({"resourceType": "Bundle", "id": "xyz", "type": "collection", "entry": []},
         "Bundle Bundle/xyz: holds no Observation, DiagnosticReport or ImagingStudy"),
        ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "bogus": 1},
         "not a valid FHIR resource: bogus: Extra inputs are not permitted"),
        ({**MINIMAL}, "has no subject"),
        ({**MINIMAL, "subject": {"reference": "urn:uuid:1c2e0000-0000-0000-0000-000000000000"}},
         "does not resolve, so it cannot be shown to be a Patient"),
        ({**MINIMAL, "subject": {"reference": "Patient/1", "type": "Device"}}, "subject is a Device, not a Patient"),
    ],
    ids=["patient", "history-bundle", "empty-bundle", "unknown-field", "no-subject", "unresolved-subject", "device"],
)
def test_refusals(resource: dict[str, Any], reason: str) -> None:
    with pytest.raises(FormatError) as info:
        from_fhir(resource, HOSPITAL)
    assert reason in str(info.value)


def test_bad_json_is_refused() -> None:
    with pytest.raises(FormatError, match="not FHIR JSON"):
        from_fhir(b'{"resourceType": "Observation", "resourceType": "Bundle"}', HOSPITAL)


def test_fhir_resource_receipt_matches_the_schema() -> None:
    (record,) = from_fhir(_read("Observation-ekg.json"), HOSPITAL)
    leaves = [commit(record, SALT), bytes(32)]
    head, tree = build_batch(HOSPITAL, 1, leaves, datetime(2024, 6, 3, tzinfo=UTC))
    receipt = Receipt(record, SALT, 0, leaves[0], tuple(tree.inclusion_proof(0)), head).to_obj()
    assert verify_receipt(receipt).status == "unanchored"
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert not list(validator.iter_errors(receipt))
    wrong = copy.deepcopy(receipt)
    del wrong["record"]["content"]["resource"]["resourceType"]
    assert list(validator.iter_errors(wrong))


# -- purity --------------------------------------------------------------------------------------------


def test_formats_sources_do_not_import_io_or_clock() -> None:
    """tests/ledger/test_purity.py scans ``ledger/*.py`` only; the adapters keep the same rule."""
    from tests.ledger.test_purity import FORBIDDEN

    sources = sorted((ROOT / "src" / "mrledger" / "ledger" / "formats").glob("*.py"))
    assert sources
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            )
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
