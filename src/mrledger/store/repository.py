"""The store's repository API: accept results, seal batches, build receipts.

Every public method is one unit of work (one transaction): a submission of 1,000 records lands whole
or not at all, and a seal moves its leaves out of the pending outbox in the same transaction that
writes the batch. Callers never see a session.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast

from sqlalchemy import Connection, Engine, Row, Table, and_, bindparam, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mrledger.ledger import Anchor as AnchorInfo
from mrledger.ledger import (
    BatchHead,
    BatchSignature,
    MerkleTree,
    Receipt,
    ResultRecord,
    build_batch,
    canonicalize,
    commit,
    content_digest,
    parse_json,
)
from mrledger.ledger.leaf import SALT_BYTES
from mrledger.ledger.records import HOSPITAL_ID_PATTERN
from mrledger.store.bulk import DriverInsert, processed
from mrledger.store.changes import IDENTITY_WORDS, describe, identity_detail, identity_differs
from mrledger.store.crypto import RECORD_JSON, SALT, Keyring, MasterKey, master_key_from_env, record_context
from mrledger.store.db import make_engine, migrate
from mrledger.store.errors import (
    ConflictError,
    IdentityChangeError,
    KeysUnavailableError,
    LineageError,
    MasterKeyError,
    NotFoundError,
    SubmissionError,
    UnknownDataKeyError,
    UnknownHospitalError,
)
from mrledger.store.keystore import convert_backlog, load_keyring, scrub_sqlite
from mrledger.store.models import Anchor, Batch, BatchLeaf, Hospital, PendingLeaf, RecordVersion, ResultAlias
from mrledger.store.salts import SaltPool
from mrledger.store.unit import UnitOfWork

log = logging.getLogger("mrledger.store")

#: Most records one submission may carry (the API documents the same limit).
MAX_SUBMISSION = 10_000
_IN_CHUNK = 500

Clock = Callable[[], datetime]
_Known = tuple[bytes, bytes]
SaltSource = Callable[[int], bytes]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a hospital gets back per record: its leaf, and whether this call created it."""

    hospital_id: str
    result_id: str
    version: int
    leaf_hash: bytes
    status: Literal["accepted", "duplicate"]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    status: str
    supersedes: int | None
    leaf_hash: bytes
    accepted_at: datetime
    batch_seq: int | None
    leaf_index: int | None


#: Core tables for the bulk inserts of a submission (the ORM's per-row bookkeeping is not needed there).
_RECORD_VERSIONS = cast(Table, RecordVersion.__table__)
_PENDING_LEAVES = cast(Table, PendingLeaf.__table__)
_INSERT_VERSIONS = DriverInsert.values(_RECORD_VERSIONS, (
    "hospital_id", "result_hmac", "version", "status", "supersedes", "record_enc", "content_digest", "salt_enc",
    "leaf_hash", "accepted_at"))
_INSERT_BATCH_LEAVES = DriverInsert.values(cast(Table, BatchLeaf.__table__),
                                           ("hospital_id", "seq", "leaf_index", "record_version_id"))
#: A new version's pending row, its id looked up by the unique (hospital, result, version) in the same statement.
_INSERT_PENDING = DriverInsert(insert(_PENDING_LEAVES).from_select(
    ["record_version_id", "hospital_id", "accepted_at"],
    select(RecordVersion.id, RecordVersion.hospital_id, RecordVersion.accepted_at).where(
        RecordVersion.hospital_id == bindparam("h"), RecordVersion.result_hmac == bindparam("m"),
        RecordVersion.version == bindparam("v"))), ("h", "m", "v"))
#: (first signed seq of a hospital, whether this ledger holds batch ``seq``): ``sealed_before_signing``.
_SIGNED_FROM = select(
    select(func.min(Batch.seq)).where(Batch.hospital_id == bindparam("hid"), Batch.signature.is_not(None))
    .scalar_subquery(),
    select(func.count()).where(Batch.hospital_id == bindparam("hid"), Batch.seq == bindparam("seq"))
    .scalar_subquery())
_VERSIONS = (
    select(RecordVersion.version, RecordVersion.status, RecordVersion.supersedes, RecordVersion.leaf_hash,
           RecordVersion.accepted_at, BatchLeaf.seq, BatchLeaf.leaf_index)
    .outerjoin(BatchLeaf, BatchLeaf.record_version_id == RecordVersion.id)
    .where(RecordVersion.hospital_id == bindparam("hid"), RecordVersion.result_hmac == bindparam("rid"))
    .order_by(RecordVersion.version)
)
#: One stored version (``rid`` is the keyed hash): what ``record`` decrypts, on the plain-connection path too.
_ROW = select(RecordVersion.id, RecordVersion.version, RecordVersion.record_enc, RecordVersion.salt_enc,
              RecordVersion.leaf_hash).where(RecordVersion.hospital_id == bindparam("hid"),
                                             RecordVersion.result_hmac == bindparam("rid"))
_VERSION_ROW = _ROW.where(RecordVersion.version == bindparam("v"))
_LATEST_ROW = _ROW.order_by(RecordVersion.version.desc()).limit(1)


class Store(UnitOfWork):
    """Repository over one database. Thread-safe: each call opens its own session. Transactions of other
    modules go through the inherited ``unit_of_work`` / ``read`` / ``single_read`` (store/unit.py).

    Record contents, salts and result ids are encrypted at rest (``mrledger.store.crypto``, docs/encryption.md) under
    data keys that ``master_key`` unwraps: a key, or a key file (re-read when a rotation added a data key
    this process has not seen). Without one, ``MRL_MASTER_KEY_FILE`` / ``MRL_MASTER_KEY`` are used, the
    variables ``mrledger serve`` documents; with neither, the store still seals, anchors and reads batches
    (the anchoring worker needs no more), but refuses to write or read records — there is no clear mode.
    The keys are unwrapped once, on first use (``Store.open``: at open, so a wrong key stops the caller
    there), and held for the life of the store."""

    def __init__(self, engine: Engine, *, clock: Clock = utcnow, salts: SaltSource | None = None,
                 master_key: MasterKey | Path | None = None) -> None:
        super().__init__(engine)
        self._master_source = master_key if master_key is not None else master_key_from_env()
        self._keys: Keyring | None = None
        self._keys_lock = threading.Lock()
        self._clock = clock
        self._salts = salts or SaltPool()  # the OS CSPRNG in 64 KiB draws (store/salts.py)
        self._tree = lru_cache(maxsize=64)(self._load_tree)

    @classmethod
    def open(cls, url: str, **kwargs: object) -> Store:
        """Open (and migrate to head) the database at ``url``."""
        engine = make_engine(url)
        migrate(engine)
        store = cls(engine, **kwargs)  # type: ignore[arg-type]
        if store._master_source is not None:
            store.unlock()
        return store

    # -- keys ---------------------------------------------------------------------------------------

    @property
    def keys(self) -> Keyring:
        keys = self._keys
        return keys if keys is not None else self.unlock()

    def unlock(self) -> Keyring:
        """Unwrap this database's keys (creating them in a database that has none), then encrypt any rows an
        earlier version wrote in clear. Idempotent; raises MasterKeyError for a key of another database."""
        with self._keys_lock:
            if self._keys is None:
                if self._master_source is None:
                    raise KeysUnavailableError("this store was opened without a master key: set MRL_MASTER_KEY_FILE "
                                               "or MRL_MASTER_KEY (docs/encryption.md)")
                keys = self._load_keys()
                if convert_backlog(self.unit_of_work, keys) and self.engine.dialect.name == "sqlite":
                    scrub_sqlite(self.engine)
                self._keys = keys
            return self._keys

    def _load_keys(self) -> Keyring:
        source = self._master_source
        master = MasterKey.from_file(source) if isinstance(source, Path) else source
        assert master is not None
        try:
            return load_keyring(self.unit_of_work, master, self._clock())
        except MasterKeyError:
            # `mrledger keys rotate` writes the new key next to the old one before its transaction and moves it
            # over the old one after commit; a crash in between leaves the database under the new key.
            pending = source.with_name(source.name + ".new") if isinstance(source, Path) else None
            if pending is None or not pending.is_file():
                raise
            keys = load_keyring(self.unit_of_work, MasterKey.from_file(pending), self._clock())
            log.warning("the database is under the master key in %s (an interrupted `mrledger keys rotate`); move "
                        "it over %s", pending, source)
            return keys

    def _reload_keys(self) -> Keyring:
        """Pick up a data key created after this process unwrapped its keys (``mrledger keys rotate
        --new-data-key`` and a node that started since then wrote with it)."""
        with self._keys_lock:
            self._keys = self._load_keys()
            return self._keys

    def _decrypt(self, label: bytes, context: bytes, blob: bytes) -> bytes:
        try:
            return self.keys.decrypt(label, context, blob)
        except UnknownDataKeyError as exc:
            keys = self._reload_keys()
            if exc.key_id not in keys.key_ids:
                raise
            return keys.decrypt(label, context, blob)

    def result_key(self, hospital_id: str, result_id: str) -> bytes:
        """What ``record_versions.result_hmac`` holds for a result id: query with this, never the clear id."""
        return self.keys.index(hospital_id, result_id)

    def _open_version(self, hospital_id: str, result_hmac: bytes, version: int, leaf: bytes, record_enc: bytes,
                      salt_enc: bytes) -> tuple[str, bytes]:
        """(record JSON, salt) of a stored version; DecryptionError if either was altered or moved."""
        context = record_context(hospital_id, result_hmac, version, leaf)
        return (self._decrypt(RECORD_JSON, context, record_enc).decode("utf-8"),
                self._decrypt(SALT, context, salt_enc))

    # -- hospitals ----------------------------------------------------------------------------------

    def register_hospital(self, hospital_id: str, name: str) -> None:
        """Register a hospital; repeating the same registration is a no-op, another name a conflict."""
        if not re.fullmatch(HOSPITAL_ID_PATTERN, hospital_id):
            raise SubmissionError("hospital id must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)")
        if not name.strip() or len(name) > 256:
            raise SubmissionError("hospital name must be 1-256 characters")
        with self.unit_of_work() as s:
            existing = s.get(Hospital, hospital_id)
            if existing is not None:
                if existing.name != name:
                    raise ConflictError(f"hospital {hospital_id!r} is registered under another name")
                return
            s.add(Hospital(id=hospital_id, name=name, created_at=self._clock()))

    def hospitals(self) -> list[tuple[str, str]]:
        with self.read() as s:
            return [(h.id, h.name) for h in s.scalars(select(Hospital).order_by(Hospital.id))]

    # -- submission ---------------------------------------------------------------------------------

    def submit(self, hospital_id: str, records: Sequence[ResultRecord],
               aliases: Mapping[str, Sequence[str]] | None = None) -> list[Accepted]:
        """Accept records of one hospital, all or nothing.

        Idempotent per (hospital, result_id, version): the same content again returns the leaf it got
        the first time (same salt, so the same receipt); other content raises ConflictError and writes
        nothing. A version > 1 must supersede a version that is held here or in the same submission.
        """
        if not records:
            raise SubmissionError("a submission needs at least one record")
        if len(records) > MAX_SUBMISSION:
            raise SubmissionError(f"{len(records)} records in one submission; the limit is {MAX_SUBMISSION}")
        foreign = [r.key for r in records if r.hospital_id != hospital_id]
        if foreign:
            raise SubmissionError(f"records of another hospital in a submission for {hospital_id!r}: {foreign[:3]}")
        try:
            return self._submit(hospital_id, records, aliases or {})
        except IntegrityError:
            # A concurrent submission inserted one of our keys between our read and our insert. Retry
            # once: the rows are now visible and resolve to duplicate or conflict.
            return self._submit(hospital_id, records, aliases or {})

    def _submit(self, hospital_id: str, records: Sequence[ResultRecord],
                aliases: Mapping[str, Sequence[str]]) -> list[Accepted]:
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
            if s.get(Hospital, hospital_id) is None:
                raise UnknownHospitalError(f"unknown hospital {hospital_id!r}")
            existing = self._existing(s, hospital_id, hmacs)
            conflicts = [(hospital_id, rid, v) for (rid, v), d in wanted.items()
                         if (rid, v) in existing and existing[(rid, v)][0] != d]
            if conflicts:
                _, rid, v = conflicts[0]
                first = next(r for r in records if (r.result_id, r.version) == (rid, v))
                row = self._version_row(s, hospital_id, hmacs[rid], rid, v)
                held = ResultRecord.from_json(self._decrypt(
                    RECORD_JSON, record_context(hospital_id, hmacs[rid], v, row.leaf_hash), row.record_enc).decode())
                raise ConflictError(f"{len(conflicts)} record(s) were submitted before with other content; "
                                    f"{first.key}: {describe(held, first)}", conflicts)
            self._check_lineage(records, existing)
            self._check_identity(s, hospital_id, records, existing, hmacs)
            rows: list[tuple[object, ...]] = []
            out: list[Accepted] = []
            new_leaves: dict[tuple[str, int], bytes] = {}
            for r, d in zip(records, digests, strict=True):
                key = (r.result_id, r.version)
                known = existing[key][1] if key in existing else new_leaves.get(key)
                if known is not None:
                    out.append(Accepted(hospital_id, r.result_id, r.version, known, "duplicate"))
                    continue
                salt = self._salts(SALT_BYTES)
                leaf = commit(r, salt)
                new_leaves[key] = leaf
                result_hmac = hmacs[r.result_id]
                record_enc, salt_enc = keys.encrypt_version(record_context(hospital_id, result_hmac, r.version, leaf),
                                                            r.to_json().encode("utf-8"), salt)
                rows.append((result_hmac, r.version, r.status, r.supersedes, record_enc, d, salt_enc, leaf))
                out.append(Accepted(hospital_id, r.result_id, r.version, leaf, "accepted"))
            if rows:
                # Straight to the driver (mrledger.store.bulk: SQLAlchemy's per-row parameter work was a third of
                # submit's time); the pending rows find their record's id by its unique key, in SQL.
                conn = s.connection()
                stamp = processed(_RECORD_VERSIONS.c.accepted_at, now, conn.dialect)
                _INSERT_VERSIONS.run(conn, [(hospital_id, *row, stamp) for row in rows])
                _INSERT_PENDING.run(conn, [(hospital_id, row[0], row[1]) for row in rows])
            if aliases:
                self._add_aliases(s, hospital_id, aliases, hmacs)
            return out

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

    def alias_targets(self, hospital_id: str, alias: str) -> list[str]:
        """The result ids a result was also submitted as (``result_aliases``): e.g. the report an Observation
        was committed inside. Each target is named by decrypting its latest stored version."""
        found = []
        with self.read() as s:
            targets = s.scalars(select(ResultAlias.result_hmac).where(
                ResultAlias.hospital_id == hospital_id,
                ResultAlias.alias_hmac == self.keys.index(hospital_id, alias)).order_by(ResultAlias.id)).all()
            for rid in targets:
                row = s.execute(_LATEST_ROW, {"hid": hospital_id, "rid": rid}).first()
                if row is not None:
                    context = record_context(hospital_id, rid, row.version, row.leaf_hash)
                    record = ResultRecord.from_json(self._decrypt(RECORD_JSON, context, row.record_enc).decode())
                    found.append(record.result_id)
        return found

    @staticmethod
    def _existing(s: Session, hospital_id: str, hmacs: Mapping[str, bytes]) -> dict[tuple[str, int], _Known]:
        """(result_id, version) -> (content digest, leaf hash) of what this hospital already submitted;
        ``hmacs`` maps each result id to its keyed hash, which is what the rows hold."""
        found: dict[tuple[str, int], _Known] = {}
        by_hmac = {h: rid for rid, h in hmacs.items()}
        keys = sorted(by_hmac)
        for i in range(0, len(keys), _IN_CHUNK):
            q = select(RecordVersion.result_hmac, RecordVersion.version, RecordVersion.content_digest,
                       RecordVersion.leaf_hash).where(RecordVersion.hospital_id == hospital_id,
                                                      RecordVersion.result_hmac.in_(keys[i:i + _IN_CHUNK]))
            for h, v, d, leaf in s.execute(q):
                found[(by_hmac[h], v)] = (d, leaf)
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
            row = self._version_row(s, hospital_id, hmacs[rid], rid, 1)
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

    # -- sealing ------------------------------------------------------------------------------------

    def seal(self, hospital_id: str, max_size: int, now: datetime | None = None,
             sign: Callable[[BatchHead], BatchSignature] | None = None) -> BatchHead | None:
        """Seal up to ``max_size`` pending leaves of a hospital (oldest first) into its next batch.

        ``sign`` returns the hospital's signature of the new head (docs/signatures.md). It runs inside the
        sealing transaction, so a node that signs never commits an unsigned batch: if it raises, nothing is
        sealed — the leaves stay pending, the seq is not used — and the error propagates to the caller."""
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        with self.unit_of_work() as s:
            # Serialise sealers of one hospital (PostgreSQL row lock; SQLite has one writer anyway).
            if s.scalar(select(Hospital.id).where(Hospital.id == hospital_id).with_for_update()) is None:
                raise UnknownHospitalError(f"unknown hospital {hospital_id!r}")
            pending = s.execute(
                select(PendingLeaf.record_version_id, RecordVersion.leaf_hash)
                .join(RecordVersion, RecordVersion.id == PendingLeaf.record_version_id)
                .where(PendingLeaf.hospital_id == hospital_id)
                .order_by(PendingLeaf.record_version_id)
                .limit(max_size)
            ).all()
            if not pending:
                return None
            seq = (s.scalar(select(func.max(Batch.seq)).where(Batch.hospital_id == hospital_id)) or 0) + 1
            head, _tree = build_batch(hospital_id, seq, [p[1] for p in pending], now or self._clock())
            signature = None if sign is None else canonicalize(sign(head).to_obj()).decode("utf-8")
            s.add(Batch(hospital_id=hospital_id, seq=seq, size=head.size, root=head.root, sealed_at=head.sealed_at,
                        signature=signature))
            s.flush()
            _INSERT_BATCH_LEAVES.run(s.connection(), [(hospital_id, seq, i, p[0]) for i, p in enumerate(pending)])
            ids = [p[0] for p in pending]
            for i in range(0, len(ids), _IN_CHUNK):
                s.execute(delete(PendingLeaf).where(PendingLeaf.record_version_id.in_(ids[i:i + _IN_CHUNK])))
            return head

    def due_hospitals(self, size_limit: int, max_age: timedelta, now: datetime | None = None) -> list[str]:
        """Hospitals whose open batch is full or whose oldest pending result is older than ``max_age``."""
        cutoff = (now or self._clock()) - max_age
        with self.read() as s:
            q = (select(PendingLeaf.hospital_id).group_by(PendingLeaf.hospital_id)
                 .having((func.count() >= size_limit) | (func.min(PendingLeaf.accepted_at) <= cutoff)))
            return list(s.scalars(q))

    def pending_count(self, hospital_id: str | None = None) -> int:
        with self.read() as s:
            q = select(func.count()).select_from(PendingLeaf)
            if hospital_id is not None:
                q = q.where(PendingLeaf.hospital_id == hospital_id)
            return int(s.scalar(q) or 0)

    # -- reading ------------------------------------------------------------------------------------

    def sealed_before_signing(self, hospital_id: str, seq: int) -> bool:
        """This ledger holds batch ``seq`` of the hospital, and it precedes the hospital's first signed batch
        (or none is signed): the allowance for receipts handed out before signing was switched on. Unknown
        hospitals and batches get none (service/verification.py)."""
        with self.single_read() as conn:
            first, held = conn.execute(_SIGNED_FROM, {"hid": hospital_id, "seq": seq}).one()
        return bool(held) and (first is None or seq < first)

    def batch(self, hospital_id: str, seq: int) -> BatchHead:
        with self.read() as s:
            b = s.get(Batch, (hospital_id, seq))
            if b is None:
                raise NotFoundError(f"no batch {seq} for hospital {hospital_id!r}")
            return BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at)

    def batches(self, hospital_id: str) -> list[BatchHead]:
        with self.read() as s:
            rows = s.scalars(select(Batch).where(Batch.hospital_id == hospital_id).order_by(Batch.seq))
            return [BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at) for b in rows]

    def published_batch(self, hospital_id: str, seq: int | None = None,
                        ) -> tuple[BatchHead, BatchSignature | None] | None:
        """Batch ``seq`` (None: the latest) with its stored signature, or None if there is none — what the
        public, hash-only batch endpoints serve to monitors (docs/monitor.md). Read from the table on every
        call, never from the tree cache: a monitor must see what the database holds now."""
        with self.read() as s:
            q = select(Batch).where(Batch.hospital_id == hospital_id)
            q = q.order_by(Batch.seq.desc()).limit(1) if seq is None else q.where(Batch.seq == seq)
            b = s.scalar(q)
            if b is None:
                return None
            head = BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at)
        signature = None if b.signature is None else BatchSignature.from_obj(parse_json(b.signature))
        return head, signature

    def published_leaves(self, hospital_id: str, seq: int) -> list[bytes]:
        """The batch's leaf hashes in tree order, read from the database (not the proof cache), for the same
        reason as ``published_batch``. Empty if the batch has no leaves (its rows were deleted)."""
        with self.read() as s:
            return list(s.scalars(
                select(RecordVersion.leaf_hash)
                .join(BatchLeaf, BatchLeaf.record_version_id == RecordVersion.id)
                .where(BatchLeaf.hospital_id == hospital_id, BatchLeaf.seq == seq)
                .order_by(BatchLeaf.leaf_index)).all())

    def batch_leaves(self, hospital_id: str, seq: int) -> list[bytes]:
        return list(self._tree(hospital_id, seq)._levels[0])

    def _load_tree(self, hospital_id: str, seq: int) -> MerkleTree:
        # Sealed batches are immutable, so their trees are cached (proofs for a 10k batch then cost µs).
        with self.read() as s:
            leaves = s.scalars(
                select(RecordVersion.leaf_hash)
                .join(BatchLeaf, BatchLeaf.record_version_id == RecordVersion.id)
                .where(BatchLeaf.hospital_id == hospital_id, BatchLeaf.seq == seq)
                .order_by(BatchLeaf.leaf_index)
            ).all()
        if not leaves:
            raise NotFoundError(f"no batch {seq} for hospital {hospital_id!r}")
        return MerkleTree(leaves)

    def versions(self, hospital_id: str, result_id: str) -> list[VersionInfo]:
        """Every version of a result, oldest first, with its batch position once sealed (asked on every
        verification: read through ``single_read``)."""
        rid = self.keys.index(hospital_id, result_id)
        with self.single_read() as conn:
            rows = conn.execute(_VERSIONS, {"hid": hospital_id, "rid": rid}).all()
        if not rows:
            raise NotFoundError(f"no result {result_id!r} at hospital {hospital_id!r}")
        return [VersionInfo(*row) for row in rows]

    def record(self, hospital_id: str, result_id: str, version: int | None = None) -> ResultRecord:
        """The stored record (decrypted and checked: DecryptionError, never another row's record)."""
        rid = self.keys.index(hospital_id, result_id)
        with self.single_read() as conn:  # one statement: the plain-connection path, like ``versions``
            row = self._version_row(conn, hospital_id, rid, result_id, version)
        context = record_context(hospital_id, rid, row.version, row.leaf_hash)
        return ResultRecord.from_json(self._decrypt(RECORD_JSON, context, row.record_enc).decode("utf-8"))

    def records(self, hospital_id: str) -> list[ResultRecord]:
        """Every record version a hospital holds, decrypted, in the order they were accepted. Reads the
        whole history: for exports, audits and tests, not for request paths (which look up by result id)."""
        q = (select(RecordVersion.result_hmac, RecordVersion.version, RecordVersion.leaf_hash, RecordVersion.record_enc)
             .where(RecordVersion.hospital_id == hospital_id).order_by(RecordVersion.id))
        with self.read() as s:
            rows = s.execute(q).all()
        return [ResultRecord.from_json(self._decrypt(RECORD_JSON, record_context(hospital_id, rid, version, leaf),
                                                     record_enc).decode("utf-8"))
                for rid, version, leaf, record_enc in rows]

    @staticmethod
    def _version_row(conn: Connection | Session, hospital_id: str, rid: bytes, result_id: str,
                     version: int | None) -> Row[int, int, bytes, bytes, bytes]:
        params = {"hid": hospital_id, "rid": rid, "v": version}
        row = conn.execute(_VERSION_ROW if version is not None else _LATEST_ROW, params).first()
        if row is None:
            what = f"version {version} of " if version is not None else ""
            raise NotFoundError(f"no {what}result {result_id!r} at hospital {hospital_id!r}")
        return row

    def receipt(self, hospital_id: str, result_id: str, version: int | None = None) -> Receipt | None:
        """The mrl-receipt/1 of a record version, or None while it is not yet sealed into a batch. The
        anchor section is filled once the batch's anchor is confirmed."""
        rid = self.keys.index(hospital_id, result_id)
        with self.read() as s:
            row = self._version_row(s, hospital_id, rid, result_id, version)
            member = s.scalar(select(BatchLeaf).where(BatchLeaf.record_version_id == row.id))
            if member is None:
                return None
            b = s.get(Batch, (hospital_id, member.seq))
            anchor = s.scalar(select(Anchor).where(and_(Anchor.hospital_id == hospital_id, Anchor.seq == member.seq,
                                                        Anchor.status == "confirmed")))
            leaf, index = row.leaf_hash, member.leaf_index
        assert b is not None  # the foreign key guarantees it
        record_json, salt = self._open_version(hospital_id, rid, row.version, leaf, row.record_enc, row.salt_enc)
        tree = self._tree(hospital_id, member.seq)
        head = BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at)
        anchor_info = None
        if anchor is not None and anchor.tx_hash and anchor.block_hash and anchor.contract and anchor.chain_id:
            anchor_info = AnchorInfo(anchor.chain_id, anchor.contract, anchor.tx_hash,
                                     anchor.block_number or 0, anchor.block_hash)
        # The stored section is parsed as strictly as a patient's receipt: a mangled column raises
        # EncodingError here rather than travelling on to a doctor.
        signature = None if b.signature is None else BatchSignature.from_obj(parse_json(b.signature))
        return Receipt(ResultRecord.from_json(record_json), salt, index, leaf, tuple(tree.inclusion_proof(index)),
                       head, anchor_info, signature=signature)
