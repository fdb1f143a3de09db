"""Event streams: where a hospital's recognition decisions and encounters are committed, and what they commit.

Why a stream per hospital and not a second mechanism: a decision that drives money must be as tamper-evident
as the result it is about, and the ledger already knows how to make records tamper-evident. So a hospital's
events are ordinary records (content type ``event``, ``mrledger.ledger.records.EventContent``) of a pseudo-hospital
``<hid>.events``: registered like a hospital (database and registry), submitted through ``Store.submit``,
sealed by the sealer and anchored by the worker unchanged, with their own gap-free batch sequence.

The records are pure functions of the KPI index rows (``mrledger.store.models.Decision`` / ``Encounter``): the
builders below take exactly the fields those rows hold. The audit check rebuilds each record from its row and
compares the leaf with the anchored one, so a row edited after anchoring cannot hide (docs/kpis.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mrledger.ledger import ResultRecord
from mrledger.ledger.records import format_time

#: Suffix of a hospital's event stream; hospital ids ending in it are reserved for streams.
STREAM_SUFFIX = ".events"
#: Code system of event records (``code.code`` is the event kind).
EVENT_SYSTEM = "urn:mrledger:event"
DECISION_EVENT, ENCOUNTER_EVENT = "recognition-decision", "encounter"
DECISION_FORMAT, ENCOUNTER_FORMAT = "mrl-decision/1", "mrl-encounter/1"
#: ``subject`` of a decision: the verification it is about (a decision names no patient).
VERIFICATION_SYSTEM = "urn:mrledger:verification"
#: ``subject`` of an encounter: HMAC-SHA256 of the patient identifier under the regional key.
PATIENT_HMAC_SYSTEM = "urn:mrledger:patient-hmac-sha256"
_MAX_ID = 64


def events_stream(hospital_id: str) -> str:
    """The stream id of a hospital: ``<hid>.events``, or for an id too long for that (hospital ids have up
    to 64 characters) its first 43 characters, a 52-bit hash of the whole id and the suffix — still a valid
    hospital id, still unique in practice, still recognisably that hospital's."""
    stream = hospital_id + STREAM_SUFFIX
    if len(stream) <= _MAX_ID:
        return stream
    digest = hashlib.sha256(hospital_id.encode("utf-8")).hexdigest()[:13]
    return f"{hospital_id[:43]}.{digest}{STREAM_SUFFIX}"


def is_event_stream(hospital_id: str) -> bool:
    return hospital_id.endswith(STREAM_SUFFIX)


def stream_name(hospital_id: str) -> str:
    """The registered name of a stream (the registry stores its hash; 256 characters at most)."""
    return f"recognition events of {hospital_id}"


@dataclass(frozen=True, slots=True)
class ItemRef:
    """A catalogue item a verification matched, with its price when the decision was made."""

    system: str
    code: str
    category: str
    price_minor: int | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"system": self.system, "code": self.code, "category": self.category}
        if self.price_minor is not None:
            obj["price_minor"] = self.price_minor
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> ItemRef:
        return cls(str(obj["system"]), str(obj["code"]), str(obj["category"]), obj.get("price_minor"))


@dataclass(frozen=True, slots=True)
class DecisionFacts:
    """Everything a decision commits (and its KPI row holds)."""

    verification_id: str
    hospital_id: str  # the doctor's hospital
    token_id: int | None
    verified_at: datetime
    decided_at: datetime
    result_hospital_id: str
    result_ref: str  # keyed hash of the verified result's id (``mrledger.service.decisions.result_ref``)
    result_version: int
    verdict: str
    recognition: str  # the programme's verdict: recognise | reorder
    rule_reasons: tuple[str, ...]
    category: str | None
    items: tuple[ItemRef, ...]
    currency: str
    decision: str  # what the doctor did: recognised | reordered
    reason: str | None
    detail: str | None

    @property
    def stream(self) -> str:
        return events_stream(self.hospital_id)

    @property
    def result_key(self) -> str:
        return f"decision:{self.verification_id}"

    @property
    def tests(self) -> int:
        """Tests avoided: the catalogue items of a recognised result (none for a reorder)."""
        return len(self.items) if self.decision == "recognised" else 0

    @property
    def amount_minor(self) -> int:
        """Money saved in minor units: the prices of those items as in force when decided."""
        if self.decision != "recognised":
            return 0
        return sum(i.price_minor or 0 for i in self.items)

    def data(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "format": DECISION_FORMAT, "verification_id": self.verification_id, "hospital_id": self.hospital_id,
            "verified_at": format_time(self.verified_at),
            "result": {"hospital_id": self.result_hospital_id, "result_ref": self.result_ref,
                       "version": self.result_version},
            "verdict": self.verdict, "recognition": self.recognition, "rule_reasons": list(self.rule_reasons),
            "items": [i.to_obj() for i in self.items], "currency": self.currency, "decision": self.decision,
        }
        for key, value in (("token_id", self.token_id), ("category", self.category), ("reason", self.reason),
                           ("detail", self.detail)):
            if value is not None:
                obj[key] = value
        return obj

    @classmethod
    def from_record(cls, record: ResultRecord) -> DecisionFacts:
        """The facts a committed decision record holds (the inverse of ``record``; KeyError/ValueError when
        the record is not one)."""
        content = record.content
        if content.type != "event" or content.event != DECISION_EVENT:
            raise ValueError(f"{record.result_id} is not a decision record")
        d, r = content.data, content.data["result"]
        return cls(str(d["verification_id"]), str(d["hospital_id"]), d.get("token_id"),
                   datetime.fromisoformat(d["verified_at"]), record.issued, str(r["hospital_id"]),
                   str(r["result_ref"]), int(r["version"]), str(d["verdict"]), str(d["recognition"]),
                   tuple(d["rule_reasons"]), d.get("category"), tuple(ItemRef.from_obj(i) for i in d["items"]),
                   str(d["currency"]), str(d["decision"]), d.get("reason"), d.get("detail"))

    def record_obj(self) -> dict[str, Any]:
        """The record as a JSON object, not yet validated (``record`` validates it)."""
        return {
            "hospital_id": self.stream, "result_id": self.result_key, "version": 1, "kind": "other",
            "code": {"system": EVENT_SYSTEM, "code": DECISION_EVENT},
            "subject": {"system": VERIFICATION_SYSTEM, "value": self.verification_id},
            "effective": format_time(self.verified_at), "issued": format_time(self.decided_at), "status": "final",
            "content": {"type": "event", "event": DECISION_EVENT, "data": self.data()},
        }

    def record(self) -> ResultRecord:
        return ResultRecord.from_obj(self.record_obj())


@dataclass(frozen=True, slots=True)
class EncounterFacts:
    """Everything an encounter commits (and its KPI row holds)."""

    hospital_id: str
    encounter_ref: str  # keyed hash of the hospital's encounter id (``mrledger.service.decisions.encounter_ref``)
    seen_at: datetime
    patient_hash: str
    retrieved: bool
    categories: tuple[str, ...]

    @property
    def stream(self) -> str:
        return events_stream(self.hospital_id)

    @property
    def result_key(self) -> str:
        return f"encounter:{self.encounter_ref}"

    def data(self) -> dict[str, Any]:
        return {"format": ENCOUNTER_FORMAT, "encounter_ref": self.encounter_ref, "hospital_id": self.hospital_id,
                "retrieved": self.retrieved, "categories": list(self.categories)}

    def record_obj(self) -> dict[str, Any]:
        """The record as a JSON object, not yet validated (``record`` validates it)."""
        return {
            "hospital_id": self.stream, "result_id": self.result_key, "version": 1, "kind": "other",
            "code": {"system": EVENT_SYSTEM, "code": ENCOUNTER_EVENT},
            "subject": {"system": PATIENT_HMAC_SYSTEM, "value": self.patient_hash},
            "effective": format_time(self.seen_at), "issued": format_time(self.seen_at), "status": "final",
            "content": {"type": "event", "event": ENCOUNTER_EVENT, "data": self.data()},
        }

    def record(self) -> ResultRecord:
        return ResultRecord.from_obj(self.record_obj())


def join_codes(codes: Sequence[str]) -> str:
    return ",".join(codes)


def split_codes(text: str) -> tuple[str, ...]:
    return tuple(c for c in text.split(",") if c)


__all__ = ["DECISION_EVENT", "DECISION_FORMAT", "ENCOUNTER_EVENT", "ENCOUNTER_FORMAT", "EVENT_SYSTEM",
           "PATIENT_HMAC_SYSTEM", "STREAM_SUFFIX", "VERIFICATION_SYSTEM", "DecisionFacts", "EncounterFacts",
           "ItemRef", "events_stream", "is_event_stream", "join_codes", "split_codes", "stream_name"]
