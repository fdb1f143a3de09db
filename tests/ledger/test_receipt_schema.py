"""docs/receipt.schema.json against the receipt vectors and against receipts the core produces.

Why: the schema is what implementers in other languages will validate with, so it must accept every
receipt our verifier accepts as well-formed and refuse the malformed ones — otherwise the spec and the
code have quietly drifted apart.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mrledger.ledger import Receipt, RecordError, ResultRecord, build_batch, commit, verify_receipt

ROOT = Path(__file__).resolve().parents[2]
SCHEMA: dict[str, Any] = json.loads((ROOT / "docs" / "receipt.schema.json").read_text())
VECTORS = sorted((ROOT / "tests" / "vectors" / "receipt").glob("*.json"))
CASES = [(p.stem, json.loads(p.read_text())) for p in VECTORS]

#: Format failures the schema cannot express, by vector file stem, with the reason: a vector whose failure
#: depends on something JSON Schema cannot see (NFC, nesting depth, duplicate keys, trailing bytes,
#: critical ⊆ extensions, supersedes < version, the 1 MiB record bound) belongs here. The byte-level
#: vectors (tests/vectors/receipt-text/) are not JSON values at all and are not schema-checked.
SCHEMA_CANNOT_EXPRESS: dict[str, str] = {
    "record_text_nfd": "NFC",
    "fhir_resource_key_nfd": "NFC (of a key)",
    "fhir_resource_keys_nfc_twins": "two keys equal once NFC-normalised",
    "fhir_resource_depth_65": "nesting depth below the resource",
    "extensions_depth_129": "nesting depth of the document",
}

VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def _errors(obj: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(obj)]


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_format_vector_is_either_refused_or_listed() -> None:
    stems = {stem for stem, case in CASES if case["want_error"] == "format"}
    assert stems, "no format vectors found"
    assert set(SCHEMA_CANNOT_EXPRESS) <= stems, "SCHEMA_CANNOT_EXPRESS names a vector that is not a format failure"


@pytest.mark.parametrize(("stem", "case"), CASES, ids=[stem for stem, _ in CASES])
def test_vector_against_schema(stem: str, case: dict[str, Any]) -> None:
    errors = _errors(case["receipt"])
    if case["want_error"] == "format" and stem not in SCHEMA_CANNOT_EXPRESS:
        assert errors, f"{stem}: schema accepts a receipt the parser refuses"
    else:
        # Valid receipts, and receipts that are well-formed but fail a cryptographic or identity check
        # (leaf-hash, inclusion, batch-identity, critical-extensions): the schema must accept them all.
        assert not errors, errors


def _imaging_receipt() -> dict[str, Any]:
    record = ResultRecord.from_obj({
        "hospital_id": "sh-ruijin.rad", "result_id": "CT-2024-77", "version": 2, "supersedes": 1,
        "kind": "imaging", "code": {"system": "http://loinc.org", "code": "24627-2", "display": "CT Chest"},
        "subject": {"value": "P-1"}, "effective": "2024-06-03T09:15:30.250+08:00",
        "issued": "2024-06-03T11:00:00+08:00", "status": "amended",
        "content": {
            "type": "imaging-study", "study_instance_uid": "1.2.840.113619.2.55.3.604688119",
            "modality": "CT", "body_part": "Chest", "accession": "A-99",
            "instances": [{"sop_instance_uid": f"1.2.3.{i}", "pixel_sha256": f"{i:02x}" * 32} for i in range(3)],
            "conclusion": "Café-au-lait: no acute finding.",
        },
    })
    salt = bytes(range(16, 32))
    leaves = [commit(record, salt), *(bytes([i]) * 32 for i in range(4))]
    head, tree = build_batch(record.hospital_id, 3, leaves, datetime(2024, 6, 3, 4, tzinfo=UTC))
    return Receipt(record, salt, 0, leaves[0], tuple(tree.inclusion_proof(0)), head).to_obj()


def test_imaging_study_receipt_validates() -> None:
    obj = _imaging_receipt()
    assert verify_receipt(obj).status == "unanchored"
    assert not _errors(obj), _errors(obj)
    assert obj["record"]["effective"] == "2024-06-03T01:15:30.25Z"  # fraction kept, trailing zero dropped


def test_imaging_study_without_instances_is_normalised_to_an_empty_list() -> None:
    """The normalised form always carries ``instances``, which is why the schema requires it."""
    obj = _imaging_receipt()
    raw = copy.deepcopy(obj["record"])
    del raw["content"]["instances"]
    assert ResultRecord.from_obj(raw).to_obj()["content"]["instances"] == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("record", "effective"), "2024-05-01T08:30:00+08:00"),  # not UTC
        (("record", "effective"), "2024-05-01T00:30:00.000Z"),  # zero fraction must be omitted
        (("record", "effective"), "2024-05-01T00:30:00.50Z"),  # trailing zero
        (("record", "version"), "1"),
        (("record", "version"), True),
        (("record", "supersedes"), None),  # absent optionals are omitted, never null
        (("record", "code", "display"), None),
        (("batch", "sealed_at"), "2024-05-01T10:05:00+08:00"),
        (("batch", "size"), 0),
        (("leaf", "index"), -1),
        (("anchor",), {"chain_id": 0, "contract": "0x" + "ab" * 20, "tx_hash": "0x" + "cd" * 32,
                       "block_number": 1, "block_hash": "0x" + "ef" * 32}),
        (("critical",), ["x-future"]),  # critical without extensions
    ],
)
def test_schema_refuses_non_normalised_spellings(path: tuple[str, ...], value: Any) -> None:
    good = next(case for stem, case in CASES if stem == "ok_unanchored")["receipt"]
    obj = copy.deepcopy(good)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert _errors(obj), f"schema accepts {path}={value!r}"


@pytest.mark.parametrize(
    ("change", "expressible"),
    [
        ({"version": 2}, True),  # a later version must name what it supersedes
        ({"supersedes": 1}, True),  # version 1 supersedes nothing
        ({"status": "amended"}, True),  # amended needs version >= 2
        ({"kind": "lab", "content": "imaging"}, True),  # imaging-study content needs kind "imaging"
        ({"version": 2, "supersedes": 2}, False),  # supersedes < version: cross-field, verifier only
    ],
)
def test_record_cross_field_rules(change: dict[str, Any], expressible: bool) -> None:
    """The record's model validators, as far as JSON Schema can state them; the rest is documented."""
    imaging = _imaging_receipt()
    record = copy.deepcopy(imaging["record"])
    record.update({"version": 1, "status": "final"})
    del record["supersedes"]
    obj = {**imaging, "record": record}
    assert not _errors(obj)
    record.update({k: (imaging["record"]["content"] if v == "imaging" else v) for k, v in change.items()})
    with pytest.raises(RecordError, match=r"supersedes|status|kind"):
        ResultRecord.from_obj(record)
    assert bool(_errors(obj)) == expressible
