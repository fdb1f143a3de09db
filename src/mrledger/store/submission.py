"""Submission: records of one hospital accepted all or nothing, each under its own salt and leaf.

Every check that can refuse a submission (conflicting content, broken lineage, a later version naming
another patient or test) runs inside the one write transaction that inserts the rows, so a refused
submission writes nothing and a concurrent one cannot slip between the check and the insert.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, bindparam, insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mrledger.ledger import ResultRecord, commit, content_digest
from mrledger.ledger.leaf import SALT_BYTES
from mrledger.ledger.statusmap import status_key
from mrledger.store.bulk import IN_CHUNK, DriverInsert, arrays, processed
from mrledger.store.changes import IDENTITY_WORDS, describe, identity_detail, identity_differs
from mrledger.store.crypto import RECORD_JSON, record_context
from mrledger.store.errors import (
    ConflictError,
    IdentityChangeError,
    LineageError,
    SubmissionError,
    UnknownHospitalError,
)
from mrledger.store.fastread import Prepared
from mrledger.store.models import Hospital, PendingLeaf, RecordVersion, ResultAlias
from mrledger.store.results import version_row
from mrledger.store.statusmaps import first_version_key
from mrledger.store.vault import Vault

#: Most records one submission may carry (the API documents the same limit).
MAX_SUBMISSION = 10_000

_Known = tuple[bytes, bytes]
SaltSource = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a hospital gets back per record: its leaf, and whether this call created it."""

    hospital_id: str
    result_id: str
    version: int
    leaf_hash: bytes
    status: Literal["accepted", "duplicate"]


#: Work done in a submission's own transaction after its rows are inserted (``Submission.submit``).
Within = Callable[[Session, list[Accepted]], None]


#: Core tables for the bulk inserts of a submission (the ORM's per-row bookkeeping is not needed there).
_RECORD_VERSIONS = cast(Table, RecordVersion.__table__)
_PENDING_LEAVES = cast(Table, PendingLeaf.__table__)
#: The columns a new version's row names, in ``_INSERT_VERSIONS``' order.
VERSION_COLUMNS = ("hospital_id", "result_hmac", "version", "status", "supersedes", "record_enc", "content_digest",
                   "salt_enc", "leaf_hash", "status_key", "accepted_at")
_INSERT_VERSIONS = DriverInsert.values(_RECORD_VERSIONS, VERSION_COLUMNS)
#: A new version's pending row, its id looked up by the unique (hospital, result, version) in the same statement;
#: on PostgreSQL every row of a submission in one statement, joined to the keys' arrays on that unique key.
_PENDING_COLUMNS = ["record_version_id", "hospital_id", "accepted_at"]
_PENDING_SOURCE = select(RecordVersion.id, RecordVersion.hospital_id, RecordVersion.accepted_at)
_PENDING_KEYS = arrays(_RECORD_VERSIONS, ("h", "m", "v"), ("hospital_id", "result_hmac", "version"))
_INSERT_PENDING = DriverInsert(insert(_PENDING_LEAVES).from_select(_PENDING_COLUMNS, _PENDING_SOURCE.where(
    RecordVersion.hospital_id == bindparam("h"), RecordVersion.result_hmac == bindparam("m"),
    RecordVersion.version == bindparam("v"))), ("h", "m", "v"),
    many=postgresql.insert(_PENDING_LEAVES).from_select(_PENDING_COLUMNS, _PENDING_SOURCE.join(_PENDING_KEYS, and_(
        RecordVersion.hospital_id == _PENDING_KEYS.c.h, RecordVersion.result_hmac == _PENDING_KEYS.c.m,
        RecordVersion.version == _PENDING_KEYS.c.v))))


#: Compiled once for the write path (``fastread.Prepared``): built and cache-keyed by SQLAlchemy on every call, the
#: hospital's lookup (``Session.get``) and the held versions' SELECT were half of a decision's ``submit`` in a city
#: replay's API processes (py-spy, issue 20), where every decision is a one-record submission.
_HOSPITAL = Prepared(select(Hospital.id).where(Hospital.id == bindparam("h")))
_EXISTING_COLUMNS = (RecordVersion.result_hmac, RecordVersion.version, RecordVersion.content_digest,
                     RecordVersion.leaf_hash, RecordVersion.status_key)
_EXISTING_ONE = Prepared(select(*_EXISTING_COLUMNS).where(RecordVersion.hospital_id == bindparam("h"),
                                                          RecordVersion.result_hmac == bindparam("m")))


class Submission(Vault):
    """Accepting records (a mixin of ``Store``, which sets ``_salts``)."""

    _salts: SaltSource

    def submit(self, hospital_id: str, records: Sequence[ResultRecord],
               aliases: Mapping[str, Sequence[str]] | None = None, within: Within | None = None) -> list[Accepted]:
        """Accept records of one hospital, all or nothing.

        Idempotent per (hospital, result_id, version): the same content again returns the leaf it got
        the first time (same salt, so the same receipt); other content raises ConflictError and writes
        nothing. A version > 1 must supersede a version that is held here or in the same submission.
        ``within(session, accepted)`` runs in the same transaction after the rows are inserted, so what it
        writes (an event's index row) commits with the records or not at all.
        """
        if not records:
            raise SubmissionError("a submission needs at least one record")
        if len(records) > MAX_SUBMISSION:
            raise SubmissionError(f"{len(records)} records in one submission; the limit is {MAX_SUBMISSION}")
        foreign = [r.key for r in records if r.hospital_id != hospital_id]
        if foreign:
            raise SubmissionError(f"records of another hospital in a submission for {hospital_id!r}: {foreign[:3]}")
        try:
            return self._submit(hospital_id, records, aliases or {}, within)
        except IntegrityError:
            # A concurrent submission inserted one of our keys between our read and our insert. Retry
            # once: the rows are now visible and resolve to duplicate or conflict.
            return self._submit(hospital_id, records, aliases or {}, within)

    def _submit(self, hospital_id: str, records: Sequence[ResultRecord],
                aliases: Mapping[str, Sequence[str]], within: Within | None) -> list[Accepted]:
        digests = [content_digest(r) for r in records]
        wanted: dict[tuple[str, int], bytes] = {}
        for r, d in zip(records, digests, strict=True):
            key = (r.result_id, r.version)
            if wanted.setdefault(key, d) != d:
                raise ConflictError(f"{r.key} appears twice with different content", [r.key])
        now = self._clock()
        keys = self.keys
        # Keyed hashes once per result id (a correction and its original share one).
        hmacs = {rid: keys.index(hospital_id, rid) for rid in {r.result_id for r in records}}
        with self.unit_of_work() as s:
            if not _HOSPITAL.rows(s.connection(), {"h": hospital_id}):
                raise UnknownHospitalError(f"unknown hospital {hospital_id!r}")
            held_keys: dict[str, bytes | None] = {}
            existing = self._existing(s, hospital_id, hmacs, held_keys)
            conflicts = [(hospital_id, rid, v) for (rid, v), d in wanted.items()
                         if (rid, v) in existing and existing[(rid, v)][0] != d]
            if conflicts:
                _, rid, v = conflicts[0]
                first = next(r for r in records if (r.result_id, r.version) == (rid, v))
                row = version_row(s, hospital_id, hmacs[rid], rid, v)
                held = ResultRecord.from_json(self._decrypt(
                    RECORD_JSON, record_context(hospital_id, hmacs[rid], v, row.leaf_hash), row.record_enc).decode())
                raise ConflictError(f"{len(conflicts)} record(s) were submitted before with other content; "
                                    f"{first.key}: {describe(held, first)}", conflicts)
            self._check_lineage(records, existing)
            self._check_identity(s, hospital_id, records, existing, hmacs)
            rows: list[tuple[object, ...]] = []
            out: list[Accepted] = []
            new_leaves: dict[tuple[str, int], bytes] = {}
            map_keys = self._map_keys(s, hospital_id, records, held_keys, hmacs)
            first_salts: dict[str, bytes] = {}
            for r, d in zip(records, digests, strict=True):
                key = (r.result_id, r.version)
                known = existing[key][1] if key in existing else new_leaves.get(key)
                if known is not None:
                    out.append(Accepted(hospital_id, r.result_id, r.version, known, "duplicate"))
                    continue
                new, leaf, salt = self._new_version(hospital_id, r, d, hmacs[r.result_id])
                first_salts.setdefault(r.result_id, salt)
                new_leaves[key] = leaf
                rows.append((*new, r.result_id))
                out.append(Accepted(hospital_id, r.result_id, r.version, leaf, "accepted"))
            for rid, salt in first_salts.items():
                # A result new to this ledger is keyed by the salt of its first stored version (the first row
                # inserted, as store/statusmaps.py reads it back; docs/receipt.md §15).
                map_keys.setdefault(rid, status_key(hospital_id, rid, salt))
            rows = [(*row[:-1], map_keys[cast(str, row[-1])]) for row in rows]
            if rows:
                # Straight to the driver (mrledger.store.bulk: SQLAlchemy's per-row parameter work was a third of
                # submit's time); the pending rows find their record's id by its unique key, in SQL.
                conn = s.connection()
                stamp = processed(_RECORD_VERSIONS.c.accepted_at, now, conn.dialect)
                _INSERT_VERSIONS.run(conn, [(hospital_id, *row, stamp) for row in rows])
                _INSERT_PENDING.run(conn, [(hospital_id, row[0], row[1]) for row in rows])
            if aliases:
                self._add_aliases(s, hospital_id, aliases, hmacs)
            if within is not None:
                within(s, out)
            return out

    def _new_version(self, hospital_id: str, r: ResultRecord, digest: bytes, result_hmac: bytes
                     ) -> tuple[tuple[object, ...], bytes, bytes]:
        """A new version's row up to its leaf (``_INSERT_VERSIONS``' columns after the hospital, before the status-map
        key), its leaf and its salt: a fresh salt, the leaf committing to it, record and salt encrypted under the
        version's context."""
        salt = self._salts(SALT_BYTES)
        leaf = commit(r, salt)
        record_enc, salt_enc = self.keys.encrypt_version(record_context(hospital_id, result_hmac, r.version, leaf),
                                                         r.to_json().encode("utf-8"), salt)
        return (result_hmac, r.version, r.status, r.supersedes, record_enc, digest, salt_enc, leaf), leaf, salt

    def first_version(self, hospital_id: str, record: ResultRecord) -> tuple[dict[str, object], bytes]:
        """The ``record_versions`` row ``submit`` would insert for ``record`` as the first version of a result new to
        this ledger, by column (Python values), and its leaf: for the one write path that inserts it itself, a
        decision in one statement (store/decision_write.py), which must make exactly this row."""
        if record.version != 1 or record.supersedes is not None:
            raise SubmissionError(f"{record.key} is not a first version")
        row, leaf, salt = self._new_version(hospital_id, record, content_digest(record),
                                            self.keys.index(hospital_id, record.result_id))
        values = (hospital_id, *row, status_key(hospital_id, record.result_id, salt), self._clock())
        return dict(zip(VERSION_COLUMNS, values, strict=True)), leaf

    def _add_aliases(self, s: Session, hospital_id: str, aliases: Mapping[str, Sequence[str]],
                     hmacs: Mapping[str, bytes]) -> None:
        """``result_aliases`` rows for this submission's results (``submit``'s ``aliases``: result id → other ids
        it answers to), skipping those already there: a resend adds nothing."""
        wanted = {(self.keys.index(hospital_id, alias), hmacs[rid])
                  for rid, names in aliases.items() if rid in hmacs for alias in names if alias != rid}
        if not wanted:
            return
        held = {(a, r) for a, r in s.execute(select(ResultAlias.alias_hmac, ResultAlias.result_hmac).where(
            ResultAlias.hospital_id == hospital_id,
            ResultAlias.alias_hmac.in_(sorted({a for a, _ in wanted}))))}
        s.add_all(ResultAlias(hospital_id=hospital_id, alias_hmac=a, result_hmac=r) for a, r in sorted(wanted - held))

    def _map_keys(self, s: Session, hospital_id: str, records: Sequence[ResultRecord],
                  held: Mapping[str, bytes | None], hmacs: Mapping[str, bytes]) -> dict[str, bytes]:
        """Status-map keys of the results this submission adds versions to and that are already held (the
        others get theirs from their first new version's salt in ``_submit``). Why one key per result: a
        patient holding version 1 must find the entry that version 3 updated (statusmap.status_key). A held
        row without a key (written before migration 0013, not yet backfilled) gets it from its first salt."""
        keys: dict[str, bytes] = {}
        for rid in {r.result_id for r in records if r.result_id in held}:
            known = held[rid]
            keys[rid] = known if known is not None else first_version_key(self, s, hospital_id, hmacs[rid])
        return keys

    @staticmethod
    def _existing(s: Session, hospital_id: str, hmacs: Mapping[str, bytes],
                  map_keys: dict[str, bytes | None] | None = None) -> dict[tuple[str, int], _Known]:
        """(result_id, version) -> (content digest, leaf hash) of what this hospital already submitted;
        ``hmacs`` maps each result id to its keyed hash, which is what the rows hold. ``map_keys`` receives
        each held result's status-map key."""
        found: dict[tuple[str, int], _Known] = {}
        by_hmac = {h: rid for rid, h in hmacs.items()}
        keys = sorted(by_hmac)
        if len(keys) == 1:  # a decision, or one result: the statement compiled once (``_EXISTING_ONE``)
            rows: Any = _EXISTING_ONE.rows(s.connection(), {"h": hospital_id, "m": keys[0]})
        else:
            rows = (row for i in range(0, len(keys), IN_CHUNK) for row in s.execute(
                select(*_EXISTING_COLUMNS).where(RecordVersion.hospital_id == hospital_id,
                                                 RecordVersion.result_hmac.in_(keys[i:i + IN_CHUNK]))))
        for h, v, d, leaf, key in rows:
            found[(by_hmac[h], v)] = (d, leaf)
            if map_keys is not None and map_keys.get(by_hmac[h]) is None:
                map_keys[by_hmac[h]] = key
        return found

    @staticmethod
    def _check_lineage(records: Sequence[ResultRecord], existing: dict[tuple[str, int], _Known]) -> None:
        present = set(existing) | {(r.result_id, r.version) for r in records}
        for r in records:
            if r.supersedes is not None and (r.result_id, r.supersedes) not in present:
                raise LineageError(f"{r.key} supersedes version {r.supersedes}, which this ledger does not hold")

    def _check_identity(self, s: Session, hospital_id: str, records: Sequence[ResultRecord],
                        existing: Mapping[tuple[str, int], _Known], hmacs: Mapping[str, bytes]) -> None:
        """Every later version keeps the patient (``subject``) and the test (``code``: system and code; the
        display may change) of version 1. Two senders reusing one order number once made another patient's
        test "version 2" of a result, and the first patient's receipt then read as superseded: a version
        that changes who or what was tested is a different result, refused here for every intake path.
        Version 1 is read from the submission, else decrypted from the store (one row per such result: only
        later versions pay, and results rarely have more than three)."""
        later = [r for r in records if r.version > 1 and (r.result_id, r.version) not in existing]
        if not later:
            return
        firsts = {r.result_id: r for r in records if r.version == 1}
        for rid in {r.result_id for r in later} - set(firsts):
            if (rid, 1) not in existing:
                continue  # nothing to compare with (the lineage check has the last word on what is held)
            row = version_row(s, hospital_id, hmacs[rid], rid, 1)
            context = record_context(hospital_id, hmacs[rid], 1, row.leaf_hash)
            firsts[rid] = ResultRecord.from_json(self._decrypt(RECORD_JSON, context, row.record_enc).decode("utf-8"))
        for r in later:
            first = firsts.get(r.result_id)
            differs = [] if first is None else identity_differs(first, r)
            if differs:
                raise IdentityChangeError(
                    f"{r.key} names {' and '.join(IDENTITY_WORDS[d] for d in differs)} than version 1 of result "
                    f"{r.result_id!r} ({'; '.join(identity_detail(d, first, r) for d in differs)}): a new version "
                    "must keep the patient and the test of version 1. This is a different result reusing the id: "
                    "give it an id of its own (HL7: the filler's namespace in OBR-3.2/3.3; FHIR: an identifier "
                    "with a system)", [(hospital_id, r.result_id, 1)], differs)

