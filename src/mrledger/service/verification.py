"""Verification for doctors: is the result in front of me the one the hospital anchored, and is it current?

Three entry points. ``by_receipt``: anyone holding an ``mrl-receipt/1`` may check it — offline checks first
(``mrledger.ledger.verify_receipt``; a tampered receipt fails without touching the network), then the chain
(``mrledger.anchoring.verify.verify_on_chain``). The chain is the proof, so a hospital this node never heard of
still verifies. ``by_record``: a doctor holding only the record asks this node; the node rebuilds the
record's receipt from its database, checks it offline (which also catches a tampered database) and checks
the batch root against the registry with one ``eth_call``. ``by_fhir``: a doctor holding the FHIR
resource the other hospital sent; mapped as intake maps it, matched to the held version with the same
content, then checked like a held record.

Pure service code: no FastAPI. Fast on purpose (a benchmark drives 500 verifications/s): the head block
number comes from ``ChainContext.head()`` (cached), block timestamps are cached per block number once the
block is as deep as the configured confirmations, hospital names are cached in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

from mrledger.anchoring.chain import CacheMiss, ChainContext, in_cache_only
from mrledger.anchoring.verify import verify_on_chain
from mrledger.ledger import (
    Anchor,
    BatchHead,
    Check,
    Receipt,
    ResultRecord,
    SignatureResult,
    TrustStore,
    Verdict,
    verify_receipt,
)
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.records import format_time
from mrledger.ledger.signing import MAX_SEALING_DELAY, SigningTimeError, check_signing_time
from mrledger.ledger.status import CONFIRMED
from mrledger.service.outcome import (
    DECIDABLE,
    ChainUnavailableError,
    NotAReceiptError,
    Outcome,
    Superseded,
    failed,
)
from mrledger.service.recognition import Catalogue, Later, decide, default_catalogue
from mrledger.service.verify_fhir import FhirVerifier
from mrledger.service.witnesses import WitnessPolicy
from mrledger.store import NotFoundError, Store, VersionInfo
from mrledger.store.anchor_rows import batch_status, version_status
from mrledger.store.anchors import Outbox
from mrledger.store.eligibility import Eligibility

T = TypeVar("T")
#: Hospital names are re-read at most this often when a name is missing (unknown hospitals are common
#: in receipt checks: the chain vouches for hospitals this node never registered).
_NAMES_TTL = 5.0


@dataclass(frozen=True, slots=True)
class _Block:
    hash: str
    timestamp: datetime


@dataclass
class Verifier:
    """Verification against one ledger (store + optional chain). Thread-safe; create one per ledger."""

    store: Store
    chain: ChainContext | None
    confirmations: int = 1
    block_cache: int = 4096
    #: What recognition matches items against, and the ledger's clock (result age, eligibility).
    catalogue: Catalogue = field(default_factory=default_catalogue)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: Whom hospital signatures must chain to; None: signatures are reported ``not-checked``.
    trust: TrustStore | None = None
    #: An unsigned receipt is tampered (``signature-missing``): where every batch is signed, stripping the
    #: signature must not be a way around it.
    require_signatures: bool = False
    #: ``MRL_MAX_SEALING_DELAY``: how much earlier than its anchoring block a signed batch may claim to have
    #: been sealed when its certificate has expired by the block's time (``mrledger.ledger.check_signing_time``).
    max_sealing_delay: timedelta = MAX_SEALING_DELAY
    #: ``MRL_WITNESS_*``: k of these witnesses must vouch for an authentic result's batch, else ``unknown``.
    witnesses: WitnessPolicy | None = None
    _names: dict[str, str] = field(default_factory=dict, repr=False)
    _names_at: float = field(default=-_NAMES_TTL, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._fhir = FhirVerifier(self.store, self._by_record, self._conclude)
        self.outbox = Outbox(self.store)
        self.eligibility = Eligibility(self.store)
        # Not memoised here: ChainContext caches blocks once they are final (safe against reorgs).
        self._block: Callable[[int], _Block] = self._load_block

    def _offline(self, receipt: Any) -> Verdict:
        """``verify_receipt`` with this node's trust. With ``require_signatures``, an unsigned receipt fails
        (``signature-missing``) unless this ledger sealed that batch before its hospital's batches were
        signed: receipts handed out before signing was switched on keep verifying, while a signature
        stripped from a batch sealed since is caught — and so is a stored signature emptied in the database,
        unless it is the hospital's first signed batch (nothing then tells it from a legacy one)."""
        offline = verify_receipt(receipt, trust=self.trust)
        r = offline.receipt
        if (self.require_signatures and r is not None and r.signature is None and offline.status != "invalid"
                and not self.store.sealed_before_signing(r.batch.hospital_id, r.batch.seq)):
            offline = verify_receipt(r, trust=self.trust, require_signature=True)
        return offline

    # -- by receipt ---------------------------------------------------------------------------------

    def by_receipt(self, receipt: Any) -> Outcome:
        """Verdict on a patient-held receipt (parsed JSON), with revocation and recognition. Raises
        NotAReceiptError when it is not one."""
        return self._conclude(self._by_receipt(receipt))

    def _by_receipt(self, receipt: Any) -> Outcome:
        """The verdict from the receipt and the chain alone; what this ledger's database knows about the result
        (hospital name, later versions, revocation) is added only to a receipt proven genuine (``_disclose``)."""
        if not isinstance(receipt, dict):
            raise NotAReceiptError("a receipt must be a JSON object")
        offline = self._offline(receipt)
        r = offline.receipt
        if r is None:  # only the format check can fail before the receipt is parsed
            raise NotAReceiptError(offline.checks[-1].detail if offline.checks else "not a receipt")
        outcome = self._receipt_verdict(r, offline)
        if outcome.verdict in ("authentic", "pending"):
            outcome = self._disclose(outcome, r.leaf_hash)
        return outcome

    def _receipt_verdict(self, r: Receipt, offline: Verdict) -> Outcome:
        base = replace(self._claimed(r.record), signature=offline.signature, batch=r.batch)
        checks = list(offline.checks)
        if offline.status == "invalid":
            return replace(base, verdict="tampered", checks=tuple(checks), failed_check=offline.failed)
        if r.anchor is None:
            return failed(base, "pending", checks, "anchor-confirmed",
                              "the batch was not anchored when this receipt was issued; ask the hospital for "
                              "the receipt again once its anchor is confirmed")
        anchor = r.anchor
        found = self._chain_for(base, checks, anchor)
        if isinstance(found, Outcome):
            return found
        base, chain = found
        if anchor.contract.lower() != chain.contract.lower() \
                and anchor.contract.lower() not in self._ask(chain.predecessors):
            # Anyone can deploy a look-alike registry and anchor a forged batch there; only the ledger's own
            # registry vouches for its hospitals — or the v1 registry it succeeded in place, which the current one
            # names on chain (receipts issued before the upgrade keep verifying: docs/anchoring.md, "Registry v2").
            return failed(base, "unknown", checks, "contract",
                              f"anchored in {anchor.contract}, not in this ledger's registry {chain.contract}")
        # The node's cached chain view; the proof is checked locally against the root the chain holds.
        on_chain = self._ask(lambda: verify_on_chain(r, chain.w3, reader=chain.reader, onchain_proof=False,
                                                     offline=offline, trust=self.trust,
                                                     max_sealing_delay=self.max_sealing_delay))
        checks = list(on_chain.checks)
        if on_chain.status == "unanchored":  # the registry holds no such batch: removed by a reorg, or forged
            gone = self._anchor_gone(base, checks[:-1], chain, r.batch, anchor.map_root)
            if gone is not None:
                return gone
        if on_chain.status != "valid":
            # Sealed long before a late anchor, with a certificate that expired meanwhile: not corroborated, but
            # a genuine batch anchored after a long outage looks exactly like that — unknown, not tampered.
            early = on_chain.extra.get("signature_time") == "before-anchor"
            return replace(base, verdict="unknown" if early else "tampered", checks=tuple(checks),
                           failed_check=on_chain.failed, signature=on_chain.signature)
        confirmations = int(on_chain.extra.get("confirmations", 0))
        # The registry holds this root (shallow or deep): the receipt is the hospital's, whoever sends it.
        block = int(on_chain.extra.get("block_number", anchor.block_number))  # the registry's, if the anchor moved
        base = replace(base, confirmations=confirmations, block_number=block, tx_hash=on_chain.extra.get("tx_hash"),
                       established=True)
        return self._depth(base, checks, block, confirmations)

    def _anchor_gone(self, base: Outcome, checks: list[Check], chain: ChainContext, head: BatchHead,
                     map_root: bytes | None) -> Outcome | None:
        """A receipt whose bytes hold (offline checks passed) but whose batch the registry does not hold: the
        verdict, or None when this is not the chain's doing (then: tampered).

        Pending, with the reason, when this ledger sealed exactly this root and size as that batch: its anchor
        was removed (a reorg deeper than the confirmations, a chain reset) and the worker anchors it again
        (``anchor_alarms`` says so once the worker noticed). A forged receipt cannot get here: its root would
        have to be the root this ledger sealed, and the offline checks proved its leaf is in that tree — which
        also makes the result established (``Outcome.established``). A registry that holds *another* root for
        the seq, or a seq this ledger never sealed with this root, is not a reorg of this ledger's own anchor:
        tampered. (When the registry holds this root in another block than the receipt names,
        ``verify_on_chain`` already answers: authentic, anchored again.)"""
        hospital_id, seq = head.hospital_id, head.seq
        holding = self._ask(lambda: chain.holds(head, map_root=map_root))
        now = holding.entry
        if now is not None and not holding.holds:
            return None
        try:
            sealed = self.store.batch(hospital_id, seq)
        except NotFoundError:
            return None
        if (sealed.root, sealed.size) != (head.root, head.size):  # this ledger sealed another batch there
            return None
        alarm = self.outbox.lost_anchor(hospital_id, seq)
        state = self.outbox.state(hospital_id, seq)
        if now is not None:
            why = "this batch was anchored again a moment ago"
        elif alarm is not None:
            why = f"the chain lost this batch's anchor ({alarm.detail}); this node is anchoring it again"
        elif state is not None and state.status == CONFIRMED:
            why = "the chain no longer holds this batch's anchor; this node will anchor it again"
        else:
            why = f"this batch's anchor is {batch_status(state)}, not on chain yet"
        return failed(replace(base, block_number=None, tx_hash=None, established=True), "pending", checks,
                          "anchor-confirmed", f"{why}; the record and its inclusion proof are genuine — verify "
                          "again later")

    # -- by record ----------------------------------------------------------------------------------

    def by_record(self, hospital_id: str, result_id: str, version: int | None, record: Any) -> Outcome:
        """``_by_record`` with revocation and recognition."""
        return self._conclude(self._by_record(hospital_id, result_id, version, record))

    def _by_record(self, hospital_id: str, result_id: str, version: int | None, record: Any) -> Outcome:
        """Verdict on a record a doctor holds, against what this ledger committed for (hospital, result,
        version). ``version`` defaults to the held record's own version: a doctor holding version 1 of a
        corrected result must hear "authentic, superseded", not "tampered". Raises RecordError (→ 422)
        when the held record is not a valid record at all."""
        held = ResultRecord.from_obj(record)
        wanted = held.version if version is None else version
        # Until the held record is found equal to the committed one, the answer carries only what the caller
        # sent: "no such version" or "does not match", never the stored record's facts.
        base = Outcome("unknown", (), hospital_id=hospital_id, result_id=result_id, version=wanted,
                       issued=format_time(held.issued), record=held)
        checks = [Check("record", True)]
        versions = self._versions(hospital_id, result_id)
        info = next((v for v in versions if v.version == wanted), None)
        if info is None:
            return failed(base, "unknown", checks, "lookup", "this ledger holds no such result version")
        checks.append(Check("lookup", True))
        receipt = self.store.receipt(hospital_id, result_id, wanted) if info.batch_seq is not None else None
        stored = receipt.record if receipt is not None else self.store.record(hospital_id, result_id, wanted)
        if held.canonical_bytes() != stored.canonical_bytes():
            return failed(base, "tampered", checks, "content",
                              "the record differs from the one the hospital committed to")
        checks.append(Check("content", True))
        superseded_by, revoked_by = self._later(hospital_id, result_id, wanted, versions)
        base = replace(base, hospital_name=self.hospital_name(hospital_id), superseded_by=superseded_by,
                       revoked_by=revoked_by, established=True)
        if receipt is None:
            return failed(base, "pending", checks, "anchor-confirmed", "not yet sealed into a batch")
        # The signature is checked here too: the hospital vouches for the batch the database holds, so a
        # rewritten batch row (or a signature copied from another batch) is caught without the chain.
        offline = self._offline(receipt)
        base = replace(base, signature=offline.signature, batch=receipt.batch)
        if offline.status == "invalid":  # the database no longer agrees with itself
            checks.extend(c for c in offline.checks if not c.ok)
            return replace(base, verdict="tampered", checks=tuple(checks), failed_check=offline.failed)
        checks.append(Check("inclusion", True, f"leaf {receipt.leaf_index} of batch {receipt.batch.seq}"))
        checks.extend(c for c in offline.checks if c.name == "signature")
        if receipt.anchor is None:
            state = self.outbox.state(hospital_id, receipt.batch.seq)
            status = batch_status(state)
            alarm = self.outbox.lost_anchor(hospital_id, receipt.batch.seq)
            why = f"; the chain lost its earlier anchor and this node is anchoring it again ({alarm.detail})" \
                if alarm is not None else ""
            return failed(base, "pending", checks, "anchor-confirmed", f"batch anchor is {status}{why}")
        anchor = receipt.anchor
        found = self._chain_for(base, checks, anchor)
        if isinstance(found, Outcome):
            return found
        base, chain = found
        batch = receipt.batch
        holding = self._ask(lambda: chain.holds(batch, anchor.contract, anchor.map_root, anchor.block_number))
        stored_on_chain = holding.entry
        if stored_on_chain is None:  # the chain lost the anchor (this ledger's own root): re-anchoring
            gone = self._anchor_gone(base, checks, chain, batch, anchor.map_root)
            if gone is not None:
                return gone
            return failed(base, "tampered", checks, "anchor-root",
                              f"the registry holds no batch {batch.seq} for {hospital_id}")
        if not holding.holds:
            return failed(base, "tampered", checks, "anchor-root",
                              f"the registry holds {holding.what}, the ledger root {batch.root.hex()} size "
                              f"{batch.size}")
        checks.append(Check("anchor-root", True))
        block = stored_on_chain.anchored_block  # the chain's word, should a reorg have moved the anchor
        confirmations = max(0, self._ask(chain.head) - block + 1)
        base = replace(base, block_number=block, confirmations=confirmations)
        return self._signing_time(self._depth(base, checks, block, confirmations), receipt)

    # -- by FHIR resource ---------------------------------------------------------------------------

    def by_fhir(self, hospital_id: str, resource: Any, tz: tzinfo | None = None) -> Outcome:
        """Verdict on a FHIR resource a doctor holds (``verify_fhir.FhirVerifier``). Raises FormatError (→ 422)
        when the resource cannot be mapped."""
        return self._fhir.verify(hospital_id, resource, tz)

    # -- helpers ------------------------------------------------------------------------------------

    def hospital_name(self, hospital_id: str) -> str | None:
        name = self._names.get(hospital_id)
        if name is not None:
            return name
        now = time.monotonic()
        with self._lock:
            if now - self._names_at < _NAMES_TTL:
                return None
            self._names_at = now
        names = dict(self.store.hospitals())
        with self._lock:
            self._names = names
        return names.get(hospital_id)

    def forget_hospitals(self) -> None:
        """Drop the name cache (after a registration)."""
        with self._lock:
            self._names, self._names_at = {}, -_NAMES_TTL

    @staticmethod
    def _claimed(record: ResultRecord) -> Outcome:
        """What the receipt itself claims (the caller holds it already): no database read."""
        hid, rid, version = record.key
        return Outcome("unknown", (), hospital_id=hid, result_id=rid, version=version,
                       issued=format_time(record.issued), record=record)

    def _versions(self, hospital_id: str, result_id: str) -> list[VersionInfo]:
        try:
            return self.store.versions(hospital_id, result_id)
        except NotFoundError:
            return []

    def _disclose(self, outcome: Outcome, leaf_hash: bytes) -> Outcome:
        """Add what this ledger knows about a receipt's result — the hospital's name, later versions,
        revocation — only when the receipt is proven to be the hospital's: its leaf is the one this ledger
        committed for that version (the salted leaf cannot be computed without the record and its salt), or
        the registry holds its root. A forged receipt naming another hospital's result id learns nothing: not
        whether the id exists, nor whether it was corrected or withdrawn (issue 14, finding 3)."""
        hid, rid, version = outcome.hospital_id, outcome.result_id, outcome.version
        assert hid is not None and rid is not None and version is not None
        versions = self._versions(hid, rid)
        held = any(v.version == version and v.leaf_hash == leaf_hash for v in versions)
        if not (held or outcome.established):
            return outcome
        superseded_by, revoked_by = self._later(hid, rid, version, versions) if held else (None, None)
        return replace(outcome, hospital_name=self.hospital_name(hid), superseded_by=superseded_by,
                       revoked_by=revoked_by, established=True)

    def _later(self, hospital_id: str, result_id: str, version: int,
               versions: list[VersionInfo]) -> tuple[Superseded | None, Superseded | None]:
        """(newest later version, revoking version): the result is revoked when its *latest* version is
        ``entered-in-error`` — a later corrected version reinstates it. One record read at most."""
        if not versions:
            return None, None
        latest = versions[-1]
        newer = latest if latest.version > version else None
        revoking = latest if latest.status == "entered-in-error" else None
        if newer is None and revoking is None:
            return None, None
        info = self._superseded(hospital_id, result_id, latest.version, latest.batch_seq)
        return (info if newer else None), (info if revoking else None)

    def _conclude(self, outcome: Outcome) -> Outcome:
        """Revocation and recognition on top of the verification verdict. A genuine (authentic or pending)
        result that was revoked answers ``revoked``; tampered and unknown stay as they are (they say more).
        Recognition sees the verdict from before the revocation, so a pending anchor is still reported."""
        outcome = self._witnessed(outcome)
        verdict = outcome.verdict
        if outcome.revoked_by is not None and verdict in ("authentic", "pending"):
            by = outcome.revoked_by
            checks = [*outcome.checks, Check("revocation", False, f"version {by.version} ({by.status}, issued "
                                                                  f"{by.issued}) revokes this result")]
            outcome = replace(outcome, verdict="revoked", checks=tuple(checks), failed_check="revocation")
        record = outcome.record
        if record is None:
            return outcome
        now = self.clock()
        later = [None if s is None else Later(s.version, s.status, s.issued)
                 for s in (outcome.superseded_by, outcome.revoked_by)]
        # The hospital's eligibility is configuration of this ledger: not told about a result that was not
        # established (the verdict is reorder anyway: not authentic, or anchor pending).
        eligible = (self.eligibility.categories(record.hospital_id, now) if outcome.established
                    else self.catalogue.categories)
        recognition = decide(verdict=verdict, record=record, catalogue=self.catalogue, eligible=eligible, now=now,
                             superseded_by=later[0], revoked_by=later[1], failed_check=outcome.failed_check)
        return replace(outcome, recognition=recognition)

    def _witnessed(self, outcome: Outcome) -> Outcome:
        """With a witness requirement, an authentic result whose batch fewer than k witnesses vouch for (or two
        vouch differently for: a split view) is ``unknown``: the chain holds it, but nobody outside the node has
        confirmed the node shows everyone that history (docs/monitor.md, "Witnesses")."""
        policy, batch, chain = self.witnesses, outcome.batch, self.chain
        if policy is None or outcome.verdict != "authentic" or batch is None or not outcome.chain_id \
                or not outcome.contract:
            return outcome
        if chain is not None and outcome.contract.lower() != chain.contract.lower():
            # Anchored in the paused v1 registry this node's registry succeeded (the only other one it vouches
            # for): frozen history, which the witnesses checked before the upgrade; they now sign checkpoints of
            # the current registry, which cannot name it (docs/monitor.md, "Witnesses").
            checks = (*outcome.checks, Check("witnesses", True, f"anchored in the predecessor registry "
                                                               f"{outcome.contract}: not required"))
            return replace(outcome, checks=checks)
        answer = policy.vouch(batch, outcome.chain_id, outcome.contract, wait=not in_cache_only())
        if answer is None:
            raise CacheMiss("witness checkpoints are read on a worker thread")
        vouched, detail = answer
        checks = (*outcome.checks, Check("witnesses", vouched, detail))
        if vouched:
            return replace(outcome, checks=checks)
        return replace(outcome, verdict="unknown", checks=checks, failed_check="witnesses")

    def _chain_for(self, base: Outcome, checks: list[Check], anchor: Anchor) -> tuple[Outcome, ChainContext] | Outcome:
        """The anchor's fields on the answer, and this node's chain if it is the anchor's chain; otherwise the
        answer is ``unknown`` (no chain here, or another chain: this node cannot vouch for it)."""
        base = replace(base, chain_id=anchor.chain_id, contract=anchor.contract, tx_hash=anchor.tx_hash,
                       block_number=anchor.block_number)
        chain = self.chain
        if chain is None:
            return failed(base, "unknown", checks, "chain", "this node has no chain configured to check the "
                                                                "anchor against")
        if anchor.chain_id != chain.chain_id:
            return failed(base, "unknown", checks, "chain-id",
                              f"anchored on chain {anchor.chain_id}; this node checks chain {chain.chain_id}")
        return base, chain

    def _superseded(self, hospital_id: str, result_id: str, version: int, batch_seq: int | None = None) -> Superseded:
        record = self.store.record(hospital_id, result_id, version)
        state = self.outbox.state(hospital_id, batch_seq) if batch_seq is not None else None
        status = version_status(batch_seq, state)
        return Superseded(version, record.status, format_time(record.issued), batch_seq, status,
                          state.block_number if state else None, state.tx_hash if state else None)

    def _depth(self, base: Outcome, checks: list[Check], block: int, confirmations: int) -> Outcome:
        chain = self.chain
        if confirmations < self.confirmations and chain is not None:
            # The head is cached for half a second; before calling an anchor "pending", look once more, or
            # a result confirmed a moment ago would read as pending.
            confirmations = max(confirmations, self._ask(lambda: chain.head(max_age=0)) - block + 1)
            base = replace(base, confirmations=confirmations)
        if confirmations < self.confirmations:
            return failed(base, "pending", checks, "anchor-confirmed",
                              f"{confirmations} of {self.confirmations} confirmation(s)")
        checks.append(Check("anchor-confirmed", True, f"{confirmations} confirmation(s)"))
        # Cached by number: safe because the block is at least `confirmations` deep.
        anchored_at = self._ask(lambda: self._block(block)).timestamp
        return replace(base, verdict="authentic", checks=tuple(checks), anchored_at=anchored_at, failed_check=None)

    def _signing_time(self, outcome: Outcome, receipt: Receipt) -> Outcome:
        """The held-record path's ``signature-time`` check (the receipt path's is in ``verify_on_chain``): the
        stored batch's signed ``sealed_at`` against the time of the block the registry says anchored it."""
        sig, at = receipt.signature, outcome.anchored_at
        if (outcome.verdict != "authentic" or sig is None or self.trust is None or at is None
                or outcome.signature.status != "valid"):
            return outcome
        try:
            check_signing_time(receipt.batch, sig, at, self.trust, self.max_sealing_delay)
        except SigningTimeError as exc:
            checks = [*outcome.checks, Check("signature-time", False, str(exc))]
            return replace(outcome, verdict="tampered" if exc.after_anchor else "unknown", checks=tuple(checks),
                           failed_check="signature-time", signature=SignatureResult("signature-time", sig.alg))
        return replace(outcome, checks=(*outcome.checks, Check("signature-time", True,
                                                               "sealed_at fits the anchoring block's time")))

    def _load_block(self, number: int) -> _Block:
        assert self.chain is not None
        block = self.chain.block(number)
        if block is None:
            raise ChainUnavailableError(f"block {number} is not on chain (reorg?)")
        return _Block(block.hash, datetime.fromtimestamp(block.timestamp, UTC))

    @staticmethod
    def _ask(call: Callable[[], T]) -> T:
        """Run a chain call; an unreachable node is a 503 for the caller, never a verdict."""
        try:
            return call()
        except MrLedgerError:
            raise
        except Exception as exc:
            raise ChainUnavailableError(f"cannot check the chain: {type(exc).__name__}: {exc}") from exc


__all__ = ["DECIDABLE", "ChainUnavailableError", "NotAReceiptError", "Outcome", "Superseded", "Verifier"]
