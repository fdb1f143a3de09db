"""Receipts: generated vectors (valid, tampered, malformed) and a round trip through build → verify."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mrledger.ledger import Receipt, ResultRecord, build_batch, commit, verify_receipt
from mrledger.ledger.verify import CHECKS

VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors" / "receipt").glob("*.json"))
CASES = [json.loads(p.read_text()) for p in VECTORS]


def test_receipt_vectors_exist() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c["desc"] for c in CASES])
def test_receipt_vector(case: dict[str, Any]) -> None:
    verdict = verify_receipt(json.dumps(case["receipt"]))
    assert verdict.failed == case["want_error"], verdict.to_obj()
    assert verdict.ok == (case["want_error"] is None)
    if case["want_error"] is None:
        assert verdict.status == ("valid" if case["receipt"]["anchor"] else "unanchored")
    assert all(c.name in CHECKS for c in verdict.checks)


TEXT_VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors" / "receipt-text").glob("*.json"))
TEXT_CASES = [json.loads(p.read_text()) for p in TEXT_VECTORS]


def test_receipt_text_vectors_exist() -> None:
    assert len(TEXT_CASES) >= 10, "tests/vectors/receipt-text is empty"


@pytest.mark.parametrize("case", TEXT_CASES, ids=[c["desc"] for c in TEXT_CASES])
def test_receipt_text_vector(case: dict[str, Any]) -> None:
    """Receipts as bytes (docs/receipt.md §1): BOM, invalid UTF-8, duplicate keys, lone surrogates, numbers no
    double holds, depth — what a parsed object cannot show."""
    verdict = verify_receipt(base64.b64decode(case["receipt_base64"]))
    assert verdict.failed == case["want_error"], verdict.to_obj()


def test_trailing_bytes_and_garbage_are_format_failures() -> None:
    good = next(c for c in CASES if c["desc"] == "valid unanchored receipt")["receipt"]
    assert verify_receipt(json.dumps(good) + " {}").failed == "format"
    assert verify_receipt(b"\x00\x01").failed == "format"
    assert verify_receipt("[]").failed == "format"


def test_build_and_verify_every_leaf_of_a_batch() -> None:
    records = [
        ResultRecord.from_obj({
            "hospital_id": "bj-07", "result_id": f"R{i}", "version": 1, "kind": "lab",
            "code": {"system": "http://loinc.org", "code": "2160-0"}, "subject": {"value": f"P{i % 7}"},
            "effective": "2024-01-02T03:04:05Z", "issued": "2024-01-02T05:00:00Z", "status": "final",
            "content": {"type": "observations", "observations": [
                {"code": {"system": "http://loinc.org", "code": "2160-0"}, "value": 70 + i, "unit": "umol/L"}]},
        })
        for i in range(13)
    ]
    salts = [bytes([i]) * 16 for i in range(13)]
    leaves = [commit(r, s) for r, s in zip(records, salts, strict=True)]
    head, tree = build_batch("bj-07", 1, leaves, datetime(2024, 1, 2, 6, tzinfo=UTC))
    for i, (r, s) in enumerate(zip(records, salts, strict=True)):
        receipt = Receipt(r, s, i, leaves[i], tuple(tree.inclusion_proof(i)), head)
        parsed = Receipt.from_json(receipt.to_json())
        assert parsed == receipt
        verdict = verify_receipt(receipt.to_json())
        assert verdict.status == "unanchored" and verdict.failed is None
        # the receipt of one record does not prove another
        other = Receipt(records[(i + 1) % 13], s, i, leaves[i], receipt.audit_path, head)
        assert verify_receipt(other).failed == "leaf-hash"


def test_seq_and_block_number_beyond_uint64_are_format_failures() -> None:
    """The registry stores seq and the anchoring block as uint64: no receipt beyond them can be genuine."""
    good = next(c for c in CASES if c["desc"] == "valid unanchored receipt")["receipt"]
    for seq, ok in ((2**64 - 1, "leaf"), (2**64, "format"), (0, "format")):
        odd = json.loads(json.dumps(good))
        odd["batch"]["seq"] = seq
        failed = verify_receipt(json.dumps(odd)).failed
        assert (failed == "format") == (ok == "format"), (seq, failed)
    anchored = next(c for c in CASES if c["receipt"]["anchor"] and c["want_error"] is None)["receipt"]
    for block, want in ((2**64 - 1, None), (2**64, "format")):
        odd = json.loads(json.dumps(anchored))
        odd["anchor"]["block_number"] = block
        assert verify_receipt(json.dumps(odd)).failed == want, block


@pytest.mark.parametrize("change", [
    {"content": {"type": "event", "event": "e", "data": {"\ud800": 1}}},  # rfc8785 raised UnicodeEncodeError
    {"content": {"type": "event", "event": "e", "data": {1: 1}}},
    {"code": {"\ud800": "x"}},
], ids=["lone-surrogate-key", "int-key", "lone-surrogate-in-typed-object"])
def test_verify_receipt_never_raises_on_a_dict_no_parser_would_produce(change: dict[str, Any]) -> None:
    """Its docstring says a malformed receipt is an ``invalid`` verdict: a caller's dict can hold keys no JSON
    parse yields, and those raised a bare UnicodeEncodeError (issue 14 #13)."""
    good = next(c for c in CASES if c["desc"] == "valid unanchored receipt")["receipt"]
    bad = {**good, "record": {**good["record"], "kind": "other", **change}}
    verdict = verify_receipt(bad)
    assert verdict.failed == "format" and verdict.status == "invalid"
