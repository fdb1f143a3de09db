"""Offline receipt verification: everything a doctor can check with nothing but the receipt.

The low-level functions in ``mrledger.ledger.merkle`` raise; this module turns them into a structured verdict
naming every check and the first one that failed, because "invalid" alone tells a doctor nothing about
whether the record was altered, the proof truncated or the file is simply not a receipt. Checks that
need a chain (is the root really anchored? how deep?) are added by the anchoring layer on top.

The hospital's signature (``signature`` section) is checked only when the caller says whom it trusts
(a ``TrustStore``): without trust anchors a signature proves nothing, so it is reported as
``not-checked`` rather than silently passed. Its outcome is in ``Verdict.signature`` either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mrledger.ledger._x509 import SignerInfo, TrustStore
from mrledger.ledger.canonical import parse_json
from mrledger.ledger.errors import MrLedgerError, SignatureError, SignatureReason
from mrledger.ledger.leaf import commit
from mrledger.ledger.merkle import verify_inclusion
from mrledger.ledger.receipt import KNOWN_CRITICAL, Receipt
from mrledger.ledger.signing import verify_batch_signature

#: Offline outcome. ``valid``: every offline check passed and an anchor is present; ``unanchored``: the
#: proof holds but the batch was not yet anchored; ``invalid``: a check failed (see ``failed``).
OfflineStatus = Literal["valid", "unanchored", "invalid"]

CHECKS = ("format", "critical-extensions", "leaf-hash", "batch-identity", "inclusion", "signature", "anchor")

#: ``valid``: checked and good; ``absent``: the receipt is unsigned (and no signature was required);
#: ``not-checked``: signed but no TrustStore was given, or an earlier check failed (or the receipt did not
#: parse); otherwise the failure's reason.
SignatureStatus = Literal["valid", "absent", "not-checked"] | SignatureReason


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """The signature part of a verdict. ``signer`` is filled only when the signature verified: before that,
    the certificate's subject is an unproven claim and must not be shown as "signed by"."""

    status: SignatureStatus
    alg: str | None = None
    signer: SignerInfo | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"status": self.status, "alg": self.alg, "signer": self.signer.to_obj() if self.signer else None}


SIGNATURE_ABSENT = SignatureResult("absent")
#: The default for a verdict built without looking at the signature (e.g. by another layer): say so.
SIGNATURE_NOT_CHECKED = SignatureResult("not-checked")


def _unchecked(parsed: Receipt | None) -> SignatureResult:
    """The signature result of a verdict that stopped before the signature check."""
    if parsed is not None and parsed.signature is None:
        return SIGNATURE_ABSENT
    return SignatureResult("not-checked", parsed.signature.alg if parsed and parsed.signature else None)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: OfflineStatus
    checks: tuple[Check, ...]
    receipt: Receipt | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    signature: SignatureResult = SIGNATURE_NOT_CHECKED

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
            "signature": self.signature.to_obj(),
            **self.extra,
        }


def verify_receipt(receipt: Receipt | bytes | str | dict[str, Any], *, trust: TrustStore | None = None,
                   require_signature: bool = False) -> Verdict:
    """Check a receipt offline. Never raises for bad input: a malformed receipt is an ``invalid`` verdict
    whose failed check is ``format``.

    ``trust``: check the receipt's signature against these anchors and CRLs (a ``signature`` check whose
    detail starts with the reason). ``require_signature``: an unsigned receipt fails (``signature-missing``)
    — for deployments where every batch is signed, so that stripping the signature is not a way around it.
    Unsigned receipts verified without ``require_signature`` get exactly the verdict they always got."""
    if require_signature and trust is None:
        raise ValueError("require_signature needs a trust store to check the signature with")
    checks: list[Check] = []

    def fail(name: str, detail: str, parsed: Receipt | None = None,
             signature: SignatureResult | None = None) -> Verdict:
        checks.append(Check(name, False, detail))
        return Verdict("invalid", tuple(checks), parsed, signature=signature or _unchecked(parsed))

    try:
        if isinstance(receipt, Receipt):
            parsed = receipt
        elif isinstance(receipt, dict):
            parsed = Receipt.from_obj(receipt)
        else:
            parsed = Receipt.from_obj(parse_json(receipt))
    except (MrLedgerError, ValueError, TypeError, RecursionError) as exc:
        # Not only our own errors: a dict built by a caller can hold what no JSON parse yields (a key that
        # is not a string, a lone surrogate, a cycle), and this function promises a verdict, not a raise.
        return fail("format", str(exc) or type(exc).__name__)
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

    sig = parsed.signature
    if sig is None:
        signature = SIGNATURE_ABSENT
        if require_signature:
            return fail("signature", "signature-missing: this deployment requires signed batches", parsed,
                        SignatureResult("signature-missing"))
    elif trust is None:
        signature = SignatureResult("not-checked", sig.alg)
    else:
        anchor = parsed.anchor
        try:
            if anchor is not None and (anchor.chain_id, anchor.contract.lower()) != (sig.chain_id, sig.contract):
                raise SignatureError("signature-anchor-mismatch",
                                     f"signed for chain {sig.chain_id} registry {sig.contract}, anchored on chain "
                                     f"{anchor.chain_id} registry {anchor.contract.lower()}")
            verify_batch_signature(parsed.batch, sig, trust)
        except SignatureError as exc:
            return fail("signature", str(exc), parsed, SignatureResult(exc.reason, sig.alg))
        who = trust.validate(sig.certificates, parsed.batch.sealed_at).signer  # a cache hit by now
        signature = SignatureResult("valid", sig.alg, who)
        checks.append(Check("signature", True, f"{sig.alg} by {who.subject}, serial {who.serial}"))

    if parsed.anchor is None:
        checks.append(Check("anchor", True, "batch not yet anchored"))
        return Verdict("unanchored", tuple(checks), parsed, signature=signature)
    checks.append(Check("anchor", True, "anchor present; on-chain check needs an RPC endpoint"))
    return Verdict("valid", tuple(checks), parsed, signature=signature)
