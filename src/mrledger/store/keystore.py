"""The database side of encryption at rest: the wrapped keys in ``data_keys``, master-key rotation, and the
conversion of rows an earlier version wrote in clear (docs/encryption.md).

Why here and not in ``mrledger.store.crypto``: that module is pure and unit-tested without a database; this one
holds the transactions, whose boundaries are the point — a rotation rewrites every wrapped key in one
transaction, and the conversion of old rows commits chunk by chunk with its progress, so it can be
interrupted and resumed.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, LargeBinary, Table, bindparam, cast, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mrledger.store.crypto import ACCESS_RESULT_ID, DATA_KEY_BYTES, Keyring, MasterKey, access_context, record_context
from mrledger.store.errors import MasterKeyError
from mrledger.store.models import AccessLog, DataKey, EncryptionBacklog, RecordVersion
from mrledger.store.unit import Unit

log = logging.getLogger("mrledger.keys")

INDEX, DATA = "index", "data"
#: Rows converted per transaction: large enough to amortise the commit, small enough that an interruption
#: loses little and other writers wait at most a fraction of a second.
CONVERT_CHUNK = 2000

@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    purpose: str
    master_key_id: str
    created_at: datetime
    current: bool


def _rows(s: Session, *, lock: bool = False) -> list[DataKey]:
    q = select(DataKey).order_by(DataKey.id)
    return list(s.scalars(q.with_for_update() if lock else q))


def _check_master(rows: list[DataKey], master: MasterKey) -> None:
    wrapping = {r.master_key_id for r in rows}
    if wrapping != {master.key_id}:
        raise MasterKeyError(f"this database's keys are wrapped by master key {'/'.join(sorted(wrapping))}, not by "
                             f"the configured master key {master.key_id}: set MRL_MASTER_KEY_FILE or MRL_MASTER_KEY to "
                             "the key of this database (docs/encryption.md)")


def _keyring(rows: list[DataKey], master: MasterKey) -> Keyring:
    _check_master(rows, master)
    index = [r for r in rows if r.purpose == INDEX]
    data = {r.id: master.unwrap(DATA, r.id, r.wrapped) for r in rows if r.purpose == DATA}
    if len(index) != 1 or not data:
        raise MasterKeyError(f"data_keys holds {len(index)} index keys and {len(data)} data keys; expected one "
                             "index key and at least one data key (the table was altered)")
    return Keyring(master.unwrap(INDEX, index[0].id, index[0].wrapped), data, max(data))


def load_keyring(unit: Unit, master: MasterKey, now: datetime) -> Keyring:
    """The keys of this database, unwrapped; on a database without keys, new random ones wrapped under
    ``master`` (the first node to start creates them; a concurrent one then reads them)."""
    with unit() as s:
        rows = _rows(s)
    if not rows:
        try:
            with unit() as s:
                s.add_all([_new_key(master, 1, INDEX, now), _new_key(master, 2, DATA, now)])
            log.info("created the data keys of this database under master key %s", master.key_id)
        except IntegrityError:
            pass  # another process created them first: use theirs
        with unit() as s:
            rows = _rows(s)
    return _keyring(rows, master)


def _new_key(master: MasterKey, key_id: int, purpose: str, now: datetime) -> DataKey:
    wrapped = master.wrap(purpose, key_id, secrets.token_bytes(DATA_KEY_BYTES))
    return DataKey(id=key_id, purpose=purpose, wrapped=wrapped, master_key_id=master.key_id, created_at=now)


@dataclass(frozen=True, slots=True)
class Rotation:
    old_master_key_id: str
    new_master_key_id: str
    rewrapped: int
    new_data_key: int | None


def rotate(unit: Unit, old: MasterKey, new: MasterKey, now: datetime, *, new_data_key: bool = False) -> Rotation:
    """Re-wrap every key under ``new`` in one transaction (all or nothing: a crash leaves every key under
    ``old``), and with ``new_data_key`` add a data key that new rows use from the next start of each node.
    The data keys themselves do not change, so running nodes, which hold them unwrapped, never notice."""
    if new.key_id == old.key_id:
        raise MasterKeyError("the new master key is the current one")
    with unit() as s:
        rows = _rows(s, lock=True)
        if not rows:
            raise MasterKeyError("this database has no keys yet: start the node once (it creates them)")
        _check_master(rows, old)
        for r in rows:
            r.wrapped = new.wrap(r.purpose, r.id, old.unwrap(r.purpose, r.id, r.wrapped))
            r.master_key_id = new.key_id
        added = None
        if new_data_key:
            added = max(r.id for r in rows) + 1
            s.add(_new_key(new, added, DATA, now))
    return Rotation(old.key_id, new.key_id, len(rows), added)


def key_infos(unit: Unit) -> list[KeyInfo]:
    with unit() as s:
        rows = _rows(s)
    current = max((r.id for r in rows if r.purpose == DATA), default=None)
    return [KeyInfo(r.id, r.purpose, r.master_key_id, r.created_at, r.id == current) for r in rows]


# -- rows written in clear by an earlier version ---------------------------------------------------------


def convert_backlog(unit: Unit, keys: Keyring, chunk: int = CONVERT_CHUNK) -> int:
    """Encrypt the rows migration 0007 listed as clear, chunk by chunk; the number converted by this call.

    Each chunk is one transaction that converts its rows and advances the backlog past them, so the
    conversion resumes where an interrupted one stopped and never encrypts a row twice; concurrent nodes
    queue on the backlog row (a row lock on PostgreSQL, the write lock on SQLite)."""
    done = 0
    for table in ("record_versions", "access_log"):
        while True:
            with unit() as s:
                entry = s.scalar(select(EncryptionBacklog).where(EncryptionBacklog.table_name == table)
                                 .with_for_update())
                if entry is None:
                    break
                converted, last = (_convert_records if table == "record_versions" else _convert_access)(
                    s, keys, entry.next_id, entry.last_id, chunk)
                done += converted
                if last is None or last >= entry.last_id:
                    s.delete(entry)
                else:
                    entry.next_id = last + 1
            log.info("encrypted %d rows of %s written in clear by an earlier version", done, table)
    return done


def _convert_records(s: Session, keys: Keyring, first: int, last: int, chunk: int) -> tuple[int, int | None]:
    t = RecordVersion
    rows = s.execute(select(t.id, t.hospital_id, cast(t.result_hmac, LargeBinary), t.version,
                            cast(t.record_enc, LargeBinary), t.salt_enc, t.leaf_hash)
                     .where(t.id >= first, t.id <= last).order_by(t.id).limit(chunk)).all()
    params = []
    for row_id, hospital_id, clear_id, version, record_json, salt, leaf in rows:
        result_hmac = keys.index(hospital_id, bytes(clear_id).decode("utf-8"))
        context = record_context(hospital_id, result_hmac, version, leaf)
        record_enc, salt_enc = keys.encrypt_version(context, bytes(record_json), bytes(salt))
        params.append({"row_id": row_id, "h": result_hmac, "r": record_enc, "s": salt_enc})
    if params:
        table = _table(t)
        s.connection().execute(update(table).where(table.c.id == bindparam("row_id"))
                               .values(result_hmac=bindparam("h"), record_enc=bindparam("r"), salt_enc=bindparam("s")),
                               params)
    return len(rows), rows[-1][0] if rows else None


def _convert_access(s: Session, keys: Keyring, first: int, last: int, chunk: int) -> tuple[int, int | None]:
    t = AccessLog
    rows = s.execute(select(t.id, t.hospital_id, cast(t.result_hmac, LargeBinary))
                     .where(t.id >= first, t.id <= last).order_by(t.id).limit(chunk)).all()
    params = []
    for row_id, hospital_id, clear_id in rows:
        if clear_id is None:
            continue
        result_id = bytes(clear_id).decode("utf-8")
        result_hmac = keys.index(hospital_id or "", result_id)
        params.append({"row_id": row_id, "h": result_hmac, "e": keys.encrypt(
            ACCESS_RESULT_ID, access_context(hospital_id, result_hmac), result_id.encode("utf-8"))})
    if params:
        table = _table(t)
        s.connection().execute(update(table).where(table.c.id == bindparam("row_id"))
                               .values(result_hmac=bindparam("h"), result_enc=bindparam("e")), params)
    return len(rows), rows[-1][0] if rows else None


def _table(model: type[RecordVersion] | type[AccessLog]) -> Table:
    table: Table = model.__table__  # type: ignore[assignment]
    return table


def scrub_sqlite(engine: Engine) -> None:
    """After a conversion on SQLite: rewrite the file (VACUUM) and empty the write-ahead log, so no free page
    or old WAL frame keeps the clear text the conversion replaced — migration 0007's table copy and each
    UPDATE leave such pages behind. (PostgreSQL keeps dead row versions until VACUUM FULL; an operator step,
    docs/encryption.md.) Runs outside any transaction, as VACUUM must."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for statement in ("PRAGMA wal_checkpoint(TRUNCATE)", "VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"):
            raw.execute(statement)


def backlog_size(unit: Unit) -> int:
    """Rows (at most) still in clear: 0 once every row is encrypted."""
    with unit() as s:
        return sum(e.last_id - e.next_id + 1 for e in s.scalars(select(EncryptionBacklog)))


__all__ = ["KeyInfo", "Rotation", "backlog_size", "convert_backlog", "key_infos", "load_keyring", "rotate",
           "scrub_sqlite"]
