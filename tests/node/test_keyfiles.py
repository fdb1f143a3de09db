"""Secret files readable by others are refused, not warned about; the SQLite database is created 0600
(issue 14, finding 15; store/keyfiles.py and every key loader that uses it)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from mrledger.node.wiring import ServeError, load_key
from mrledger.service.decisions import RegionalKeyError, load_regional_key
from mrledger.service.pki import PkiError, SigningKeys
from mrledger.service.pki_dev import INTERMEDIATE_KEY, DevCA
from mrledger.store import make_engine
from mrledger.store.crypto import MasterKey, write_master_key_file
from mrledger.store.errors import MasterKeyError
from mrledger.store.keyfiles import KeyFileError, private_sqlite, read_private

LOOSE_MODES = (0o644, 0o640, 0o604, 0o660, 0o606)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secret(path: Path, text_: str, mode: int) -> Path:
    path.write_text(text_)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", LOOSE_MODES, ids=[f"{m:o}" for m in LOOSE_MODES])
def test_a_secret_file_others_may_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _secret(tmp_path / "k", "S3KR1T-VALUE", mode)
    with pytest.raises(KeyFileError) as exc:
        read_private(path, "key file")
    assert f"chmod 600 {path}" in str(exc.value) and "S3KR1T" not in str(exc.value)


def test_owner_only_files_are_read(tmp_path: Path) -> None:
    for mode in (0o600, 0o400):
        assert read_private(_secret(tmp_path / f"k{mode:o}", "secret", mode), "key file") == b"secret"
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_private(tmp_path, "key file")
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "missing", "key file")


def test_every_key_loader_refuses_a_loose_file(tmp_path: Path) -> None:
    master = tmp_path / "master.key"
    write_master_key_file(master, MasterKey.generate())
    assert MasterKey.from_file(master)
    master.chmod(0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        MasterKey.from_file(master)

    chain_key = _secret(tmp_path / "admin.key", "0x" + "11" * 32, 0o600)
    assert load_key(chain_key, create=False).address
    chain_key.chmod(0o640)
    with pytest.raises(ServeError, match="chmod 600"):
        load_key(chain_key, create=False)

    regional = _secret(tmp_path / "regional.hex", "ab" * 32, 0o644)
    with pytest.raises(RegionalKeyError, match="chmod 600"):
        load_regional_key(None, regional, tmp_path)
    dev = tmp_path / "dev"
    dev.mkdir()
    load_regional_key(None, None, dev)  # generated 0600, and read back
    (dev / "regional.key").chmod(0o644)
    with pytest.raises(RegionalKeyError, match="chmod 600"):
        load_regional_key(None, None, dev)


def test_a_loose_signing_key_is_unusable_and_says_why(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = DevCA.create(tmp_path / "pki", now)
    keys_dir = tmp_path / "pki" / "hospitals"
    cert = ca.issue("gz-001", keys_dir, now)
    keys = SigningKeys(keys_dir)
    assert keys.current("gz-001", now) is not None
    key_file = cert.with_name(cert.name.replace(".crt.pem", ".key.pem"))
    key_file.chmod(0o644)
    [pair] = SigningKeys(keys_dir).keys("gz-001")
    assert pair.signer is None and pair.problem is not None and "chmod 600" in pair.problem
    (tmp_path / "pki" / INTERMEDIATE_KEY).chmod(0o644)
    with pytest.raises(PkiError, match="chmod 600"):
        DevCA.load(tmp_path / "pki")


def test_the_sqlite_database_and_its_wal_and_shm_are_created_0600(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "ledger.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with engine.connect() as conn:  # a second connection keeps the WAL and SHM files in place
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
        files = [db, db.with_name("ledger.db-wal"), db.with_name("ledger.db-shm")]
        assert all(f.is_file() for f in files)
        assert [_mode(f) for f in files] == [0o600] * 3
    engine.dispose()


def test_an_existing_database_open_to_others_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    db.touch(mode=0o644)
    db.chmod(0o644)
    wal = tmp_path / "ledger.db-wal"
    wal.touch()
    wal.chmod(0o664)
    private_sqlite(db)
    assert _mode(db) == _mode(wal) == 0o600
