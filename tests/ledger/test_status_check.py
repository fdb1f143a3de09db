"""``check_status`` (issue 18): every verdict a receipt and a status document can give, built here from a
hospital's history by hand — the map, the batches and the receipts — with no store and no node."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mrledger.ledger import Receipt, ResultRecord, build_batch, commit, verify_receipt
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.receipt import STATUS_SECRET_EXTENSION
from mrledger.ledger.status_check import StatusDocument, check_status, receipt_status_key
from mrledger.ledger.statusmap import StatusMap, StatusValue, status_key

H = "bj-07"
T = datetime(2024, 1, 2, 6, tzinfo=UTC)


def rec(version: int, status: str = "final", rid: str = "R1") -> ResultRecord:
    obj: dict[str, Any] = {
        "hospital_id": H, "result_id": rid, "version": version, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2160-0"}, "subject": {"value": "P1"},
        "effective": "2024-01-02T03:04:05Z", "issued": "2024-01-02T05:00:00Z", "status": status,
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2160-0"}, "value": 70 + version, "unit": "umol/L"}]}}
    if version > 1:
        obj["supersedes"] = version - 1
    return ResultRecord.from_obj(obj)


class History:
    """One result's versions, one batch each, and the map after every batch."""

    def __init__(self) -> None:
        self.salts = {v: bytes([v]) * 16 for v in range(1, 5)}
        self.key = status_key(H, "R1", self.salts[1])
        self.map = StatusMap()
        self.receipts: dict[int, Receipt] = {}
        self.docs: dict[int, StatusDocument] = {}

    def add(self, version: int, status: str = "final") -> None:
        r = rec(version, status)
        leaf = commit(r, self.salts[version])
        head, tree = build_batch(H, version, [leaf], T)
        ext = {} if version == 1 else {STATUS_SECRET_EXTENSION: self.salts[1].hex()}
        self.receipts[version] = Receipt(r, self.salts[version], 0, leaf, tuple(tree.inclusion_proof(0)), head,
                                         extensions=ext)
        self.map.apply({self.key: StatusValue.for_record(version, status, leaf)})
        self.docs[version] = StatusDocument(H, self.key, head, self.map.root, self.map.prove(self.key), None)


@pytest.fixture
def history() -> History:
    h = History()
    h.add(1)
    return h


def test_current_superseded_withdrawn(history: History) -> None:
    assert check_status(history.receipts[1], history.docs[1]).kind == "current"
    history.add(2)
    got = check_status(history.receipts[1], history.docs[2])
    assert (got.kind, got.version, got.as_of) == ("superseded", 2, 2)
    assert check_status(history.receipts[2], history.docs[2]).kind == "current"
    history.add(3, "entered-in-error")
    for v in (1, 2, 3):
        got = check_status(history.receipts[v], history.docs[3])
        assert (got.kind, got.version) == ("withdrawn", 3)
    assert "this version" in check_status(history.receipts[3], history.docs[3]).detail


def test_a_document_older_than_the_receipt_is_stale(history: History) -> None:
    history.add(2)
    assert check_status(history.receipts[2], history.docs[1]).kind == "stale"


def test_documents_that_contradict_the_receipt_are_invalid(history: History) -> None:
    r, doc = history.receipts[1], history.docs[1]
    # Another key (another result's entry, or a made-up one).
    assert check_status(r, dataclasses.replace(doc, key=bytes(32))).kind == "invalid"
    # A root the proof does not lead to.
    assert check_status(r, dataclasses.replace(doc, map_root=bytes(32))).kind == "invalid"
    # The key absent from a map that must hold it.
    empty = StatusMap({bytes(31) + b"\x01": StatusValue(1, "current", bytes(32))})
    absent = dataclasses.replace(doc, map_root=empty.root, proof=empty.prove(history.key))
    assert check_status(r, absent).kind == "invalid"
    # The same version committed with another leaf.
    forged = StatusMap({history.key: StatusValue(1, "current", b"\x07" * 32)})
    other_leaf = dataclasses.replace(doc, map_root=forged.root, proof=forged.prove(history.key))
    assert "another leaf" in check_status(r, other_leaf).detail
    # A map behind the receipt's own version while claiming a later batch.
    history.add(2)
    behind = dataclasses.replace(history.docs[1], batch=history.docs[2].batch)
    assert check_status(history.receipts[2], behind).kind == "invalid"


def test_a_later_receipt_without_its_secret_cannot_name_its_key(history: History) -> None:
    history.add(2)
    bare = dataclasses.replace(history.receipts[2], extensions={})
    assert receipt_status_key(bare) is None
    assert check_status(bare, history.docs[2]).kind == "unknown"
    with pytest.raises(EncodingError):
        receipt_status_key(dataclasses.replace(history.receipts[2], extensions={STATUS_SECRET_EXTENSION: "zz"}))


def test_the_document_round_trips_and_is_parsed_strictly(history: History) -> None:
    doc = history.docs[1]
    assert StatusDocument.from_obj(doc.to_obj()) == doc
    for change in ({"extra": 1}, {"format": "mrl-status-proof/9"}, {"hospital_id": "other"},
                   {"proof": "00"}, {"proof": "0"}, {"key": "ab"}, {"map_root": None}):
        with pytest.raises(EncodingError):
            StatusDocument.from_obj({**doc.to_obj(), **change})


def test_a_malformed_status_secret_is_a_format_failure_for_the_verifier_and_the_schema(history: History) -> None:
    """The one extension this version defines is parsed by the receipt parser as the JSON Schema states it:
    both refuse the same receipts (tests/ledger/test_receipt_schema.py keeps them in step)."""
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "receipt.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    history.add(2)
    good = json.loads(history.receipts[2].to_json())
    assert verify_receipt(good).failed is None and not list(validator.iter_errors(good))
    for bad in ("AB" * 16, "ab" * 15, 5):
        spoiled = {**good, "extensions": {STATUS_SECRET_EXTENSION: bad}}
        assert verify_receipt(spoiled).failed == "format"
        assert list(validator.iter_errors(spoiled))
