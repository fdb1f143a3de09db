"""Records, canonical bytes and leaf commitments: what must and must not change a leaf."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from mrledger.ledger import RecordError, ResultRecord, commit, leaf_data
from mrledger.ledger.canonical import canonicalize, parse_json
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.records import MAX_OBSERVATIONS, MAX_RECORD_BYTES

SALT = bytes.fromhex("00112233445566778899aabbccddeeff")


def base() -> dict[str, Any]:
    return {
        "hospital_id": "gz-001", "result_id": "R-1", "version": 1, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "718-7", "display": "Hémoglobine"},
        "subject": {"system": "urn:gz:mrn", "value": "P-1"},
        "effective": "2024-05-01T08:30:00+08:00", "issued": "2024-05-01T10:00:00+08:00", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "718-7"}, "value": 4.10, "unit": "g/dL",
             "reference_range": {"low": 12, "high": 16.5}}]},
    }


def leaf_of(obj: dict[str, Any] | str) -> bytes:
    record = ResultRecord.from_json(obj) if isinstance(obj, str) else ResultRecord.from_obj(obj)
    return commit(record, SALT)


def test_known_answer_canonical_bytes() -> None:
    # RFC 8785: keys sorted by UTF-16 code units, shortest round-trip numbers, times normalised to UTC.
    got = ResultRecord.from_obj(base()).canonical_bytes()
    assert got.startswith(b'{"code":{"code":"718-7","display":"H\xc3\xa9moglobine","system":"http://loinc.org"}')
    assert b'"value":4.1}' in got and b'"low":12' in got
    assert b'"effective":"2024-05-01T00:30:00Z"' in got


def test_leaf_data_is_versioned_and_salted() -> None:
    data = json.loads(leaf_data(ResultRecord.from_obj(base()), SALT))
    assert data["format"] == "mrl-leaf/1"
    assert data["salt"] == SALT.hex()
    assert set(data) == {"format", "hospital_id", "result_id", "version", "salt", "content_digest"}


@pytest.mark.parametrize(
    "variant",
    [
        # whitespace and key order
        lambda: json.dumps(dict(reversed(list(base().items()))), indent=4),
        # \u escapes instead of raw UTF-8
        lambda: json.dumps(base(), ensure_ascii=True),
        # number spellings: 4.10 vs 4.1 vs 41e-1, 12 vs 12.0
        lambda: json.dumps(base()).replace("4.1", "41e-1").replace('"low": 12', '"low": 12.0'),
        # Unicode normalisation: decomposed é (e + U+0301) is the same text as precomposed é
        lambda: json.dumps(base(), ensure_ascii=False).replace("\u00e9", "e\u0301"),
        # the same instant in another offset
        lambda: json.dumps(base()).replace("2024-05-01T08:30:00+08:00", "2024-05-01T00:30:00Z"),
        # explicit null for an absent optional field
        lambda: json.dumps({**base(), "supersedes": None}),
    ],
    ids=["whitespace-key-order", "unicode-escapes", "number-spelling", "nfc", "utc-offset", "null-vs-absent"],
)
def test_representation_does_not_change_the_leaf(variant: Any) -> None:
    assert leaf_of(variant()) == leaf_of(base())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("content", "observations", 0, "value"), 4.11),
        (("content", "observations", 0, "unit"), "mg/dL"),
        (("content", "observations", 0, "reference_range", "high"), 16.6),
        (("subject", "value"), "P-2"),
        (("status",), "preliminary"),
        (("code", "code"), "718-8"),
        (("issued",), "2024-05-01T10:00:01+08:00"),
        (("result_id",), "R-2"),
    ],
)
def test_every_field_is_committed(path: tuple[Any, ...], value: Any) -> None:
    obj = base()
    target: Any = obj
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    assert leaf_of(obj) != leaf_of(base())


def test_salt_hides_the_record() -> None:
    record = ResultRecord.from_obj(base())
    assert commit(record, SALT) != commit(record, bytes(16))
    with pytest.raises(EncodingError):
        commit(record, b"short")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": 0}, "version"),
        ({"status": "done"}, "status"),
        ({"kind": "pathology"}, "kind"),
        ({"hospital_id": "has space"}, "hospital_id"),
        ({"effective": "2024-05-01T08:30:00"}, "effective"),
        ({"supersedes": 1}, "supersedes"),
        ({"version": 2}, "supersedes"),
        ({"version": 2, "supersedes": 2}, "supersedes"),
        ({"status": "amended"}, "status"),
        ({"unexpected": 1}, "unexpected"),
        ({"subject": {"value": ""}}, "subject.value"),
        ({"result_id": "a\x00b"}, "result_id"),
    ],
)
def test_bad_records_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as info:
        ResultRecord.from_obj({**base(), **change})
    assert info.value.field == field


@pytest.mark.parametrize(
    ("value", "reason"),
    [(float("inf"), "finite"), (2**60, "portable"), ([1], "valid")],
)
def test_bad_values_name_the_nested_field(value: Any, reason: str) -> None:
    obj = base()
    obj["content"]["observations"][0]["value"] = value
    with pytest.raises(RecordError) as info:
        ResultRecord.from_obj(obj)
    assert info.value.field == "content.observations.0.value"
    assert reason in str(info.value)


def test_bounds_are_enforced() -> None:
    obj = base()
    obs = obj["content"]["observations"][0]
    obj["content"]["observations"] = [copy.deepcopy(obs) for _ in range(MAX_OBSERVATIONS + 1)]
    with pytest.raises(RecordError, match=r"content\.observations"):
        ResultRecord.from_obj(obj)
    obj = base()
    obj["content"]["observations"] = [
        {**copy.deepcopy(obs), "note": "x" * 4000} for _ in range(MAX_RECORD_BYTES // 4000 + 1)
    ][:MAX_OBSERVATIONS]
    with pytest.raises(RecordError, match="limit"):
        ResultRecord.from_obj(obj)


def test_imaging_content_requires_imaging_kind() -> None:
    study = {"type": "imaging-study", "study_instance_uid": "1.2.3", "modality": "CT",
             "instances": [{"sop_instance_uid": "1.2.3.4", "pixel_sha256": "ab" * 32}]}
    ResultRecord.from_obj({**base(), "kind": "imaging", "content": study})
    with pytest.raises(RecordError, match="kind"):
        ResultRecord.from_obj({**base(), "content": study})


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":2}', '{"a":NaN}', '{"a":Infinity}', '{"a":1} x', b'{"a":"\xff"}', "[1,"],
    ids=["duplicate-key", "nan", "infinity", "trailing-data", "bad-utf8", "truncated"],
)
def test_strict_parsing(text: str | bytes) -> None:
    with pytest.raises(EncodingError):
        parse_json(text)
    with pytest.raises(RecordError):
        ResultRecord.from_json(text)


def test_records_are_immutable_and_round_trip() -> None:
    record = ResultRecord.from_obj(base())
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError on frozen models
        record.version = 2  # type: ignore[misc]
    again = ResultRecord.from_json(record.to_json())
    assert again == record and again.canonical_bytes() == record.canonical_bytes()
    assert canonicalize(parse_json(record.to_json())) == record.canonical_bytes()


def test_copies_are_revalidated_and_recanonicalised() -> None:
    record = ResultRecord.from_obj(base())
    before = record.canonical_bytes()
    copy_ = record.model_copy(update={"result_id": "R-2"})
    assert b'"result_id":"R-2"' in copy_.canonical_bytes() and record.canonical_bytes() == before
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        record.model_copy(update={"version": 0})
