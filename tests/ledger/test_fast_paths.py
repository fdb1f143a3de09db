"""The ingest fast paths must give exactly the bytes of the reference paths, or step aside.

* ``ResultRecord.canonical_bytes`` (``_canonical_fast``) against ``canonicalize(record.to_obj())``;
* ``leaf_data``'s direct assembly against ``canonicalize`` of the leaf dict;
* ``format_time``'s isoformat spelling against its field-by-field spelling.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, computed_field, field_serializer

from mrledger.ledger import RecordError, ResultRecord
from mrledger.ledger.canonical import canonicalize, sha256
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.leaf import _leaf_data_reference, leaf_data
from mrledger.ledger.records import (
    _ALLOWED_CONTROLS,
    _CONTROL_IN_JSON,
    _PLAIN,
    Coding,
    _canonical_fast,
    _plain_fields,
    format_time,
)

SALT = bytes.fromhex("00112233445566778899aabbccddeeff")


def reference_format_time(value: datetime) -> str:
    value = value.astimezone(UTC)
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


offsets = st.builds(timezone, st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timedelta(minutes=m)))
aware = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets)


@settings(max_examples=1000, deadline=None)
@given(aware)
def test_format_time_equals_reference(value: datetime) -> None:
    assert format_time(value) == reference_format_time(value)


@pytest.mark.parametrize("us", [0, 1, 10, 120000, 999999, 500000])
def test_format_time_fractions(us: int) -> None:
    value = datetime(2024, 5, 1, 7, 0, 0, us, tzinfo=timezone(timedelta(hours=8)))
    assert format_time(value) == reference_format_time(value)


# -- records -------------------------------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=12) | st.sampled_from(
    ["é", "e\u0301", "Å", "\U0001f600", 'a"b\\c', "\ufb01", "\u2028", "x\ty"]
)
numbers = (
    st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1e-7, 1e-4, 5e-324, 1e16, 1.5e16, 4.10, 12.0, 2.0**53])
)
json_keys = st.text(max_size=6) | st.sampled_from(["\U0001f600", "\uffff", "é", "e\u0301"])
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(json_keys, children, max_size=3),
    max_leaves=10,
)
times = st.builds(lambda d: d.isoformat(), aware)
coding = st.fixed_dictionaries({"system": text, "code": text}, optional={"display": text})

observation = st.fixed_dictionaries(
    {"code": coding},
    optional={
        "value": numbers | text | coding | st.booleans(),
        "unit": text,
        "reference_range": st.fixed_dictionaries({}, optional={"low": numbers, "high": numbers, "text": text}),
        "interpretation": text,
        "note": text,
    },
)
contents = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("observations"), "observations": st.lists(observation, min_size=1, max_size=3)},
        optional={"conclusion": text},
    ),
    st.fixed_dictionaries(
        {"type": st.just("imaging-study"), "study_instance_uid": text, "modality": text},
        optional={
            "body_part": text, "accession": text, "conclusion": text,
            "instances": st.lists(st.fixed_dictionaries({
                "sop_instance_uid": text, "pixel_sha256": st.just("ab" * 32)}), max_size=2),
        },
    ),
    st.builds(
        lambda extra: {"type": "fhir-resource", "resource_type": "Observation",
                       "resource": {**extra, "resourceType": "Observation"}},
        st.dictionaries(json_keys, json_values, max_size=4),
    ),
    st.builds(lambda data: {"type": "event", "event": "recognition-decision", "data": data},
              st.dictionaries(json_keys, json_values, max_size=4)),
)
records = st.builds(
    lambda hid, rid, version, kind, code, subject, effective, issued, content: {
        "hospital_id": hid, "result_id": rid, "version": version, "kind": kind, "code": code,
        "subject": subject, "effective": effective, "issued": issued, "status": "final",
        **({"supersedes": version - 1, "status": "amended"} if version > 1 else {}),
        "content": content,
    },
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,8}\Z"), text, st.integers(1, 3),
    st.sampled_from(["lab", "imaging", "ecg", "other"]), coding,
    st.fixed_dictionaries({"value": text}, optional={"system": text}), times, times, contents,
)


def check_record(obj: dict[str, Any], *, generated: bool = True) -> None:
    if generated:
        try:
            record = ResultRecord.model_validate(obj)
        except Exception:  # invalid generated records say nothing about the fast path
            assume(False)
            return
    else:
        record = ResultRecord.model_validate(obj)
    try:
        expected: bytes | type[Exception] = canonicalize(record.to_obj())
    except EncodingError:
        expected = EncodingError
    fast = _canonical_fast(record)
    if fast is not None:
        assert fast == expected
    if expected is EncodingError:
        with pytest.raises(EncodingError):
            record.canonical_bytes()
    else:
        assert record.canonical_bytes() == expected
        assert leaf_data(record, SALT) == _leaf_data_reference(
            record.hospital_id, record.result_id, record.version, SALT.hex(), canonicalize_digest(record))


def canonicalize_digest(record: ResultRecord) -> str:
    return sha256(canonicalize(record.to_obj())).hex()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(records)
def test_canonical_bytes_equal_reference(obj: dict[str, Any]) -> None:
    check_record(obj)


def lab(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "hospital_id": "h-0001", "result_id": "LAB-00000001", "version": 1, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
        "subject": {"system": "urn:mrn", "value": "P1"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00.120+02:00", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 4.2,
             "unit": "mmol/L", "reference_range": {"low": 3.9, "high": 6.1}}]},
    }
    obj.update(changes)
    return obj


def test_the_fast_path_is_taken_for_ordinary_records() -> None:
    record = ResultRecord.from_obj(lab())
    assert _canonical_fast(record) == canonicalize(record.to_obj())
    fhir = ResultRecord.from_obj(lab(content={"type": "fhir-resource", "resource_type": "Observation",
                                              "resource": {"resourceType": "Observation", "z": [1, {"b": None}]}}))
    assert _canonical_fast(fhir) == canonicalize(fhir.to_obj())
    assert set(_PLAIN) >= {ResultRecord, Coding}


def observed(value: Any) -> dict[str, Any]:
    observation = {"code": {"system": "s", "code": "c"}, "value": value}
    return {"content": {"type": "observations", "observations": [observation]}}


@pytest.mark.parametrize(
    "changes",
    [
        {"result_id": "\U0001f600"},
        observed(1e-7),
        observed(-1e-300),
        {"content": {"type": "event", "event": "e", "data": {"\U0001f600": 1, "\uffff": 2, "\ue000": [1.5e-200]}}},
    ],
)
def test_values_outside_the_fast_path(changes: dict[str, Any]) -> None:
    check_record(lab(**changes), generated=False)


@pytest.mark.parametrize("data", [{"x": "\ud800"}, {"\ud800": 1}, {"a": [{"\udc00x": 1}]}],
                         ids=["value", "key", "nested-key"])
def test_lone_surrogates_never_reach_the_canonicaliser(data: dict[str, Any]) -> None:
    """Refused at construction, keys included: pydantic's own ``dict[str, Any]`` check used to turn such a
    key into three U+FFFD, committing a key nobody sent (issue 14 #13)."""
    with pytest.raises(RecordError, match="lone surrogate"):
        ResultRecord.from_obj(lab(content={"type": "event", "event": "e", "data": data}))


def test_a_bad_record_still_names_its_field() -> None:
    with pytest.raises(RecordError) as info:
        ResultRecord.from_obj(lab(code={"system": "s", "code": "a\x01"}))
    assert info.value.field == "code.code"


def test_models_with_their_own_serialisation_take_the_reference_path() -> None:
    class WithSerializer(BaseModel):
        a: str

        @field_serializer("a")
        def _a(self, value: str) -> str:
            return value.upper()

    class WithComputed(BaseModel):
        a: str

        @computed_field  # type: ignore[prop-decorator]
        @property
        def b(self) -> str:
            return self.a

    class WithAlias(BaseModel):
        a: str = Field(serialization_alias="A")

    class WithExclude(BaseModel):
        a: str = Field(exclude=True)

    class WithNested(BaseModel):
        a: WithSerializer

    for cls in (WithSerializer, WithComputed, WithAlias, WithExclude):
        assert _plain_fields(cls) is None, cls
    assert _plain_fields(WithNested) == (("a",), frozenset())  # its member is refused when met
    assert WithSerializer not in _PLAIN


# -- leaf ------------------------------------------------------------------------------------------


ids = st.text(max_size=10) | st.sampled_from(["\ud800", "a\udfffb", '"', "\\", "\x00\x1f\x7f", "\u2028", "é"])


@settings(max_examples=1500, deadline=None)
@given(ids, ids, st.integers(-(2**60), 2**60) | st.booleans())
def test_leaf_data_equals_reference(hospital_id: str, result_id: str, version: int) -> None:
    canonical = b'{"a":1}'
    record: Any = SimpleNamespace(hospital_id=hospital_id, result_id=result_id, version=version,
                                  canonical_bytes=lambda: canonical)
    try:
        expected: bytes | type[Exception] = _leaf_data_reference(
            hospital_id, result_id, version, SALT.hex(), sha256(canonical).hex())
    except EncodingError:
        expected = EncodingError
    if expected is EncodingError:
        with pytest.raises(EncodingError):
            leaf_data(record, SALT)
    else:
        assert leaf_data(record, SALT) == expected
        assert leaf_data(record, bytearray(SALT)) == expected  # type: ignore[arg-type]


def test_leaf_data_reference_is_the_documented_dict() -> None:
    record = ResultRecord.from_obj(lab())
    assert leaf_data(record, SALT) == canonicalize({
        "format": "mrl-leaf/1", "hospital_id": "h-0001", "result_id": "LAB-00000001", "version": 1,
        "salt": SALT.hex(), "content_digest": sha256(record.canonical_bytes()).hex(),
    })


def test_json_control_regex_is_category_cc_minus_tab_cr_lf() -> None:
    regex = {chr(c) for c in range(0x110000) if _CONTROL_IN_JSON.match(chr(c))}
    by_category = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"} - _ALLOWED_CONTROLS
    assert regex == by_category
