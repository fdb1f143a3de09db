"""Recognition decisions and encounters: what doctors did after a verification, and how often they looked.

A verification answers with a ``verification_id`` (a ULID made here, ``remember``) and the node keeps what it
answered (``mrledger.store.decisions``). The doctor then records ``recognised`` or ``reordered`` (with a reason from
the catalogue's ``reorder_reasons``) naming that id: the node, not the client, supplies the verdict, the
recognition and the matched items, so a decision cannot claim a recognition the programme did not grant.
Hospitals report encounters (a doctor saw a patient for whom recognisable results existed, and retrieved
them or not): the denominator of the retrieval rate. The patient is committed only as HMAC-SHA256 under the
regional key, never in clear.

Both go to the acting hospital's event stream (``mrledger.store.events``): submitted through
``IntakeService.submit`` like results, so the sealer and the anchoring worker commit them unchanged. Pure service
code: no FastAPI; the routes (``http/routes/decisions.py``) map ``DecisionRefused`` to RFC 9457 problems.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.ids import check_ids
from mrledger.service.intake import IntakeService
from mrledger.service.recognition import Catalogue
from mrledger.service.verification import DECIDABLE, Outcome
from mrledger.store import Accepted, ConflictError, Store
from mrledger.store.access import Principal
from mrledger.store.decisions import EventIndex, VerificationRow
from mrledger.store.events import DecisionFacts, EncounterFacts, ItemRef, events_stream, stream_name
from mrledger.store.keyfiles import KeyFileError, read_private

log = logging.getLogger("mrledger.decisions")
#: Crockford's base32, as ULIDs spell it (no I, L, O, U).
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: How far in the future an encounter's time may lie (clock skew between a hospital system and the node).
MAX_SKEW = timedelta(minutes=5)
#: Most encounters in one report (one submission: all or nothing).
MAX_ENCOUNTERS = 1000
MAX_DETAIL = 500
#: Bytes of a regional key, and the name of the dev key file in the data dir.
KEY_BYTES = 32
REGIONAL_KEY_FILE = "regional.key"
_PATIENT_TAG, _RESULT_TAG, _ENCOUNTER_TAG = b"mrl-patient/1", b"mrl-result/1", b"mrl-encounter/1"

DecisionName = Literal["recognised", "reordered"]


class DecisionRefused(MrLedgerError, ValueError):
    """A decision or encounter report the node will not record; ``status``/``name`` become the problem."""

    def __init__(self, status: int, name: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.name, self.title, self.detail = status, name, title, detail


class RegionalKeyError(MrLedgerError, ValueError):
    """The regional key is missing or malformed (the node refuses to start)."""


def new_id(now: datetime, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A ULID: 48 bits of milliseconds since the epoch, then 80 random bits, in 26 Crockford base32 digits.
    Time-ordered (the verifications table reads in order) and unguessable (holding one is what lets a doctor
    record a decision about a verification she did not make with her token)."""
    value = (int(now.timestamp() * 1000) << 80) | int.from_bytes(random_bytes(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def keyed(key: bytes, tag: bytes, *parts: str) -> str:
    """hex HMAC-SHA256(key, tag 0x00 part 0x00 part …) of NFC-normalised parts (none may hold a NUL: the
    identifiers hashed here are validated free of control characters, so the encoding is unambiguous)."""
    message = b"\0".join([tag, *(unicodedata.normalize("NFC", p).encode("utf-8") for p in parts)])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def patient_hash(key: bytes, system: str | None, value: str) -> str:
    """The patient of an encounter: ``keyed(key, "mrl-patient/1", system or "", value)``. The same patient
    identifier hashes alike at every node of a region that shares the key, so encounters can be linked
    without anyone storing the identifier; without the key, a guessed identifier cannot be confirmed."""
    return keyed(key, _PATIENT_TAG, system or "", value)


def result_ref(key: bytes, hospital_id: str, result_id: str) -> str:
    """The verified result of a decision: ``keyed(key, "mrl-result/1", hospital_id, result_id)``. Result ids
    can embed patient identifiers (the store encrypts them at rest), so decisions name the result only by
    this reference; an auditor holding the result id and the regional key recomputes it."""
    return keyed(key, _RESULT_TAG, hospital_id, result_id)


def encounter_ref(key: bytes, hospital_id: str, encounter_id: str) -> str:
    """An encounter: ``keyed(key, "mrl-encounter/1", hospital_id, encounter_id)`` (visit numbers, too, can
    embed patient identifiers); it stays the idempotency key of the hospital's report."""
    return keyed(key, _ENCOUNTER_TAG, hospital_id, encounter_id)


def load_regional_key(value: str | None, path: Path | None, data_dir: Path) -> bytes:
    """The regional key: ``MRL_REGIONAL_KEY`` (hex), else the file ``MRL_REGIONAL_KEY_FILE`` (hex), else
    ``<data_dir>/regional.key``, generated (0600, 256 random bits) on first start — a dev default: every node
    of a region must hold the same key for patient hashes to agree, so production sets one."""
    if value:
        return _parse_key(value, "MRL_REGIONAL_KEY")
    if path is None:
        path = data_dir / REGIONAL_KEY_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    try:  # a file group or others may read is refused (store/keyfiles.py)
        return _parse_key(read_private(path, "regional key file").decode("utf-8", errors="replace"), str(path))
    except KeyFileError as exc:
        raise RegionalKeyError(str(exc)) from exc
    except OSError as exc:
        raise RegionalKeyError(f"cannot read the regional key file {path}: {exc.strerror or exc}") from exc


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise RegionalKeyError(f"{where}: the regional key must be hex") from None  # never echo the key
    if len(key) < KEY_BYTES:
        raise RegionalKeyError(f"{where}: the regional key must have at least {KEY_BYTES} bytes")
    return key


@dataclass(frozen=True, slots=True)
class Recorded:
    """A decision as recorded, and whether this call recorded it (``accepted``) or found it (``duplicate``)."""

    facts: DecisionFacts
    leaf_hash: bytes
    status: Literal["accepted", "duplicate"]


@dataclass(frozen=True, slots=True)
class EncounterIn:
    encounter_id: str
    patient_system: str | None
    patient_value: str
    seen_at: datetime
    retrieved: bool
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reported:
    encounter_id: str  # as the hospital sent it (the committed record holds only ``facts.encounter_ref``)
    facts: EncounterFacts
    leaf_hash: bytes
    status: Literal["accepted", "duplicate"]


class DecisionService:
    """Decisions and encounters of one ledger. Thread-safe.

    ``intake`` stores the committed records (and registers the event streams), ``index`` keeps what verifications
    answered and what was decided; ``catalogue`` gives the reorder reasons, categories and prices, ``regional_key``
    the key of the patient, result and encounter hashes."""

    def __init__(self, store: Store, index: EventIndex, intake: IntakeService, catalogue: Catalogue,
                 regional_key: bytes, clock: Callable[[], datetime]) -> None:
        self.store, self.index, self.intake = store, index, intake
        self.catalogue, self.regional_key, self.clock = catalogue, regional_key, clock
        self._streams: set[str] = set()
        self._lock = threading.Lock()
        self._prices = {(i.system, i.code): i.price_minor for i in catalogue.items}

    # -- verifications ------------------------------------------------------------------------------

    def remember(self, who: Principal, outcome: Outcome) -> Outcome:
        """Give a verification its id and keep what it answered (identifiers, verdicts, items) — only when a
        decision may follow (``Outcome.decidable``): a tampered or unknown result, or a receipt nothing here
        vouches for, gets no id, so an anonymous forgery cannot become a committed decision attributed to the
        hospital it names. The access log still records every verification."""
        if (not outcome.decidable or outcome.hospital_id is None or outcome.result_id is None
                or outcome.version is None):
            return outcome
        now = self.clock()
        rec = outcome.recognition
        ref = result_ref(self.regional_key, outcome.hospital_id, outcome.result_id)
        row = VerificationRow(
            new_id(now), now, who.token_id, who.role if who.token_id is not None else None, outcome.hospital_id, ref,
            outcome.version, outcome.verdict, None if rec is None else rec.decision,
            () if rec is None else tuple(r.code for r in rec.reasons), None if rec is None else rec.category,
            () if rec is None else tuple(ItemRef(i.system, i.code, i.category) for i in rec.items))
        self.index.remember(row)
        return replace(outcome, verification_id=row.id)

    # -- decisions ----------------------------------------------------------------------------------

    def decide(self, who: Principal, verification_id: str, decision: DecisionName, reason: str | None,
               detail: str | None) -> Recorded:
        """Record what the doctor did after verification ``verification_id``; see docs/kpis.md for the rules."""
        hospital = who.affiliation
        if hospital is None:
            raise DecisionRefused(403, "not-affiliated", "Doctor token not affiliated with a hospital",
                                  "decisions count for the doctor's hospital: use a token with role doctor:<hospital "
                                  "id> (mrledger token create --role doctor:<hid>)")
        v = self.index.verification(verification_id)
        if v is None:
            raise DecisionRefused(404, "unknown-verification", "Unknown verification",
                                  f"no verification {verification_id!r} (verify again: the id is in the answer of "
                                  "POST /v1/verify)")
        if v.verdict not in DECIDABLE:  # recorded before only decidable verifications were kept
            raise DecisionRefused(422, "not-decidable", "This verification cannot be decided",
                                  f"the verification's verdict is {v.verdict}: only a result established as the "
                                  "hospital's (authentic, pending or revoked) can be recognised or reordered")
        if v.token_id is not None and (v.role or "").split(":", 1)[0] == "doctor" and v.token_id != who.token_id:
            raise DecisionRefused(403, "not-your-verification", "Verification made by another doctor",
                                  "a verification made with a doctor token is decided with that token")
        detail = self._check(v, decision, reason, detail)
        facts = DecisionFacts(
            v.id, hospital, who.token_id, v.at, self.clock(), v.hospital_id, v.result_ref, v.version, v.verdict,
            v.recognition or "reorder", v.reasons, v.category, self._priced(v.items), self.catalogue.currency,
            decision, reason, detail)
        self._ensure_stream(hospital)
        try:
            accepted = self._commit(facts)
        except ConflictError:
            # Recorded before — a retry, a concurrent request, or one that committed the record without its index
            # (store/decisions.py): the committed record is the decision, indexed now if it is not.
            return self._again(self._recorded(facts), hospital, decision, reason, detail)
        if accepted.status == "duplicate":  # the same record again: decided in this very instant before
            return self._again(self._recorded(facts), hospital, decision, reason, detail)
        return Recorded(facts, accepted.leaf_hash, accepted.status)

    def _commit(self, facts: DecisionFacts) -> Accepted:
        """One transaction: the record, its index row and the verification it names (store/decisions.py) — on
        PostgreSQL one statement when the record is new (store/decision_write.py), which is every first time."""
        record = facts.record()
        try:
            check_ids(record)
            accepted = self.index.write_new(facts, record)
            if accepted is not None:
                return accepted
            return self.intake.submit(facts.stream, [record], within=self.index.indexing(facts))[0]
        except BaseException:
            self.index.release(facts.verification_id)  # rolled back: the buffer writes the verification after all
            raise

    def _recorded(self, facts: DecisionFacts) -> DecisionFacts:
        """The decision recorded for ``facts``' verification, indexed if it was not."""
        existing = self.index.decision(facts.verification_id)
        if existing is None:
            existing = DecisionFacts.from_record(self.store.record(facts.stream, facts.result_key, 1))
            self.index.index_decision(existing, self.store.versions(facts.stream, facts.result_key)[0].leaf_hash)
        return existing

    def _check(self, v: VerificationRow, decision: DecisionName, reason: str | None,
               detail: str | None) -> str | None:
        detail = None if detail is None else unicodedata.normalize("NFC", detail.strip()) or None
        reasons = self.catalogue.reorder_reasons
        if decision == "recognised":
            if v.recognition != "recognise":
                why = ", ".join(v.reasons) or "no recognition"
                raise DecisionRefused(422, "decision-not-allowed", "The programme does not recognise this result",
                                      f"the verification said reorder ({why}); record reordered")
            if reason is not None or detail is not None:
                raise DecisionRefused(422, "reason-not-applicable", "A reason is for reorders",
                                      "a recognised result takes no reason or detail")
            return None
        if reason is None:
            if v.recognition == "recognise":
                raise DecisionRefused(422, "reason-required", "A reason is required",
                                      "the programme would recognise this result: say why it is repeated (one of "
                                      f"{', '.join(reasons)})")
            if detail is not None:
                raise DecisionRefused(422, "reason-required", "A reason is required", "a detail needs a reason")
            return None
        spec = reasons.get(reason)
        if spec is None:
            raise DecisionRefused(422, "unknown-reason", "Not a configured reorder reason",
                                  f"{reason!r} is not one of {', '.join(reasons)}")
        if spec.detail == "required" and detail is None:
            raise DecisionRefused(422, "detail-required", "This reason needs a detail",
                                  f"reason {reason!r} needs a free-text detail")
        if spec.detail == "none" and detail is not None:
            raise DecisionRefused(422, "reason-not-applicable", "This reason takes no detail",
                                  f"reason {reason!r} takes no free-text detail")
        return detail

    def _again(self, existing: DecisionFacts, hospital: str, decision: str, reason: str | None,
               detail: str | None) -> Recorded:
        """A decision for a verification that has one: the same again is a duplicate (a retried request),
        anything else a conflict — a recorded decision is part of the ledger and is not replaced."""
        if (existing.hospital_id, existing.decision, existing.reason, existing.detail) != (hospital, decision, reason,
                                                                                           detail):
            raise DecisionRefused(409, "already-decided", "A decision is already recorded",
                                  f"verification {existing.verification_id} was decided {existing.decision} at "
                                  f"{existing.decided_at.isoformat()}; decisions are not replaced")
        leaf = self.store.versions(existing.stream, existing.result_key)[0].leaf_hash
        return Recorded(existing, leaf, "duplicate")

    def _priced(self, items: Sequence[ItemRef]) -> tuple[ItemRef, ...]:
        """The items with the catalogue's prices now (committed: money saved counts the price in force when
        the decision was made, not whatever the catalogue says later)."""
        prices = self._prices
        return tuple(replace(i, price_minor=prices.get((i.system, i.code))) for i in items)

    # -- encounters ---------------------------------------------------------------------------------

    def report(self, hospital_id: str, encounters: Sequence[EncounterIn]) -> list[Reported]:
        """Record encounters of one hospital, all or nothing; the same encounter again is a duplicate, the
        same id with other content a conflict (409)."""
        if not 1 <= len(encounters) <= MAX_ENCOUNTERS:
            raise DecisionRefused(422, "validation", "Request does not match the schema",
                                  f"send 1 to {MAX_ENCOUNTERS} encounters")
        ids = [e.encounter_id for e in encounters]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise DecisionRefused(422, "validation", "Request does not match the schema",
                                  f"encounter ids appear twice: {dupes[:5]}")
        now = self.clock()
        known = self.catalogue.categories
        for e in encounters:
            if e.seen_at > now + MAX_SKEW:
                raise DecisionRefused(422, "validation", "Request does not match the schema",
                                      f"encounter {e.encounter_id}: seen_at lies in the future")
            unknown = sorted(set(e.categories) - set(known))
            if unknown:
                raise DecisionRefused(422, "unknown-category", "Not a catalogue category",
                                      f"encounter {e.encounter_id}: {unknown[0]!r} is not one of {sorted(known)}")
        key = self.regional_key
        facts = [EncounterFacts(hospital_id, encounter_ref(key, hospital_id, e.encounter_id), e.seen_at,
                                patient_hash(key, e.patient_system, e.patient_value), e.retrieved,
                                tuple(sorted(set(e.categories)))) for e in encounters]
        self._ensure_stream(hospital_id)
        try:
            accepted = self.intake.submit(events_stream(hospital_id), [f.record() for f in facts])
        except ConflictError as exc:
            names = {f.result_key: e.encounter_id for f, e in zip(facts, encounters, strict=True)}
            clash = [names.get(rid, rid) for _, rid, _ in exc.keys][:5]
            raise DecisionRefused(409, "conflict", "Conflicts with what the ledger holds",
                                  f"encounter(s) {clash} were reported before with other content") from exc
        self.index.index_encounters([(f, a.leaf_hash) for f, a in zip(facts, accepted, strict=True)])
        return [Reported(e.encounter_id, f, a.leaf_hash, a.status)
                for e, f, a in zip(encounters, facts, accepted, strict=True)]

    # -- streams ------------------------------------------------------------------------------------

    def _ensure_stream(self, hospital_id: str) -> None:
        """Register the hospital's event stream on first use, like a hospital (database, and the chain when
        this node holds the registry's admin key; otherwise ``mrledger serve``'s sealer puts it there)."""
        stream = events_stream(hospital_id)
        if stream in self._streams:
            return
        with self._lock:
            if stream in self._streams:
                return
            if stream not in dict(self.store.hospitals()):
                try:
                    self.intake.register_hospital(stream, stream_name(hospital_id))
                except Exception as exc:  # the chain failed, not the database: the sealer registers it later
                    if stream not in dict(self.store.hospitals()):
                        raise
                    log.warning("event stream %s registered in the database, not yet on chain (%s: %s)", stream,
                                type(exc).__name__, exc)
            self._streams.add(stream)


__all__ = ["MAX_ENCOUNTERS", "DecisionRefused", "DecisionService", "EncounterIn", "Recorded", "RegionalKeyError",
           "Reported", "encounter_ref", "keyed", "load_regional_key", "new_id", "patient_hash", "result_ref"]
