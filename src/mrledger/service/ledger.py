"""The services the HTTP routes and the CLI share, and ``build_services``, which wires them.

Why small services rather than one object: each says in its constructor what it depends on, none is handed back
the object that built it, and nothing is reassigned after construction — a different configuration (another
clock, catalogue or trust) is a new ``Services``. The arrows: ``IntakeService`` → store (and the chain registrar);
``DecisionService`` → store, event index, intake; ``VerificationService`` → verifier, access log, decisions;
``ResultsService`` → store, outbox, chain. Routes stay thin (parse, authorise, call, shape).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from mrledger.anchoring.chain import ChainContext
from mrledger.ledger import BatchHead, Receipt, TrustStore
from mrledger.ledger.signing import MAX_SEALING_DELAY
from mrledger.ledger.status import CONFIRMED, PENDING, AnchorStatus
from mrledger.ledger.status_check import StatusDocument
from mrledger.service.decisions import DecisionService
from mrledger.service.intake import IntakeService
from mrledger.service.pki import SignStats
from mrledger.service.recognition import Catalogue, default_catalogue
from mrledger.service.verification import Outcome, Verifier
from mrledger.service.witnesses import WitnessPolicy
from mrledger.store import NotFoundError, Store, VersionInfo
from mrledger.store.access import Access, Principal
from mrledger.store.anchor_rows import AnchorState, batch_status
from mrledger.store.anchors import Outbox
from mrledger.store.decisions import EventIndex
from mrledger.store.receipts import anchor_section


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BatchView:
    head: BatchHead
    anchor: AnchorState | None
    confirmations: int | None
    leaf_hashes: list[bytes]


class AccessLog:
    """Who looked at or verified what, stamped with the node's clock: identities and verdicts only, never content."""

    def __init__(self, access: Access, clock: Callable[[], datetime]) -> None:
        self.access, self.clock = access, clock

    def log(self, who: Principal, action: str, *, hospital_id: str | None = None, result_id: str | None = None,
            version: int | None = None, verdict: str | None = None) -> None:
        self.access.log(who, action, self.clock(), hospital_id=hospital_id, result_id=result_id, version=version,
                        verdict=verdict)


class ResultsService:
    """Reading results and batches with where they stand on their way to the chain."""

    def __init__(self, store: Store, outbox: Outbox, chain: ChainContext | None) -> None:
        self.store, self.outbox, self.chain = store, outbox, chain

    def anchor_status(self, hospital_id: str, seq: int | None,
                      _cache: dict[int, AnchorStatus] | None = None) -> AnchorStatus:
        if seq is None:
            return PENDING
        if _cache is not None and seq in _cache:
            return _cache[seq]
        state = self.outbox.state(hospital_id, seq)
        status = batch_status(state)
        if _cache is not None:
            _cache[seq] = status
        return status

    def versions(self, hospital_id: str, result_id: str) -> list[tuple[VersionInfo, AnchorStatus]]:
        """Every version of a result with its anchoring status (NotFoundError when there is none)."""
        cache: dict[int, AnchorStatus] = {}
        return [(v, self.anchor_status(hospital_id, v.batch_seq, cache))
                for v in self.store.versions(hospital_id, result_id)]

    def receipt(self, hospital_id: str, result_id: str,
                version: int | None = None) -> tuple[Receipt | None, AnchorStatus]:
        """The receipt once its batch anchor is confirmed, else None with the anchoring status
        (NotFoundError for an unknown result or version)."""
        receipt = self.store.receipt(hospital_id, result_id, version)
        if receipt is None:
            return None, PENDING
        if receipt.anchor is None:
            return None, self.anchor_status(hospital_id, receipt.batch.seq)
        return receipt, CONFIRMED

    def batch(self, hospital_id: str, seq: int) -> BatchView:
        head = self.store.batch(hospital_id, seq)
        state = self.outbox.state(hospital_id, seq)
        confirmations = None
        if self.chain is not None and state is not None and state.block_number is not None:
            confirmations = max(0, self.chain.head() - state.block_number + 1)
        return BatchView(head, state, confirmations, self.store.batch_leaves(hospital_id, seq))


    def status_document(self, hospital_id: str, result_id: str, key: bytes) -> StatusDocument:
        """The map proof of a result's entry as of the hospital's latest confirmed batch (docs/receipt.md §17).
        The caller names the key, which only a receipt's holder can derive; any other key (or an unknown result)
        is the NotFoundError of an unknown result, so the route tells a prober nothing. StatusPendingError while
        no confirmed batch commits a map (a hospital whose batches all predate migration 0013)."""
        try:
            held = self.store.status_key_of(hospital_id, result_id)
        except NotFoundError:
            held = None
        if held is None or not hmac.compare_digest(held, key):
            raise NotFoundError(f"no result {result_id!r} with that status key at hospital {hospital_id!r}")
        state = self.outbox.latest_confirmed(hospital_id)
        proven = None if state is None else self.store.status_proof(hospital_id, key, state.head.seq)
        if state is None or proven is None:
            raise StatusPendingError("no confirmed batch of this hospital commits a status map yet")
        root, proof = proven
        return StatusDocument(hospital_id, key, state.head, root, proof, anchor_section(state, root))


class StatusPendingError(Exception):
    """No status answer can be given yet (HTTP 409): nothing anchored commits the hospital's status map."""


class VerificationService:
    """The three forms of verification, each access-logged and, when a decision may follow, remembered under
    the ``verification_id`` the decision will name."""

    def __init__(self, verifier: Verifier, access_log: AccessLog, decisions: DecisionService) -> None:
        self.verifier, self.access_log, self.decisions = verifier, access_log, decisions

    def by_receipt(self, who: Principal, receipt: object) -> Outcome:
        return self._log_verdict(who, self.verifier.by_receipt(receipt))

    def by_record(self, who: Principal, hospital_id: str, result_id: str, version: int | None,
                  record: object) -> Outcome:
        return self._log_verdict(who, self.verifier.by_record(hospital_id, result_id, version, record))

    def by_fhir(self, who: Principal, hospital_id: str, resource: object, tz: tzinfo | None) -> Outcome:
        return self._log_verdict(who, self.verifier.by_fhir(hospital_id, resource, tz))

    def _log_verdict(self, who: Principal, outcome: Outcome) -> Outcome:
        self.access_log.log(who, "verify", hospital_id=outcome.hospital_id, result_id=outcome.result_id,
                            version=outcome.version, verdict=outcome.verdict)
        return self.decisions.remember(who, outcome)


@dataclass(frozen=True)
class Services:
    """What the API and CLI operate on: the services, and the few shared parts routes read directly."""

    store: Store
    chain: ChainContext | None
    clock: Callable[[], datetime]
    access: Access
    access_log: AccessLog
    outbox: Outbox
    #: Verifications, decisions and encounters (store/decisions.py); buffered under ``mrledger serve``.
    events: EventIndex
    #: Mutual-recognition catalogue (``MRL_CATALOGUE_FILE``; default: the shipped one).
    catalogue: Catalogue
    #: Key of the patient hashes of encounters (``MRL_REGIONAL_KEY``).
    regional_key: bytes
    intake: IntakeService
    results: ResultsService
    verification: VerificationService
    decisions: DecisionService
    #: Time the sealer spent signing batches (``/metrics``: ``mrledger_batch_sign_seconds``).
    sign_stats: SignStats
    #: This node's part in its region under ``mrledger serve``: "leader" (seals and anchors), "follower"
    #: or "starting" (node/background.py); None when nothing seals here.
    node_role: Callable[[], str | None]


def build_services(store: Store, chain: ChainContext | None = None, *, clock: Callable[[], datetime] = utcnow,
                   confirmations: int = 1, catalogue: Catalogue | None = None, trust: TrustStore | None = None,
                   require_signatures: bool = False, regional_key: bytes | None = None,
                   max_sealing_delay: timedelta = MAX_SEALING_DELAY, sign_stats: SignStats | None = None,
                   node_role: Callable[[], str | None] = lambda: None,
                   witnesses: WitnessPolicy | None = None) -> Services:
    """Wire the services over one store and (optionally) one chain.

    ``confirmations``: depth at which verification calls an anchor final (``MRL_CONFIRMATIONS``). ``trust``: whom
    hospital signatures must chain to (``MRL_TRUST_*``); ``require_signatures``: unsigned receipts fail.
    ``max_sealing_delay``: ``MRL_MAX_SEALING_DELAY`` (docs/signatures.md §4). ``regional_key``: a random one when
    unset, which only library users and tests get: ``mrledger serve`` always passes the configured key.
    ``witnesses``: ``MRL_WITNESS_*``, k of n witnesses must vouch for an authentic result's batch."""
    if confirmations < 1:
        raise ValueError("confirmations must be >= 1")
    if require_signatures and trust is None:
        raise ValueError("require_signatures needs a trust store to check signatures with")
    catalogue = catalogue or default_catalogue()
    regional_key = regional_key or secrets.token_bytes(32)
    access, outbox, events = Access(store), Outbox(store), EventIndex(store)
    access_log = AccessLog(access, clock)
    verifier = Verifier(store, chain, confirmations, catalogue=catalogue, clock=clock, trust=trust,
                        require_signatures=require_signatures, max_sealing_delay=max_sealing_delay,
                        witnesses=witnesses)
    intake = IntakeService(store, chain, registered=verifier.forget_hospitals)
    decisions = DecisionService(store, events, intake, catalogue, regional_key, clock)
    return Services(store, chain, clock, access, access_log, outbox, events, catalogue, regional_key, intake,
                    ResultsService(store, outbox, chain), VerificationService(verifier, access_log, decisions),
                    decisions, sign_stats or SignStats(), node_role)
