"""The ``event`` content type (ledger/records.py): records of hospitals' event streams (recognition decisions and
encounters, docs/kpis.md). Added, not changed: the encodings of the other content types are the receipt vectors'
business (tests/vectors), which keep verifying; here the new type's own rules, and that receipts carrying it
verify offline and validate against docs/receipt.schema.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mrledger.ledger import Receipt, RecordError, ResultRecord, build_batch, commit, verify_receipt

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "receipt.schema.json").read_text())


def event(**content: Any) -> dict[str, Any]:
    return {"hospital_id": "qd-002.events", "result_id": "decision:01JD3S4V6Q8E2N7W0X5K9C1B2A", "version": 1,
            "kind": "other", "code": {"system": "urn:mrledger:event", "code": "recognition-decision"},
            "subject": {"system": "urn:mrledger:verification", "value": "01JD3S4V6Q8E2N7W0X5K9C1B2A"},
            "effective": "2024-05-02T00:59:30Z", "issued": "2024-05-02T01:00:00Z", "status": "final",
            "content": {"type": "event", "event": "recognition-decision",
                        "data": {"decision": "recognised", "items": [{"code": "2345-7", "price_minor": 500}]},
                        **content}}


def test_an_event_record_is_normalised_and_round_trips() -> None:
    record = ResultRecord.from_obj(event(data={"detail": "Jose\u0301", "n": 1.0}))
    assert record.content.type == "event" and record.content.data["detail"] == "José"  # NFC
    assert ResultRecord.from_json(record.to_json()) == record
    assert json.loads(record.to_json())["content"] == {"data": {"detail": "José", "n": 1.0}, "event":
                                                       "recognition-decision", "type": "event"}


@pytest.mark.parametrize(("content", "field"), [
    ({"event": "Decision"}, "content.event"),
    ({"event": ""}, "content.event"),
    ({"data": {"x": "a\u0007b"}}, "content.data"),
    ({"data": {"x": float("nan")}}, "content.data"),
    ({"data": ["not", "an", "object"]}, "content.data"),
    ({"extra": 1}, "content.extra"),
], ids=["upper-case", "empty", "control-char", "nan", "not-an-object", "unknown-field"])
def test_bad_event_content_is_refused_with_its_field(content: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as exc:
        ResultRecord.from_obj(event(**content))
    assert exc.value.field is not None and exc.value.field.startswith(field), exc.value.field


def test_an_event_receipt_verifies_and_validates_against_the_schema() -> None:
    record = ResultRecord.from_obj(event())
    salt = bytes(range(16))
    leaves = [commit(record, salt), bytes(32)]
    head, tree = build_batch(record.hospital_id, 1, leaves, datetime(2024, 5, 2, 1, 5, tzinfo=UTC))
    obj = Receipt(record, salt, 0, leaves[0], tuple(tree.inclusion_proof(0)), head).to_obj()
    assert verify_receipt(obj).status == "unanchored"  # proof holds, no anchor in this receipt
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert not list(validator.iter_errors(obj))
    obj["record"]["content"]["event"] = "Bad Event"
    assert list(validator.iter_errors(obj))
