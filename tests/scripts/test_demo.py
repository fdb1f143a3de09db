"""The end-to-end demo (``mrledger demo``) is a newcomer's first walkthrough, asserted, not eyeballed."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mrledger.ledger import verify_receipt
from scripts.demo_ledger import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = io.StringIO()
    summary = run_demo(tmp_path_factory.mktemp("demo"), Console(file=out, width=120))
    return summary, out.getvalue()


def test_demo_succeeds(demo: tuple[dict[str, Any], str]) -> None:
    summary, output = demo
    assert summary["ok"] is True
    assert summary["hospitals"] == ["gz-001", "qd-002"]
    assert summary["records"] == 10
    assert "demo complete" in output


@pytest.mark.anvil
def test_receipt_is_anchored_and_verifies_on_chain(demo: tuple[dict[str, Any], str]) -> None:
    summary, output = demo
    path = Path(summary["receipt_path"])
    assert path.is_file() and path.name == "receipt-gz-001-LAB-GZ-2024-0001.json"
    assert summary["verdict"] == "valid" and summary["on_chain_verdict"] == "valid"
    assert summary["confirmations"] >= 2
    assert verify_receipt(path.read_bytes()).status == "valid"
    assert json.loads(path.read_text())["anchor"]["chain_id"] == 31337
    assert "anchor-root" in output


def test_without_a_chain_the_receipt_is_unanchored(tmp_path: Path) -> None:
    summary = run_demo(tmp_path, Console(file=io.StringIO()), chain=False)
    assert summary["ok"] and summary["verdict"] == "unanchored" and summary["on_chain_verdict"] is None
    assert verify_receipt(Path(summary["receipt_path"]).read_bytes()).status == "unanchored"


def test_tampered_copy_fails_leaf_hash(demo: tuple[dict[str, Any], str]) -> None:
    summary, output = demo
    assert summary["tampered_verdict"] == "invalid" and summary["tampered_failed"] == "leaf-hash"
    verdict = verify_receipt(Path(summary["tampered_path"]).read_bytes())
    assert verdict.failed == "leaf-hash"
    assert "failed check: leaf-hash" in output


def test_each_hospital_sealed_batch_one(demo: tuple[dict[str, Any], str]) -> None:
    summary, _ = demo
    assert {(b["hospital_id"], b["seq"]) for b in summary["batches"]} == {("gz-001", 1), ("qd-002", 1)}
    assert sum(b["size"] for b in summary["batches"]) == summary["records"]


def test_duplicate_submission_returns_same_leaf(demo: tuple[dict[str, Any], str]) -> None:
    summary, _ = demo
    dup = summary["duplicate"]
    assert dup["status"] == "duplicate" and dup["same_leaf"] is True
    first = next(a for a in summary["accepted"]
                 if (a["hospital_id"], a["result_id"], a["version"]) == (dup["hospital_id"], dup["result_id"], 1))
    assert first["leaf_hash"] == dup["leaf_hash"]


def test_demo_covers_imaging_correction_and_synthetic_subjects(demo: tuple[dict[str, Any], str]) -> None:
    summary, _ = demo
    versions = {(a["result_id"], a["version"]) for a in summary["accepted"]}
    assert ("LAB-QD-2024-0101", 1) in versions and ("LAB-QD-2024-0101", 2) in versions
    assert any(rid.startswith("IMG-") for rid, _ in versions)
    record = json.loads(Path(summary["receipt_path"]).read_text(encoding="utf-8"))["record"]
    assert record["subject"]["value"].startswith("SYNTHETIC-")


def test_rerun_starts_from_a_fresh_database(tmp_path: Path) -> None:
    """A second run in the same directory must not trip over the first run's records (no conflicts)."""
    for _ in range(2):
        summary = run_demo(tmp_path, Console(file=io.StringIO()), chain=False)
        assert summary["ok"] and {b["seq"] for b in summary["batches"]} == {1}
