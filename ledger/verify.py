"""Offline receipt verification: everything a doctor can check with nothing but the receipt.

The low-level functions in ``ledger.merkle`` raise; this module turns them into a structured verdict
naming every check and the first one that failed, because "invalid" alone tells a doctor nothing about
whether the record was altered, the proof truncated or the file is simply not a receipt. Checks that
need a chain (is the root really anchored? how deep?) are added by the anchoring layer on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ledger.canonical import parse_json
from ledger.errors import MrLedgerError
from ledger.leaf import commit
from ledger.merkle import verify_inclusion
from ledger.receipt import KNOWN_CRITICAL, Receipt

#: Offline outcome. ``valid``: every offline check passed and an anchor is present; ``unanchored``: the
#: proof holds but the batch was not yet anchored; ``invalid``: a check failed (see ``failed``).
OfflineStatus = Literal["valid", "unanchored", "invalid"]

CHECKS = ("format", "critical-extensions", "leaf-hash", "batch-identity", "inclusion", "anchor")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    status: OfflineStatus
    checks: tuple[Check, ...]
    receipt: Receipt | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "invalid"

    @property
    def failed(self) -> str | None:
        return next((c.name for c in self.checks if not c.ok), None)

    def to_obj(self) -> dict[str, Any]:
        r = self.receipt
        return {
            "status": self.status,
            "failed_check": self.failed,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "hospital_id": r.record.hospital_id if r else None,
            "result_id": r.record.result_id if r else None,
            "version": r.record.version if r else None,
            "batch_seq": r.batch.seq if r else None,
            "leaf_hash": r.leaf_hash.hex() if r else None,
            **self.extra,
        }


def verify_receipt(receipt: Receipt | bytes | str | dict[str, Any]) -> Verdict:
    """Check a receipt offline. Never raises for bad input: a malformed receipt is an ``invalid`` verdict
    whose failed check is ``format``."""
    checks: list[Check] = []

    def fail(name: str, detail: str, parsed: Receipt | None = None) -> Verdict:
        checks.append(Check(name, False, detail))
        return Verdict("invalid", tuple(checks), parsed)

    try:
        if isinstance(receipt, Receipt):
            parsed = receipt
        elif isinstance(receipt, dict):
            parsed = Receipt.from_obj(receipt)
        else:
            parsed = Receipt.from_obj(parse_json(receipt))
    except MrLedgerError as exc:
        return fail("format", str(exc))
    checks.append(Check("format", True))

    unknown = [c for c in parsed.critical if c not in KNOWN_CRITICAL]
    if unknown:
        return fail("critical-extensions", f"unsupported critical extensions: {unknown}", parsed)
    checks.append(Check("critical-extensions", True))

    calculated = commit(parsed.record, parsed.salt)
    if calculated != parsed.leaf_hash:
        return fail("leaf-hash", "record and salt do not hash to the receipt's leaf (record altered?)", parsed)
    checks.append(Check("leaf-hash", True))

    if parsed.record.hospital_id != parsed.batch.hospital_id:
        return fail("batch-identity", "record and batch name different hospitals", parsed)
    checks.append(Check("batch-identity", True))

    try:
        verify_inclusion(parsed.leaf_index, parsed.batch.size, parsed.leaf_hash, parsed.audit_path,
                         parsed.batch.root)
    except MrLedgerError as exc:
        return fail("inclusion", str(exc), parsed)
    checks.append(Check("inclusion", True))

    if parsed.anchor is None:
        checks.append(Check("anchor", True, "batch not yet anchored"))
        return Verdict("unanchored", tuple(checks), parsed)
    checks.append(Check("anchor", True, "anchor present; on-chain check needs an RPC endpoint"))
    return Verdict("valid", tuple(checks), parsed)
