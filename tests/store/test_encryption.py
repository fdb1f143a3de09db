"""Encryption at rest on SQLite and PostgreSQL (docs/encryption.md): what a stolen file or dump shows, what
tampering does, key rotation, wrong keys, and databases written in clear by earlier versions.

A dump is taken the way a thief would: the SQLite file and its write-ahead log byte for byte (plus the SQL
text of ``iterdump``), PostgreSQL through ``pg_dump`` of the test's schema. Each dump must show a value that
is stored in clear on purpose (the hospital's name) — proof that the dump is real — and none of the values
submitted.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from mrledger.ledger import ResultRecord, commit, content_digest, verify_receipt
from mrledger.store import Store
from mrledger.store.access import Access
from mrledger.store.crypto import MasterKey, blob_key_id
from mrledger.store.db import alembic_config
from mrledger.store.errors import DecryptionError, KeysUnavailableError, MasterKeyError
from mrledger.store.keystore import backlog_size, convert_backlog, key_infos, load_keyring, rotate
from mrledger.store.models import AccessLog, EncryptionBacklog, RecordVersion, UTCDateTime
from tests.conftest import TEST_KEY

T = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
HOSPITAL, CLEAR_NAME = "gz-001", "Needle General Hospital of Guangzhou"


def secret_record(i: int, version: int = 1) -> ResultRecord:
    """A record whose identifying values are unlikely strings, so finding one in a dump is no accident."""
    obj: dict[str, Any] = {
        "hospital_id": HOSPITAL, "result_id": f"ACC-MRN4471{i:03d}-Q", "version": version, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7", "display": f"Glucose-Zebrafinch-{i}"},
        "subject": {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": f"SUBJ-Quokka-{i:04d}"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 123.456789 + i, "unit": "mmol/L"}]},
    }
    if version > 1:
        obj |= {"supersedes": version - 1, "status": "corrected"}
    return ResultRecord.from_obj(obj)


def needles(records: list[ResultRecord]) -> set[str]:
    out = set()
    for r in records:
        obj = r.to_obj()
        out |= {r.result_id, obj["subject"]["value"], obj["code"]["display"],
                str(obj["content"]["observations"][0]["value"])}
    return out


def dump(engine: Engine) -> bytes:
    """Everything a stolen copy of this database shows."""
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
        with sqlite3.connect(path) as conn:
            sql = "\n".join(conn.iterdump())
        return raw + sql.encode("utf-8")
    url = engine.url
    schema = str(url.query["options"]).split("search_path=")[1]
    out = subprocess.run(["/usr/bin/pg_dump", "-h", str(url.host), "-p", str(url.port or 5432), "-U",
                          str(url.username), "-d", str(url.database), "-n", schema, "--no-owner"],
                         capture_output=True, check=True, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
    return out.stdout


def assert_no_needles(engine: Engine, values: set[str]) -> None:
    blob = dump(engine)
    assert CLEAR_NAME.encode() in blob, "the dump does not show the clear columns: not a real dump"
    found = sorted(v for v in values if v.encode("utf-8") in blob)
    assert found == [], f"submitted values readable in the database: {found}"


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def row_of(engine: Engine, store: Store, result_id: str, version: int = 1) -> dict[str, Any]:
    t = RecordVersion
    with engine.connect() as conn:
        row = conn.execute(select(t.id, t.record_enc, t.salt_enc, t.result_hmac).where(
            t.result_hmac == store.result_key(HOSPITAL, result_id), t.version == version)).one()
    return dict(row._mapping)


@pytest.fixture
def store(engine: Engine) -> Store:
    s = Store(engine, clock=lambda: T, master_key=TEST_KEY)
    s.register_hospital(HOSPITAL, CLEAR_NAME)
    return s


# -- what a dump shows --------------------------------------------------------------------------------


def test_a_dump_shows_no_submitted_value(engine: Engine, store: Store) -> None:
    records = [secret_record(i) for i in range(20)] + [secret_record(0, version=2)]
    store.submit(HOSPITAL, records)
    assert store.seal(HOSPITAL, 100) is not None
    receipt = store.receipt(HOSPITAL, records[3].result_id)
    assert receipt is not None and verify_receipt(receipt.to_json()).status == "unanchored"
    access = Access(store)
    doctor = access.authenticate(access.create_token("doctor", "test", T))
    assert doctor is not None
    for r in records[:5]:
        access.log(doctor, "verify", T, hospital_id=HOSPITAL, result_id=r.result_id, version=1, verdict="authentic")
    # the store reads it all back...
    assert store.record(HOSPITAL, records[7].result_id) == records[7]
    assert [v.version for v in store.versions(HOSPITAL, records[0].result_id)] == [1, 2]
    assert [e.result_id for e in access.entries(hospital_id=HOSPITAL, result_id=records[2].result_id)] \
        == [records[2].result_id]
    # ... and a copy of the database shows none of it
    assert_no_needles(engine, needles(records))
    with engine.connect() as conn:
        assert {len(h) for h in conn.scalars(select(RecordVersion.result_hmac))} == {16}
        assert {len(h) for h in conn.scalars(select(AccessLog.result_hmac).where(AccessLog.result_hmac.is_not(None)))} \
            == {16}


# -- tampering ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["record_enc", "salt_enc"])
def test_a_flipped_byte_is_detected_on_read(engine: Engine, store: Store, column: str) -> None:
    records = [secret_record(i) for i in range(3)]
    store.submit(HOSPITAL, records)
    store.seal(HOSPITAL, 100)
    row = row_of(engine, store, records[1].result_id)
    flipped = bytearray(row[column])
    flipped[len(flipped) // 2] ^= 0x20
    sql(engine, f"UPDATE record_versions SET {column} = :v WHERE id = :id", v=bytes(flipped), id=row["id"])
    with pytest.raises(DecryptionError, match="failed authentication"):
        store.receipt(HOSPITAL, records[1].result_id)
    if column == "record_enc":
        with pytest.raises(DecryptionError):
            store.record(HOSPITAL, records[1].result_id)
    assert store.record(HOSPITAL, records[0].result_id) == records[0]  # the others still read


def test_swapped_ciphertexts_are_detected(engine: Engine, store: Store) -> None:
    records = [secret_record(i) for i in range(3)]
    store.submit(HOSPITAL, records)
    a, b = (row_of(engine, store, r.result_id) for r in records[:2])
    # two rows' records swapped (as a tamperer would, to pin one patient's result on another)
    sql(engine, "UPDATE record_versions SET record_enc = :v WHERE id = :id", v=b["record_enc"], id=a["id"])
    sql(engine, "UPDATE record_versions SET record_enc = :v WHERE id = :id", v=a["record_enc"], id=b["id"])
    for r in records[:2]:
        with pytest.raises(DecryptionError):
            store.record(HOSPITAL, r.result_id)
    # a row's record and salt swapped with each other
    c = row_of(engine, store, records[2].result_id)
    sql(engine, "UPDATE record_versions SET record_enc = :s, salt_enc = :r WHERE id = :id", s=c["salt_enc"],
        r=c["record_enc"], id=c["id"])
    with pytest.raises(DecryptionError):
        store.record(HOSPITAL, records[2].result_id)


def test_a_row_relabelled_with_another_result_or_version_is_detected(engine: Engine, store: Store) -> None:
    records = [secret_record(i) for i in range(2)]
    store.submit(HOSPITAL, records)
    a, b = (row_of(engine, store, r.result_id) for r in records)
    # a's ciphertexts moved to b's row together with a's keyed hash: b's leaf hash is bound too
    sql(engine, "DELETE FROM pending_leaves WHERE record_version_id = :id", id=a["id"])
    sql(engine, "DELETE FROM record_versions WHERE id = :id", id=a["id"])
    sql(engine, "UPDATE record_versions SET result_hmac = :h, record_enc = :r, salt_enc = :s WHERE id = :id",
        h=a["result_hmac"], r=a["record_enc"], s=a["salt_enc"], id=b["id"])
    with pytest.raises(DecryptionError):
        store.record(HOSPITAL, records[0].result_id)
    # a version number edited
    store.submit(HOSPITAL, [secret_record(5)])
    sql(engine, "UPDATE record_versions SET version = 4 WHERE result_hmac = :h",
        h=store.result_key(HOSPITAL, secret_record(5).result_id))
    with pytest.raises(DecryptionError):
        store.record(HOSPITAL, secret_record(5).result_id, 4)


def test_a_tampered_access_log_entry_is_detected(engine: Engine, store: Store) -> None:
    access = Access(store)
    who = access.authenticate(access.create_token("auditor", "test", T))
    assert who is not None
    access.log(who, "lookup", T, hospital_id=HOSPITAL, result_id="ACC-MRN447100-Q")
    with engine.connect() as conn:
        blob = conn.scalar(select(AccessLog.result_enc))
    assert blob is not None and b"MRN4471" not in blob
    sql(engine, "UPDATE access_log SET result_enc = :v", v=blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(DecryptionError):
        access.entries()


# -- keys ---------------------------------------------------------------------------------------------


def test_rotation_keeps_every_record_and_receipt(engine: Engine, store: Store, master_key: MasterKey) -> None:
    records = [secret_record(i) for i in range(10)]
    store.submit(HOSPITAL, records)
    store.seal(HOSPITAL, 100)
    before = {r.result_id: store.receipt(HOSPITAL, r.result_id) for r in records}
    receipts = {rid: r.to_json() for rid, r in before.items() if r is not None}
    assert len(receipts) == 10

    new = MasterKey.generate()
    result = rotate(store.unit_of_work, master_key, new, T, new_data_key=True)
    assert (result.rewrapped, result.new_data_key) == (2, 3)
    assert {k.master_key_id for k in key_infos(store.read)} == {new.key_id}

    # the running store (keys unwrapped at start) carries on, reading and writing
    assert all(store.receipt(HOSPITAL, rid).to_json() == receipts[rid] for rid in receipts)  # type: ignore[union-attr]
    store.submit(HOSPITAL, [secret_record(10)])
    assert blob_key_id(row_of(engine, store, secret_record(10).result_id)["record_enc"]) == 2

    # a node started after the rotation: the new master key, the new data key for new rows, every old row
    restarted = Store(engine, clock=lambda: T, master_key=new)
    assert all(restarted.receipt(HOSPITAL, rid).to_json() == receipts[rid] for rid in receipts)  # type: ignore[union-attr]
    restarted.submit(HOSPITAL, [secret_record(11)])
    assert blob_key_id(row_of(engine, store, secret_record(11).result_id)["record_enc"]) == 3
    assert restarted.record(HOSPITAL, secret_record(10).result_id) == secret_record(10)
    with pytest.raises(MasterKeyError):
        Store(engine, master_key=master_key).unlock()  # the old master key opens nothing any more
    with pytest.raises(MasterKeyError, match="current one"):
        rotate(store.unit_of_work, new, new, T)


def test_a_running_store_learns_a_new_data_key_from_its_key_file(engine: Engine, tmp_path: Path,
                                                                  master_key: MasterKey) -> None:
    """What makes `mrledger keys rotate --new-data-key` safe with several nodes: one still running on the old
    data key reads rows another node wrote under the new one, by re-reading its master key file."""
    key_file = tmp_path / "master.key"
    key_file.write_text(master_key.to_text())
    key_file.chmod(0o600)  # a key file others may read is refused (store/keyfiles.py)
    running = Store(engine, master_key=key_file)
    running.register_hospital(HOSPITAL, CLEAR_NAME)
    running.submit(HOSPITAL, [secret_record(0)])
    new = MasterKey.generate()
    rotate(running.unit_of_work, master_key, new, T, new_data_key=True)
    key_file.write_text(new.to_text())  # what the CLI does, atomically
    Store(engine, master_key=new).submit(HOSPITAL, [secret_record(1)])
    assert running.record(HOSPITAL, secret_record(1).result_id) == secret_record(1)


def test_a_wrong_master_key_is_refused_at_open(engine: Engine, store: Store, master_key: MasterKey) -> None:
    store.submit(HOSPITAL, [secret_record(0)])
    other = MasterKey.generate()
    with pytest.raises(MasterKeyError) as err:
        Store.open(engine.url.render_as_string(hide_password=False), master_key=other)
    message = str(err.value)
    assert master_key.key_id in message and other.key_id in message and other.to_text() not in message
    # a damaged key table is told apart from a wrong key
    sql(engine, "UPDATE data_keys SET wrapped = :w WHERE purpose = 'data'", w=b"\x00" * 60)
    with pytest.raises(MasterKeyError, match="does not unwrap"):
        Store(engine, master_key=master_key).unlock()


def test_without_a_master_key_records_are_refused_but_batches_work(engine: Engine, store: Store) -> None:
    store.submit(HOSPITAL, [secret_record(0)])
    assert os.environ["MRL_MASTER_KEY"]  # set (tests/conftest.py), and ignored: the store reads no environment
    keyless = Store(engine)  # e.g. the anchoring worker alone
    head = keyless.seal(HOSPITAL, 100)
    assert head is not None and keyless.batches(HOSPITAL) == [head]
    for call in (lambda: keyless.submit(HOSPITAL, [secret_record(1)]),
                 lambda: keyless.record(HOSPITAL, secret_record(0).result_id),
                 lambda: keyless.versions(HOSPITAL, secret_record(0).result_id)):
        with pytest.raises(KeysUnavailableError, match="MRL_MASTER_KEY"):
            call()


# -- databases written in clear by earlier versions -----------------------------------------------------

_LEGACY = MetaData()
_LEGACY_HOSPITALS = Table("hospitals", _LEGACY, Column("id", String), Column("name", String),
                          Column("created_at", UTCDateTime()))
_LEGACY_VERSIONS = Table(
    "record_versions", _LEGACY, Column("id", Integer, primary_key=True), Column("hospital_id", String),
    Column("result_id", String), Column("version", Integer), Column("status", String), Column("supersedes", Integer),
    Column("record_json", Text), Column("content_digest", LargeBinary), Column("salt", LargeBinary),
    Column("leaf_hash", LargeBinary), Column("accepted_at", UTCDateTime()))
_LEGACY_PENDING = Table("pending_leaves", _LEGACY, Column("record_version_id", Integer), Column("hospital_id", String),
                        Column("accepted_at", UTCDateTime()))
_LEGACY_ACCESS = Table("access_log", _LEGACY, Column("id", Integer, primary_key=True), Column("at", UTCDateTime()),
                       Column("action", String), Column("hospital_id", String), Column("result_id", String))


def _write_legacy(engine: Engine, records: list[ResultRecord]) -> list[bytes]:
    """What migration 0006 and an earlier store left: the clear schema, with clear rows (salts returned)."""
    cfg = alembic_config(engine)
    command.downgrade(cfg, "0006")
    salts = [bytes([i % 256]) * 16 for i in range(len(records))]
    with engine.begin() as conn:
        conn.execute(insert(_LEGACY_HOSPITALS), [{"id": HOSPITAL, "name": CLEAR_NAME, "created_at": T}])
        for i, (r, salt) in enumerate(zip(records, salts, strict=True), start=1):
            conn.execute(insert(_LEGACY_VERSIONS), [{
                "id": i, "hospital_id": HOSPITAL, "result_id": r.result_id, "version": r.version, "status": r.status,
                "supersedes": r.supersedes, "record_json": r.to_json(), "content_digest": content_digest(r),
                "salt": salt, "leaf_hash": commit(r, salt), "accepted_at": T}])
            conn.execute(insert(_LEGACY_PENDING), [{"record_version_id": i, "hospital_id": HOSPITAL, "accepted_at": T}])
        conn.execute(insert(_LEGACY_ACCESS), [{"at": T, "action": "verify", "hospital_id": HOSPITAL,
                                               "result_id": r.result_id} for r in records[:3]]
                     + [{"at": T, "action": "audit-batches", "hospital_id": HOSPITAL, "result_id": None}])
    command.upgrade(cfg, "head")
    return salts


def test_a_clear_database_is_encrypted_in_place_on_first_open(engine: Engine, master_key: MasterKey) -> None:
    records = [secret_record(i) for i in range(25)] + [secret_record(0, version=2)]
    salts = _write_legacy(engine, records)
    unit = Store(engine).read
    assert backlog_size(unit) == len(records) + 4  # the migration listed the clear rows

    store = Store(engine, clock=lambda: T, master_key=master_key)
    store.unlock()
    assert backlog_size(unit) == 0
    assert store.record(HOSPITAL, records[4].result_id) == records[4]
    assert [v.version for v in store.versions(HOSPITAL, records[0].result_id)] == [1, 2]
    assert store.seal(HOSPITAL, 100) is not None  # sealed after the upgrade: same salts, same leaves
    receipt = store.receipt(HOSPITAL, records[9].result_id)
    assert receipt is not None and receipt.salt == salts[9]
    assert verify_receipt(receipt.to_json()).status == "unanchored"
    assert {e.result_id for e in Access(store).entries()} == {r.result_id for r in records[:3]} | {None}
    assert_no_needles(engine, needles(records))  # SQLite: the file was rewritten, no free page keeps them
    Store(engine, master_key=master_key).unlock()  # a second open has nothing left to do
    assert store.record(HOSPITAL, records[4].result_id) == records[4]


def test_an_interrupted_conversion_resumes_without_converting_twice(engine: Engine, master_key: MasterKey) -> None:
    records = [secret_record(i) for i in range(7)]
    _write_legacy(engine, records)
    store = Store(engine, master_key=master_key)
    keys = load_keyring(store.unit_of_work, master_key, T)
    calls = 0

    def failing_unit() -> AbstractContextManager[Session]:
        nonlocal calls
        calls += 1
        if calls == 3:  # two chunks of record_versions committed, then the process dies
            raise RuntimeError("power cut")
        return store.unit_of_work()

    with pytest.raises(RuntimeError, match="power cut"):
        convert_backlog(failing_unit, keys, chunk=2)
    with engine.connect() as conn:
        entry = conn.execute(select(EncryptionBacklog.next_id).where(
            EncryptionBacklog.table_name == "record_versions")).scalar_one()
    assert entry == 5  # rows 1-4 converted and committed with their progress
    store.unlock()  # the next open finishes the rest
    assert [store.record(HOSPITAL, r.result_id) for r in records] == records
    assert backlog_size(store.read) == 0


def test_a_clear_row_left_behind_is_refused_not_misread(engine: Engine, master_key: MasterKey) -> None:
    """Should the backlog be lost (a restored backup of the key table, say), an unconverted row cannot be
    found by its clear id nor read as a record: it fails authentication like a tampered one."""
    records = [secret_record(0)]
    _write_legacy(engine, records)
    sql(engine, "DELETE FROM encryption_backlog")
    store = Store(engine, master_key=master_key)
    with engine.begin() as conn:
        conn.execute(update(RecordVersion).values(result_hmac=store.result_key(HOSPITAL, records[0].result_id)))
    with pytest.raises(DecryptionError, match="not an mrledger ciphertext"):
        store.record(HOSPITAL, records[0].result_id)

