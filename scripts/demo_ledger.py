"""End-to-end demo on a throw-away SQLite database and anvil chain: submit, seal, anchor, receipt, verify, tamper.

Why it exists: it is the shortest path from a fresh clone to seeing the whole promise of the project —
a hospital commits results, a patient carries a receipt away, and anyone can check it offline and see a
single changed digit caught, with no server to set up. ``mrledger demo`` runs it; tests call ``run_demo``
directly, so the demo cannot silently rot.

Every patient identifier here is synthetic (``SYNTHETIC-…`` under a ``urn:mrledger:demo`` system): a demo
must never look like it might contain a real person's data.

Run:  .venv/bin/python scripts/demo_ledger.py [--data-dir DIR]     (default ./.mrledger/demo)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a plain script (``make run``), the repository root is not on sys.path; put it there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from mrledger.ledger import ResultRecord, Verdict, verify_receipt
from mrledger.store import Accepted, Store
from mrledger.store.crypto import MasterKey, write_master_key_file

DEFAULT_DATA_DIR = Path(".mrledger/demo")
DB_NAME = "demo.db"
LOINC = "http://loinc.org"
#: An obviously synthetic identifier system: nobody can mistake these subjects for real patients.
SUBJECT_SYSTEM = "urn:mrledger:demo:synthetic-patient"

HOSPITALS = (
    ("gz-001", "Guangzhou First People's Hospital"),
    ("qd-002", "Qingdao Municipal Hospital"),
)
#: The result whose receipt the demo hands to the "patient", verifies and then tampers with.
RECEIPT_OF = ("gz-001", "LAB-GZ-2024-0001")


def _lab(hospital: str, result_id: str, patient: str, code: str, display: str, value: float | int, unit: str,
         low: float | int, high: float | int, effective: str, issued: str, *, version: int = 1,
         status: str = "final", interpretation: str | None = None, note: str | None = None) -> ResultRecord:
    """One single-observation lab result, as a hospital LIS would export it (local +08:00 times)."""
    observation: dict[str, Any] = {
        "code": {"system": LOINC, "code": code, "display": display},
        "value": value, "unit": unit, "reference_range": {"low": low, "high": high},
    }
    if interpretation:
        observation["interpretation"] = interpretation
    if note:
        observation["note"] = note
    obj: dict[str, Any] = {
        "hospital_id": hospital, "result_id": result_id, "version": version, "kind": "lab",
        "code": {"system": LOINC, "code": code, "display": display},
        "subject": {"system": SUBJECT_SYSTEM, "value": patient},
        "effective": effective, "issued": issued, "status": status,
        "content": {"type": "observations", "observations": [observation]},
    }
    if version > 1:
        obj["supersedes"] = version - 1
    return ResultRecord.from_obj(obj)


def _imaging(hospital: str, result_id: str, patient: str) -> ResultRecord:
    """A chest CT: the record fingerprints the pixel data instead of carrying it."""
    instances = [
        {"sop_instance_uid": f"2.25.{900000000 + i}",
         "pixel_sha256": hashlib.sha256(f"synthetic CT slice {i}".encode()).hexdigest()}
        for i in range(1, 4)
    ]
    return ResultRecord.from_obj({
        "hospital_id": hospital, "result_id": result_id, "version": 1, "kind": "imaging",
        "code": {"system": LOINC, "code": "24627-2", "display": "CT Chest"},
        "subject": {"system": SUBJECT_SYSTEM, "value": patient},
        "effective": "2024-05-06T10:05:00+08:00", "issued": "2024-05-06T14:40:00+08:00", "status": "final",
        "content": {
            "type": "imaging-study", "study_instance_uid": "2.25.123456789012345678901234567890",
            "modality": "CT", "body_part": "Chest", "accession": "ACC-GZ-2024-7781", "instances": instances,
            "conclusion": "No acute cardiopulmonary abnormality.",
        },
    })


def demo_records() -> dict[str, list[ResultRecord]]:
    """The first submission of each hospital (the correction of qd-002 arrives later, see ``correction``)."""
    gz, qd = "gz-001", "qd-002"
    p1, p2, p3 = "SYNTHETIC-GZ-0001", "SYNTHETIC-GZ-0002", "SYNTHETIC-QD-0001"
    return {
        gz: [
            _lab(gz, "LAB-GZ-2024-0001", p1, "2345-7", "Glucose [Mass/volume] in Serum or Plasma", 5.6, "mmol/L",
                 3.9, 6.1, "2024-05-06T07:40:00+08:00", "2024-05-06T09:12:00+08:00"),
            _lab(gz, "LAB-GZ-2024-0002", p1, "718-7", "Hemoglobin [Mass/volume] in Blood", 132, "g/L",
                 115, 150, "2024-05-06T07:40:00+08:00", "2024-05-06T08:55:00+08:00"),
            _lab(gz, "LAB-GZ-2024-0003", p2, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", 88, "µmol/L",
                 57, 111, "2024-05-06T08:10:00+08:00", "2024-05-06T10:02:00+08:00"),
            _lab(gz, "LAB-GZ-2024-0004", p2, "1742-6", "Alanine aminotransferase [Enzymatic activity/volume]",
                 58, "U/L", 9, 50, "2024-05-06T08:10:00+08:00", "2024-05-06T10:02:00+08:00", interpretation="H"),
            _imaging(gz, "IMG-GZ-2024-0005", p1),
        ],
        qd: [
            _lab(qd, "LAB-QD-2024-0101", p3, "2823-3", "Potassium [Moles/volume] in Serum or Plasma", 5.9, "mmol/L",
                 3.5, 5.3, "2024-05-07T08:00:00+08:00", "2024-05-07T09:30:00+08:00", interpretation="H"),
            _lab(qd, "LAB-QD-2024-0102", p3, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 6.4, "%",
                 4.0, 6.0, "2024-05-07T08:00:00+08:00", "2024-05-07T11:15:00+08:00", interpretation="H"),
            _lab(qd, "LAB-QD-2024-0103", p3, "2345-7", "Glucose [Mass/volume] in Serum or Plasma", 7.2, "mmol/L",
                 3.9, 6.1, "2024-05-07T08:00:00+08:00", "2024-05-07T09:30:00+08:00", interpretation="H"),
            _lab(qd, "LAB-QD-2024-0104", p3, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", 71, "µmol/L",
                 41, 81, "2024-05-07T08:00:00+08:00", "2024-05-07T09:30:00+08:00"),
        ],
    }


def correction() -> ResultRecord:
    """Version 2 of the qd-002 potassium: the first sample was haemolysed, the redraw is normal."""
    return _lab("qd-002", "LAB-QD-2024-0101", "SYNTHETIC-QD-0001", "2823-3",
                "Potassium [Moles/volume] in Serum or Plasma", 4.2, "mmol/L", 3.5, 5.3,
                "2024-05-07T10:20:00+08:00", "2024-05-07T11:05:00+08:00", version=2, status="corrected",
                note="Version 1 sample haemolysed; result from redrawn sample.")


def _step(console: Console, n: int, title: str) -> None:
    console.rule(f"[bold cyan]Step {n}: {title}", align="left")


def _accepted_table(title: str, accepted: Sequence[Accepted]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("hospital", "result", "version", "status", "leaf hash"):
        table.add_column(col)
    for a in accepted:
        style = "yellow" if a.status == "duplicate" else "green"
        table.add_row(a.hospital_id, a.result_id, str(a.version), f"[{style}]{a.status}",
                      a.leaf_hash.hex()[:16] + "…")
    return table


def _print_verdict(console: Console, verdict: Verdict) -> None:
    for check in verdict.checks:
        mark = "[green]✓" if check.ok else "[red]✗"
        console.print(f"  {mark}[/] {check.name}" + (f"  [dim]{check.detail}" if check.detail else ""))
    colour = {"valid": "green", "unanchored": "yellow", "invalid": "red"}[verdict.status]
    failed = f" (failed check: [bold]{verdict.failed}[/])" if verdict.failed else ""
    console.print(f"  verdict: [bold {colour}]{verdict.status}[/]{failed}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def run_demo(data_dir: Path, console: Console, *, chain: bool = True) -> dict[str, Any]:
    """Run the whole story against a fresh database in ``data_dir`` and return what happened.

    The summary (hospitals, record and batch figures, receipt paths, verdict statuses) is what the tests
    assert on; the console output is for people.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / DB_NAME

    _step(console, 1, "fresh database")
    for stale in (db, db.with_name(DB_NAME + "-wal"), db.with_name(DB_NAME + "-shm")):
        stale.unlink(missing_ok=True)
    key_file = data_dir / "master.key"  # a fresh database, a fresh key: encrypted at rest like a node's
    write_master_key_file(key_file, MasterKey.generate())
    store = Store.open(f"sqlite:///{db}", master_key=key_file)
    console.print(f"SQLite database [bold]{db}[/] (migrated to head)")
    try:
        return _story(store, data_dir, console, chain) | {"data_dir": str(data_dir), "database": str(db)}
    finally:
        store.engine.dispose()


def _story(store: Store, data_dir: Path, console: Console, chain: bool) -> dict[str, Any]:
    _step(console, 2, "register hospitals")
    for hospital_id, name in HOSPITALS:
        store.register_hospital(hospital_id, name)
        console.print(f"  [bold]{hospital_id}[/]  {name}")

    _step(console, 3, "submit results (patient identifiers are synthetic)")
    accepted: list[Accepted] = []
    for hospital_id, records in demo_records().items():
        accepted += store.submit(hospital_id, records)
    console.print(_accepted_table("first submissions", accepted))

    _step(console, 4, "a corrected version 2 supersedes version 1")
    fixed = correction()
    accepted += store.submit(fixed.hospital_id, [fixed])
    console.print(f"  {fixed.result_id} v{fixed.version} status={fixed.status} supersedes v{fixed.supersedes}; "
                  "both versions stay in the ledger, the receipt names the version it proves")
    console.print(_accepted_table("correction", accepted[-1:]))

    _step(console, 5, "resubmit a record: submission is idempotent")
    hospital_id, result_id = RECEIPT_OF
    original = next(a for a in accepted if (a.hospital_id, a.result_id) == RECEIPT_OF)
    retry = next(r for r in demo_records()[hospital_id] if r.result_id == result_id)
    [again] = store.submit(hospital_id, [retry])
    same_leaf = again.leaf_hash == original.leaf_hash
    console.print(_accepted_table("resubmission", [again]))
    console.print(f"  same leaf as the first time: [bold]{same_leaf}[/] (same salt, so the same receipt)")

    _step(console, 6, "seal each hospital's pending results into a batch")
    heads = [head for h, _ in HOSPITALS if (head := store.seal(h, max_size=1000)) is not None]
    table = Table(title="batches", title_justify="left")
    for col in ("hospital", "seq", "size", "root", "sealed at"):
        table.add_column(col)
    for head in heads:
        table.add_row(head.hospital_id, str(head.seq), str(head.size), head.root.hex()[:16] + "…",
                      head.sealed_at.isoformat(timespec="seconds"))
    console.print(table)

    anchored: dict[str, Any] = {}
    if chain:
        _step(console, 7, "anchor the batch roots on a local chain (anvil) and wait for confirmation")
        anchored = _anchor_on_local_chain(store, console)

    _step(console, 8, "issue the patient's receipt")
    receipt = store.receipt(hospital_id, result_id)
    if receipt is None:
        raise RuntimeError(f"{result_id} was not sealed into a batch")
    receipt_path = data_dir / f"receipt-{_safe(hospital_id)}-{_safe(result_id)}.json"
    receipt_path.write_text(receipt.to_json() + "\n", encoding="utf-8")
    console.print(f"  wrote [bold]{receipt_path}[/]: leaf {receipt.leaf_index} of batch "
                  f"{receipt.batch.hospital_id}#{receipt.batch.seq} (size {receipt.batch.size}), "
                  f"{len(receipt.audit_path)} audit-path hashes, "
                  + ("anchored" if receipt.anchor else "not anchored on chain yet"))

    _step(console, 9, "verify the receipt offline (nothing but the file)" + (", then on chain" if chain else ""))
    verdict = verify_receipt(receipt_path.read_bytes())
    _print_verdict(console, verdict)
    on_chain_status, confirmations = None, None
    if chain:
        on_chain = anchored["verify"](receipt_path.read_bytes())
        console.print("  [bold]on chain[/] (JSON-RPC " + anchored["rpc_url"] + "):")
        _print_verdict(console, on_chain)
        on_chain_status, confirmations = on_chain.status, on_chain.extra.get("confirmations")
        anchored["stop"]()

    _step(console, 10, "tamper with a copy and verify again")
    doctored = json.loads(receipt_path.read_text(encoding="utf-8"))
    observation = doctored["record"]["content"]["observations"][0]
    before, observation["value"] = observation["value"], 4.8
    tampered_path = receipt_path.with_name(receipt_path.stem + ".tampered.json")
    tampered_path.write_text(json.dumps(doctored, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    console.print(f"  changed the glucose value {before} → {observation['value']} in [bold]{tampered_path}[/]")
    tampered = verify_receipt(tampered_path.read_bytes())
    _print_verdict(console, tampered)

    expected = "valid" if chain else "unanchored"
    ok = same_leaf and verdict.status == expected and tampered.failed == "leaf-hash" \
        and on_chain_status in (None, "valid")
    console.rule("[bold green]demo complete" if ok else "[bold red]demo did not go as expected", align="left")
    return {
        "ok": ok,
        "hospitals": [h for h, _ in HOSPITALS],
        "records": len(accepted),
        "accepted": [{"hospital_id": a.hospital_id, "result_id": a.result_id, "version": a.version,
                      "status": a.status, "leaf_hash": a.leaf_hash.hex()} for a in accepted],
        "duplicate": {"hospital_id": hospital_id, "result_id": result_id, "status": again.status,
                      "leaf_hash": again.leaf_hash.hex(), "same_leaf": same_leaf},
        "batches": [{"hospital_id": h.hospital_id, "seq": h.seq, "size": h.size, "root": h.root.hex()}
                    for h in heads],
        "receipt_path": receipt_path,
        "tampered_path": tampered_path,
        "verdict": verdict.status,
        "on_chain_verdict": on_chain_status,
        "confirmations": confirmations,
        "tampered_verdict": tampered.status,
        "tampered_failed": tampered.failed,
    }


def _anchor_on_local_chain(store: Store, console: Console) -> dict[str, Any]:
    """Start a throwaway anvil, deploy the registry, register the hospitals with a hub key, and run the
    anchoring worker until every sealed batch is confirmed. Returns an on-chain verifier and a stopper."""
    from eth_account import Account
    from web3 import Web3

    from mrledger.anchoring.deploy import deploy_and_record, ensure_hospital_on_chain
    from mrledger.anchoring.node import AnvilNode
    from mrledger.anchoring.verify import verify_on_chain
    from mrledger.anchoring.worker import AnchorWorker, WorkerConfig

    node = AnvilNode(block_time=None).start()
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    admin, hub = (Account.from_key(k) for k in node.private_keys[:2])
    deployment = deploy_and_record(store, w3, admin)
    console.print(f"  anvil at {node.rpc_url} (chain {deployment.chain_id}); registry deployed at "
                  f"[bold]{deployment.contract}[/]")
    for hospital_id, name in HOSPITALS:
        ensure_hospital_on_chain(w3, deployment.contract, admin, hospital_id, name, [hub.address])
    console.print(f"  hospitals registered on chain with submitter {hub.address} (a dev key of anvil's)")
    worker = AnchorWorker(store, w3, deployment.contract, hub, WorkerConfig(confirmations=2))
    started = time.monotonic()
    for _ in range(20):
        report = worker.step()
        if report.sent:
            console.print(f"  sent {report.sent} batch root(s) in one transaction")
        if report.confirmed:
            console.print(f"  {report.confirmed} batch(es) confirmed at depth 2")
        if not store.pending_count() and not worker.outbox.unconfirmed():
            break
        node.rpc("evm_mine")
    console.print(f"  sealed → confirmed in {time.monotonic() - started:.2f} s")

    def check(data: bytes) -> Verdict:
        return verify_on_chain(data, w3)

    return {"verify": check, "stop": node.stop, "rpc_url": node.rpc_url}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"where the demo database and receipts go (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--no-chain", action="store_true", help="skip anchoring on a local anvil chain")
    args = parser.parse_args(argv)
    summary = run_demo(args.data_dir, Console(), chain=not args.no_chain)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
