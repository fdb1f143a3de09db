"""Results as stored: their versions, their decrypted records and the ids they were also submitted as.

The verification path asks ``versions`` and ``record`` on every request, so both run one prebuilt statement
on the plain-connection path (``single_read``); the row queries here are shared with submission.py and
receipts.py through ``version_row``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.orm import Session

from mrledger.ledger import ResultRecord
from mrledger.store.crypto import RECORD_JSON, record_context
from mrledger.store.errors import DecryptionError, NotFoundError, UnknownDataKeyError
from mrledger.store.fastread import Prepared
from mrledger.store.models import BatchLeaf, PendingLeaf, RecordVersion, ResultAlias
from mrledger.store.vault import Vault


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    status: str
    supersedes: int | None
    leaf_hash: bytes
    accepted_at: datetime
    batch_seq: int | None
    leaf_index: int | None


@dataclass(frozen=True, slots=True)
class OpenedLeaf:
    """A record version with its place, as an audit re-hashes it: the stored canonical bytes (RFC 8785, exactly
    what the leaf commits) and salt, decrypted but not parsed; both None when the row does not decrypt (its
    ciphertext, leaf or identity was edited: the associated data no longer matches)."""

    record_version_id: int
    seq: int | None
    leaf_index: int | None
    leaf_hash: bytes
    version: int
    canonical: bytes | None
    salt: bytes | None


_OPENED = (RecordVersion.id, RecordVersion.result_hmac, RecordVersion.version, RecordVersion.leaf_hash,
           RecordVersion.record_enc, RecordVersion.salt_enc)

#: ``opened_in_batches``'s read, compiled once per dialect and fetched on the DB-API cursor (``fastread.Prepared``):
#: the audit job reads every record of a region through it, and SQLAlchemy's ORM loading of those rows was ~11 %
#: of the audit processes' samples (py-spy, issue 20) for tuples that are decrypted at once. Measured over a 100,000
#: replay's 203,018 records (five alternated rounds, docs/scaling.md): the read's CPU 3.42 → 2.75 s (median), the
#: audit job 13.75 → 13.25 s.
_IN_BATCHES = Prepared(
    select(BatchLeaf.seq, BatchLeaf.leaf_index, *_OPENED)
    .join(RecordVersion, RecordVersion.id == BatchLeaf.record_version_id)
    .where(BatchLeaf.hospital_id == bindparam("hid"), BatchLeaf.seq.between(bindparam("lo"), bindparam("hi")))
    .order_by(BatchLeaf.seq, BatchLeaf.leaf_index))

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


def version_row(conn: Connection | Session, hospital_id: str, rid: bytes, result_id: str,
                version: int | None) -> Row[int, int, bytes, bytes, bytes]:
    """One stored version (the latest when ``version`` is None), or NotFoundError naming it."""
    params = {"hid": hospital_id, "rid": rid, "v": version}
    row = conn.execute(_VERSION_ROW if version is not None else _LATEST_ROW, params).first()
    if row is None:
        raise NotFoundError(missing_version(hospital_id, result_id, version))
    return row


def missing_version(hospital_id: str, result_id: str, version: int | None) -> str:
    """What a lookup of a version that is not stored says (the latest, when ``version`` is None)."""
    what = f"version {version} of " if version is not None else ""
    return f"no {what}result {result_id!r} at hospital {hospital_id!r}"


class Results(Vault):
    """Reads of stored results (a mixin of ``Store``)."""

    def versions(self, hospital_id: str, result_id: str) -> list[VersionInfo]:
        """Every version of a result, oldest first, with its batch position once sealed (asked on every
        verification: read through ``fetch``)."""
        rid = self.keys.index(hospital_id, result_id)
        rows = self.fetch(_VERSIONS, {"hid": hospital_id, "rid": rid})
        if not rows:
            raise NotFoundError(f"no result {result_id!r} at hospital {hospital_id!r}")
        return [VersionInfo(*row) for row in rows]

    def record(self, hospital_id: str, result_id: str, version: int | None = None) -> ResultRecord:
        """The stored record (decrypted and checked: DecryptionError, never another row's record)."""
        rid = self.keys.index(hospital_id, result_id)
        with self.single_read() as conn:  # one statement: the plain-connection path, like ``versions``
            row = version_row(conn, hospital_id, rid, result_id, version)
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

    def opened_in_batches(self, hospital_id: str, first_seq: int, last_seq: int) -> list[OpenedLeaf]:
        """The leaves of batches ``first_seq``..``last_seq`` of a hospital (or event stream) in order, each with
        its record version decrypted (``OpenedLeaf``). One statement and one short transaction: the audit job
        reads a stream a bounded range of batches at a time."""
        with self.serial_read() as s:
            rows = _IN_BATCHES.rows(s.connection(), {"hid": hospital_id, "lo": first_seq, "hi": last_seq})
        return [self._opened(hospital_id, *row) for row in rows]

    def opened_pending(self, hospital_id: str, after_id: int, limit: int) -> list[OpenedLeaf]:
        """Up to ``limit`` of a hospital's records not sealed yet (the sealer's outbox) with ids after ``after_id``,
        in id order, decrypted like ``opened_in_batches``."""
        q = (select(*_OPENED).join(PendingLeaf, PendingLeaf.record_version_id == RecordVersion.id)
             .where(PendingLeaf.hospital_id == hospital_id, PendingLeaf.record_version_id > after_id)
             .order_by(PendingLeaf.record_version_id).limit(limit))
        with self.serial_read() as s:
            rows = s.execute(q).all()
        return [self._opened(hospital_id, None, None, *row) for row in rows]

    def _opened(self, hospital_id: str, seq: int | None, index: int | None, rv_id: int, rid: bytes, version: int,
                leaf: bytes, record_enc: bytes, salt_enc: bytes) -> OpenedLeaf:
        try:
            record_json, salt = self._open_version(hospital_id, bytes(rid), version, bytes(leaf), record_enc,
                                                   salt_enc)
        except UnknownDataKeyError:
            raise  # a key this node lacks says nothing about the row: the caller cannot audit, it must not blame
        except DecryptionError:
            return OpenedLeaf(int(rv_id), seq, index, bytes(leaf), int(version), None, None)
        return OpenedLeaf(int(rv_id), seq, index, bytes(leaf), int(version), record_json.encode("utf-8"), salt)

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

