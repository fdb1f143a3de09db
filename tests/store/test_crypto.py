"""mrledger.store.crypto without a database: master keys, wrapping, the record cipher and the result-id index."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from mrledger.store.crypto import (
    OVERHEAD,
    RECORD_JSON,
    SALT,
    Keyring,
    MasterKey,
    blob_key_id,
    record_context,
    write_master_key_file,
)
from mrledger.store.errors import DecryptionError, MasterKeyError, UnknownDataKeyError

INDEX_KEY, KEY_2, KEY_3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
CONTEXT = record_context("gz-001", b"\x09" * 32, 1, b"\x0a" * 32)


def test_master_key_text_format_and_secrecy() -> None:
    key = MasterKey.generate()
    assert MasterKey.from_text(f"  {key.to_text()}\n") == key
    assert key.to_text() not in repr(key) and key.key_id in repr(key)
    assert len(key.key_id) == 16 and MasterKey.generate().key_id != key.key_id
    # key id = HMAC-SHA256(master, "mrl-master-key-id/1")[:8], hex: a fingerprint that reveals nothing
    assert key.key_id == hmac.digest(key.secret, b"mrl-master-key-id/1", "sha256")[:8].hex()
    for bad in ("", "00" * 31, "zz" * 32, key.to_text() + "00"):
        with pytest.raises(MasterKeyError) as err:
            MasterKey.from_text(bad, "MRL_MASTER_KEY")
        assert "MRL_MASTER_KEY" in str(err.value) and (not bad or bad not in str(err.value))


def test_wrapping_binds_master_purpose_and_id() -> None:
    master = MasterKey.generate()
    wrapped = master.wrap("data", 2, KEY_2)
    assert master.unwrap("data", 2, wrapped) == KEY_2 and KEY_2 not in wrapped
    for purpose, key_id, by in (("index", 2, master), ("data", 3, master), ("data", 2, MasterKey.generate())):
        with pytest.raises(MasterKeyError):
            by.unwrap(purpose, key_id, wrapped)


def test_key_file_is_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    first, second = MasterKey.generate(), MasterKey.generate()
    write_master_key_file(path, first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and MasterKey.from_file(path) == first
    write_master_key_file(path, second)  # replaced whole, no temporary file left behind
    assert MasterKey.from_file(path) == second and sorted(p.name for p in path.parent.iterdir()) == ["master.key"]
    with pytest.raises(MasterKeyError, match="cannot read"):
        MasterKey.from_file(tmp_path / "missing.key")


def test_cipher_round_trip_header_and_fresh_nonces() -> None:
    keys = Keyring(INDEX_KEY, {2: KEY_2}, 2)
    plain = b'{"result_id":"ACC-MRN-1234"}'
    blob = keys.encrypt(RECORD_JSON, CONTEXT, plain)
    assert len(blob) == len(plain) + OVERHEAD and blob[0] == 1 and blob_key_id(blob) == 2
    assert b"MRN-1234" not in blob
    assert keys.decrypt(RECORD_JSON, CONTEXT, blob) == plain
    assert keys.encrypt(RECORD_JSON, CONTEXT, b"same") != keys.encrypt(RECORD_JSON, CONTEXT, b"same")


@pytest.mark.parametrize("position", [0, 1, 4, 5, 16, 17, -17, -1], ids=lambda p: f"byte{p}")
def test_any_flipped_byte_is_refused(position: int) -> None:
    keys = Keyring(INDEX_KEY, {2: KEY_2}, 2)
    blob = bytearray(keys.encrypt(SALT, CONTEXT, b"\x00" * 16))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):  # header, nonce, ciphertext and tag are all authenticated
        keys.decrypt(SALT, CONTEXT, bytes(blob))


def test_ciphertext_is_bound_to_column_and_row() -> None:
    keys = Keyring(INDEX_KEY, {2: KEY_2}, 2)
    blob = keys.encrypt(RECORD_JSON, CONTEXT, b"{}")
    with pytest.raises(DecryptionError, match="altered, or moved"):
        keys.decrypt(SALT, CONTEXT, blob)
    for other in (record_context("gz-002", b"\x09" * 32, 1, b"\x0a" * 32),
                  record_context("gz-001", b"\x08" * 32, 1, b"\x0a" * 32),
                  record_context("gz-001", b"\x09" * 32, 2, b"\x0a" * 32),
                  record_context("gz-001", b"\x09" * 32, 1, b"\x0b" * 32)):
        with pytest.raises(DecryptionError):
            keys.decrypt(RECORD_JSON, other, blob)
    with pytest.raises(DecryptionError, match="not an mrledger ciphertext"):
        keys.decrypt(RECORD_JSON, CONTEXT, b'{"result_id": "R1"} written in clear')


def test_several_data_keys_coexist() -> None:
    old = Keyring(INDEX_KEY, {2: KEY_2}, 2)
    blob = old.encrypt(RECORD_JSON, CONTEXT, b"old row")
    new = Keyring(INDEX_KEY, {2: KEY_2, 3: KEY_3}, 3)
    fresh = new.encrypt(RECORD_JSON, CONTEXT, b"new row")
    assert blob_key_id(fresh) == 3 and new.decrypt(RECORD_JSON, CONTEXT, blob) == b"old row"
    with pytest.raises(UnknownDataKeyError) as err:
        old.decrypt(RECORD_JSON, CONTEXT, fresh)
    assert err.value.key_id == 3
    with pytest.raises(ValueError):
        Keyring(INDEX_KEY, {2: KEY_2}, 3)


def test_result_id_index_is_hmac_sha256() -> None:
    keys = Keyring(INDEX_KEY, {2: KEY_2}, 2)
    # RFC 2104 HMAC-SHA256 under the index key of "mrl-result-id/1" 0x00 hospital 0x00 result id, 16 bytes
    expected = hmac.new(INDEX_KEY, b"mrl-result-id/1\x00gz-001\x00ACC-\xc3\xa9-1", hashlib.sha256).digest()[:16]
    assert keys.index("gz-001", "ACC-é-1") == expected
    assert keys.index("gz-002", "ACC-é-1") != expected  # equal ids at two hospitals do not link
    assert Keyring(KEY_3, {2: KEY_2}, 2).index("gz-001", "ACC-é-1") != expected


def test_a_record_version_is_encrypted_in_one_call_with_two_nonces() -> None:
    keys = Keyring(INDEX_KEY, {2: KEY_2}, 2)
    record_enc, salt_enc = keys.encrypt_version(CONTEXT, b'{"v":1}', b"\x07" * 16)
    assert keys.decrypt(RECORD_JSON, CONTEXT, record_enc) == b'{"v":1}'
    assert keys.decrypt(SALT, CONTEXT, salt_enc) == b"\x07" * 16
    assert record_enc[5:17] != salt_enc[5:17]  # never one nonce twice under a key
    with pytest.raises(DecryptionError):
        keys.decrypt(RECORD_JSON, CONTEXT, salt_enc)


def test_a_forked_child_never_reuses_the_parents_nonces() -> None:
    keys = Keyring(INDEX_KEY, {2: KEY_2}, 2)
    keys.encrypt(SALT, CONTEXT, b"fills the pool")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits
        os.write(write, keys.encrypt(SALT, CONTEXT, b"x")[5:17])
        os._exit(0)
    os.waitpid(pid, 0)
    child_nonce = os.read(read, 12)
    assert child_nonce != keys.encrypt(SALT, CONTEXT, b"x")[5:17]
