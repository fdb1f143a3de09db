"""Service wiring: one ``Ledger`` object holds the store, the chain context and the settings, and offers
the operations the HTTP routes and the CLI share. Routes stay thin (parse, authorise, call, shape).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from mrledger.anchoring.chain import ChainContext
from mrledger.ledger import BatchHead, Receipt, ResultRecord, TrustStore
from mrledger.ledger.ids import check_ids
from mrledger.ledger.signing import MAX_SEALING_DELAY
from mrledger.service.decisions import DecisionService
from mrledger.service.pki import SignStats
from mrledger.service.recognition import Catalogue, default_catalogue
from mrledger.service.verification import Outcome, Verifier
from mrledger.store import Accepted, Store, VersionInfo
from mrledger.store.access import Access, Principal
from mrledger.store.anchors import CONFIRMED, PENDING, AnchorState, AnchorStatus, Outbox, batch_status
from mrledger.store.decisions import EventIndex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BatchView:
    head: BatchHead
    anchor: AnchorState | None
    confirmations: int | None
    leaf_hashes: list[bytes]


class Ledger:
    """What the API and CLI operate on."""

    def __init__(self, store: Store, chain: ChainContext | None = None, *,
                 clock: Callable[[], datetime] = utcnow, confirmations: int = 1,
                 catalogue: Catalogue | None = None, trust: TrustStore | None = None,
                 require_signatures: bool = False, regional_key: bytes | None = None,
                 max_sealing_delay: timedelta = MAX_SEALING_DELAY) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be >= 1")
        if require_signatures and trust is None:
            raise ValueError("require_signatures needs a trust store to check signatures with")
        self.store = store
        self.chain = chain
        self.access = Access(store)
        self.outbox = Outbox(store)
        self.clock = clock
        #: Depth at which verification calls an anchor final (``MRL_CONFIRMATIONS``).
        self.confirmations = confirmations
        #: Mutual-recognition catalogue (``MRL_CATALOGUE_FILE``; default: the shipped one).
        self.catalogue = catalogue or default_catalogue()
        #: Whom hospital signatures must chain to (``MRL_TRUST_*``), and whether unsigned receipts fail.
        self.trust = trust
        self.require_signatures = require_signatures
        #: ``MRL_MAX_SEALING_DELAY`` (docs/signatures.md §4, ``signature-time``).
        self.max_sealing_delay = max_sealing_delay
        #: Time the sealer spent signing batches (``/metrics``: ``mrledger_batch_sign_seconds``).
        self.sign_stats = SignStats()
        #: This node's part in its region under ``mrledger serve``: "leader" (seals and anchors), "follower"
        #: or "starting" (node/background.py); None when nothing seals here.
        self.node_role: Callable[[], str | None] = lambda: None
        self._verifier: Verifier | None = None
        #: Verifications, decisions and encounters (store/decisions.py); buffered under ``mrledger serve``.
        self.events = EventIndex(store)
        #: Key of the patient hashes of encounters (``MRL_REGIONAL_KEY``; a random one per ledger when unset,
        #: which only library users and tests get: ``mrledger serve`` always passes the configured key).
        self.regional_key = regional_key or secrets.token_bytes(32)
        self._decisions: DecisionService | None = None

    @property
    def verifier(self) -> Verifier:
        """Built on first use so that ``confirmations`` set after construction is honoured."""
        v = self._verifier
        if v is None or v.confirmations != self.confirmations or v.chain is not self.chain \
                or v.catalogue is not self.catalogue or v.trust is not self.trust \
                or v.require_signatures != self.require_signatures or v.max_sealing_delay != self.max_sealing_delay:
            # The clock is read through the ledger so a test (or a caller) replacing ``ledger.clock`` is honoured.
            v = self._verifier = Verifier(self.store, self.chain, self.confirmations, catalogue=self.catalogue,
                                          clock=lambda: self.clock(), trust=self.trust,
                                          require_signatures=self.require_signatures,
                                          max_sealing_delay=self.max_sealing_delay)
        return v

    def log(self, who: Principal, action: str, *, hospital_id: str | None = None, result_id: str | None = None,
            version: int | None = None, verdict: str | None = None) -> None:
        """Access-log entry: who looked at or verified what. Identities and verdicts only, never content."""
        self.access.log(who, action, self.clock(), hospital_id=hospital_id, result_id=result_id, version=version,
                        verdict=verdict)

    def register_hospital(self, hospital_id: str, name: str, submitters: Sequence[str] = ()) -> bool:
        """Register in the database and, when this node holds the registry's admin key, on chain with the
        node's anchoring account as submitter. Returns whether it was registered on chain now."""
        self.store.register_hospital(hospital_id, name)
        if self._verifier is not None:
            self._verifier.forget_hospitals()
        return self.chain is not None and self.chain.register_hospital(hospital_id, name, submitters)

    def submit(self, hospital_id: str, records: Sequence[ResultRecord],
               aliases: Mapping[str, Sequence[str]] | None = None) -> list[Accepted]:
        """Every intake path (JSON, FHIR, HL7 v2, DICOM fingerprints) ends here: new ids must be visible."""
        for i, record in enumerate(records):
            check_ids(record, f"records[{i}]" if len(records) > 1 else "")
        return self.store.submit(hospital_id, records, aliases)

    # -- reading ------------------------------------------------------------------------------------

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

    # -- verification -------------------------------------------------------------------------------

    def verify_by_receipt(self, who: Principal, receipt: object) -> Outcome:
        outcome = self.verifier.by_receipt(receipt)
        return self._log_verdict(who, outcome)

    def verify_record(self, who: Principal, hospital_id: str, result_id: str, version: int | None,
                      record: object) -> Outcome:
        outcome = self.verifier.by_record(hospital_id, result_id, version, record)
        return self._log_verdict(who, outcome)

    def verify_fhir(self, who: Principal, hospital_id: str, resource: object, tz: tzinfo | None) -> Outcome:
        outcome = self.verifier.by_fhir(hospital_id, resource, tz)
        return self._log_verdict(who, outcome)

    def _log_verdict(self, who: Principal, outcome: Outcome) -> Outcome:
        """Access-log the verification and give it the ``verification_id`` a decision will name."""
        self.log(who, "verify", hospital_id=outcome.hospital_id, result_id=outcome.result_id,
                 version=outcome.version, verdict=outcome.verdict)
        return self.decisions.remember(who, outcome)

    # -- decisions and encounters (service/decisions.py) --------------------------------------------------

    @property
    def decisions(self) -> DecisionService:
        """Built on first use, like the verifier (it reads the catalogue and the regional key through the
        ledger, so a caller replacing either is honoured)."""
        d = self._decisions
        if d is None:
            d = self._decisions = DecisionService(self, self.events)
        return d
