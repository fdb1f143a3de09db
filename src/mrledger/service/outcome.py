"""What a verification answers (``Outcome``, shaped like the API's ``VerifyOut``) and its vocabulary: the
verdicts, which of them a decision may follow, later versions of a result, and the errors that are not verdicts.
Apart from ``mrledger.service.verification`` (which computes outcomes) so each stays readable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from mrledger.anchoring.errors import AnchoringError
from mrledger.ledger import BatchHead, Check, ResultRecord, SignatureResult
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.status import AnchorStatus
from mrledger.service.recognition import Recognition

#: ``revoked``: genuine (authentic or pending), but the result's latest version is ``entered-in-error``.
#: ``cannot-match``: the resource a doctor holds cannot be decided against what was committed (Observations the
#: ledger never received beside a report that matches); never ``tampered`` for data that may be unchanged.
VerdictName = Literal["authentic", "tampered", "unknown", "pending", "revoked", "cannot-match"]
#: Verdicts of a genuine result: a decision may follow them (with ``Outcome.established``).
DECIDABLE: frozenset[str] = frozenset({"authentic", "pending", "revoked"})
NOT_CHECKED = SignatureResult("not-checked")


class NotAReceiptError(MrLedgerError, ValueError):
    """The document is not a well-formed ``mrl-receipt/1`` (as opposed to a receipt whose checks fail)."""


class ChainUnavailableError(AnchoringError):
    """The chain could not be asked (node down, timeout): no verdict, the caller should retry."""


@dataclass(frozen=True, slots=True)
class Superseded:
    version: int
    status: str
    issued: str
    #: Where that later version stands — its batch and, once anchored, the anchor — so a doctor sees
    #: whether the correction itself is on chain yet (``mrledger.ledger.status.AnchorStatus``).
    batch_seq: int | None = None
    anchor_status: AnchorStatus | None = None
    block_number: int | None = None
    tx_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A verification's answer, shaped like the API's ``VerifyOut``."""

    verdict: VerdictName
    checks: tuple[Check, ...]
    hospital_id: str | None = None
    hospital_name: str | None = None
    result_id: str | None = None
    version: int | None = None
    issued: str | None = None
    anchored_at: datetime | None = None
    chain_id: int | None = None
    contract: str | None = None
    tx_hash: str | None = None
    block_number: int | None = None
    confirmations: int | None = None
    superseded_by: Superseded | None = None
    failed_check: str | None = None
    #: The version that revoked the result (its latest, status ``entered-in-error``), if any.
    revoked_by: Superseded | None = None
    recognition: Recognition | None = None
    #: The hospital's batch signature as this node checked it (docs/signatures.md §5): ``valid`` with the
    #: signer, ``absent``, ``not-checked`` (no trust configured, or the check was not reached) or the reason.
    signature: SignatureResult = NOT_CHECKED
    #: The record the verdict is about (held or from the receipt), for the recognition decision.
    record: ResultRecord | None = field(default=None, repr=False, compare=False)
    #: Names this verification when the doctor records her decision (``POST /v1/decisions``, service/decisions.py).
    verification_id: str | None = None
    #: The result is the hospital's as this ledger or its registry knows it: the held record equals the
    #: committed one, or the receipt's leaf is the committed leaf, or the registry holds its root. Only then
    #: do database facts (name, later versions, revocation, eligibility) reach the answer, and only then is
    #: the verification decidable (service/decisions.py).
    established: bool = field(default=False, repr=False, compare=False)
    #: The batch the verdict rests on (for the witness requirement: service/witnesses.py).
    batch: BatchHead | None = field(default=None, repr=False, compare=False)

    @property
    def decidable(self) -> bool:
        """A doctor may record a decision about this verification: the result was established and is genuine
        (an anonymous forgery must not become a committed decision attributed to the hospital it names)."""
        return self.established and self.verdict in DECIDABLE

    def to_obj(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "hospital_id": self.hospital_id, "hospital_name": self.hospital_name,
            "result_id": self.result_id, "version": self.version, "issued": self.issued,
            "anchored_at": self.anchored_at, "chain_id": self.chain_id, "contract": self.contract,
            "tx_hash": self.tx_hash, "block_number": self.block_number, "confirmations": self.confirmations,
            "superseded_by": None if self.superseded_by is None else asdict(self.superseded_by),
            "failed_check": self.failed_check,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "revoked_by": None if self.revoked_by is None else asdict(self.revoked_by),
            "recognition": None if self.recognition is None else self.recognition.to_obj(),
            "signature": self.signature.to_obj(),
            "verification_id": self.verification_id,
        }


def failed(base: Outcome, verdict: VerdictName, checks: list[Check], name: str, detail: str) -> Outcome:
    """``base`` with ``verdict``, the failed check ``name`` appended to ``checks`` (which it extends)."""
    checks.append(Check(name, False, detail))
    return replace(base, verdict=verdict, checks=tuple(checks), failed_check=name)


__all__ = ["DECIDABLE", "NOT_CHECKED", "ChainUnavailableError", "NotAReceiptError", "Outcome", "Superseded",
           "VerdictName", "failed"]
