"""Encryption at rest: AES-256-GCM for record contents, salts and logged result ids; HMAC-SHA256 for the
lookup index that replaces clear result ids (docs/encryption.md).

Why this shape:

* Key hierarchy. A *master key* (configured, never in the database) wraps *data keys* (random, stored
  wrapped in ``data_keys``). Rotating the master re-wraps a few rows instead of re-encrypting every record,
  so it needs no downtime; a new data key can start for new rows while old ones keep theirs.
* Every ciphertext names its data key (a 5-byte header: format, key id), so several keys coexist.
* The associated data binds a ciphertext to its place: the column it belongs to and the row's identity
  (hospital, keyed hash of the result id, version and the leaf hash in clear). Moving a ciphertext to
  another row or column, or editing a byte, fails authentication on read — never a wrong record.
* Result ids are looked up by ``HMAC(index key, hospital id, result id)``: equality lookups keep working
  (and stay indexed) while a dump shows no result id. Result ids can embed patient identifiers (MRN-based
  accession numbers), so they are treated like record contents.

This module is pure (no database): the key table, rotation and the conversion of old plaintext rows are in
``mrledger.store.keystore``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mrledger.store.errors import DecryptionError, MasterKeyError, UnknownDataKeyError
from mrledger.store.keyfiles import KeyFileError, read_private

log = logging.getLogger("mrledger.crypto")

MASTER_KEY_BYTES = DATA_KEY_BYTES = 32  # AES-256
#: Bytes of HMAC-SHA256 kept for the result-id index (RFC 2104 §5, NIST SP 800-107: truncation to half the
#: output keeps full strength against forgery; 128 bits make a collision among 10^9 ids of one hospital
#: ~10^-21). Why not all 32: the index is random by nature, so every insert dirties its own index page;
#: halving the entries cut ingest on SQLite from ~60 to ~51 µs per record at 100k records.
INDEX_BYTES = 16
NONCE_BYTES = 12  # the GCM nonce size NIST SP 800-38D recommends for random nonces
TAG_BYTES = 16
#: First byte of every ciphertext this module writes; an unknown one is refused, never guessed at.
FORMAT_V1 = 1
_HEADER = struct.Struct(">BI")  # format, data key id
#: Bytes a ciphertext adds to its plaintext: header, nonce, tag.
OVERHEAD = _HEADER.size + NONCE_BYTES + TAG_BYTES
#: Column labels in the associated data: a ciphertext of one column does not open as another.
RECORD_JSON = b"record_versions.record_json"
SALT = b"record_versions.salt"
ACCESS_RESULT_ID = b"access_log.result_id"

_AD_PREFIX = b"mrl-at-rest/1\x00"
_WRAP_PREFIX = b"mrl-data-key/1\x00"
_INDEX_PREFIX = b"mrl-result-id/1\x00"
_KEY_ID_LABEL = b"mrl-master-key-id/1"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")

Nonces = Callable[[int], bytes]


class _RandomPool:
    """Random bytes from the OS CSPRNG, drawn 64 KiB at a time and handed out once each: one ``os.urandom``
    call per nonce was a system call (and an interpreter-lock release) per ciphertext, like the salts'
    (``mrledger.store.salts``). Cleared in a forked child (``os.register_at_fork``), so parent and child never share
    bytes — without the per-call ``getpid`` that costs a system call on every draw."""

    def __init__(self, block: int = 64 * 1024) -> None:
        self._block, self._lock = block, threading.Lock()
        self._buf, self._pos = b"", 0

    def clear(self) -> None:
        self._buf, self._pos = b"", 0

    def __call__(self, n: int) -> bytes:
        with self._lock:
            pos = self._pos
            if pos + n > len(self._buf):
                self._buf, pos = os.urandom(max(self._block, n)), 0
            self._pos = pos + n
            return self._buf[pos:pos + n]


_POOL = _RandomPool()
os.register_at_fork(after_in_child=_POOL.clear)


@dataclass(frozen=True, repr=False)
class MasterKey:
    """The key that wraps the data keys. Its ``key_id`` (a keyed fingerprint, safe to log and store) tells a
    wrong master key apart from a damaged key table. ``repr`` never shows the key."""

    secret: bytes
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != MASTER_KEY_BYTES:
            raise MasterKeyError(f"a master key is {MASTER_KEY_BYTES} bytes, not {len(self.secret)}")
        object.__setattr__(self, "key_id", hmac.digest(self.secret, _KEY_ID_LABEL, "sha256")[:8].hex())

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(MASTER_KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, source: str = "the master key") -> MasterKey:
        """Parse the file/env format: 64 hex digits (surrounding whitespace ignored). ``source`` names where it
        came from in the error, which never quotes the value."""
        value = text.strip()
        if not _HEX_KEY.fullmatch(value):
            raise MasterKeyError(f"{source} is not a master key: expected 64 hex digits (32 bytes); "
                                 "make one with `mrledger keys generate`")
        return cls(bytes.fromhex(value))

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Refuses a file group or others may read (store/keyfiles.py)."""
        try:
            text = read_private(path, "master key file").decode("utf-8", errors="replace")
        except KeyFileError as exc:
            raise MasterKeyError(str(exc)) from exc
        except OSError as exc:
            raise MasterKeyError(f"cannot read master key file {path}: {exc.strerror or exc}") from exc
        return cls.from_text(text, f"master key file {path}")

    def to_text(self) -> str:
        return self.secret.hex()

    def wrap(self, purpose: str, key_id: int, data_key: bytes) -> bytes:
        """``nonce || AES-GCM(master, data key)``; the purpose and id are bound as associated data, so a
        wrapped key cannot be relabelled (the index key cannot be passed off as a data key)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self.secret).encrypt(nonce, data_key, _wrap_ad(purpose, key_id))

    def unwrap(self, purpose: str, key_id: int, wrapped: bytes) -> bytes:
        try:
            key = AESGCM(self.secret).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_ad(purpose, key_id))
        except InvalidTag as exc:
            raise MasterKeyError(f"{purpose} key {key_id} does not unwrap under master key {self.key_id}: the "
                                 "data_keys table was altered, or this is not the master key of this "
                                 "database") from exc
        if len(key) != DATA_KEY_BYTES:
            raise MasterKeyError(f"{purpose} key {key_id} has {len(key)} bytes")
        return key


def _wrap_ad(purpose: str, key_id: int) -> bytes:
    return _WRAP_PREFIX + purpose.encode("ascii") + b"\x00" + key_id.to_bytes(4, "big")


def write_master_key_file(path: Path, key: MasterKey) -> None:
    """Write ``key`` to ``path`` atomically, mode 0600 from the first byte: readers see the old file or the
    whole new one, never a torn key (a torn key would lock the node out of its own database)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key.to_text() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def record_context(hospital_id: str, result_hmac: bytes, version: int, leaf_hash: bytes) -> bytes:
    """The identity of a record version, as associated data: the unique key of the row plus the leaf hash
    (in clear), so a ciphertext moved to another row — even with its keyed hash — no longer opens."""
    return hospital_id.encode("utf-8") + b"\x00" + result_hmac + version.to_bytes(4, "big", signed=True) + leaf_hash


def access_context(hospital_id: str | None, result_hmac: bytes) -> bytes:
    return (hospital_id or "").encode("utf-8") + b"\x00" + result_hmac


def blob_key_id(blob: bytes) -> int:
    """The data key id a ciphertext names (raises DecryptionError for anything that is not one)."""
    if len(blob) < OVERHEAD or blob[0] != FORMAT_V1:
        raise DecryptionError("a stored value is not an mrledger ciphertext (format 1): the database was altered, "
                              "or rows of an older version were not converted")
    key_id: int = _HEADER.unpack_from(blob)[1]
    return key_id


class Keyring:
    """The unwrapped keys of one database, held for the life of the process (unwrapping per row would cost
    a master-key operation per row; see docs/encryption.md for what this means for a running node's memory).

    Thread-safe: AESGCM objects are built once per key and are safe to share. Nonces are random (96 bits,
    drawn from the OS CSPRNG in blocks); NIST SP 800-38D caps a key at 2**32 random-nonce encryptions, which
    is why ``mrledger keys rotate --new-data-key`` exists (docs/encryption.md)."""

    def __init__(self, index_key: bytes, data_keys: Mapping[int, bytes], current: int,
                 nonces: Nonces | None = None) -> None:
        if current not in data_keys:
            raise ValueError(f"current data key {current} is not among {sorted(data_keys)}")
        if len(index_key) != DATA_KEY_BYTES or any(len(k) != DATA_KEY_BYTES for k in data_keys.values()):
            raise ValueError(f"keys are {DATA_KEY_BYTES} bytes")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in data_keys.items()}
        self.current = current
        self._header = _HEADER.pack(FORMAT_V1, current)
        self._write = self._ciphers[current]
        self._nonces: Nonces = nonces or _POOL
        # The associated data up to the row's context, per column (one concatenation per ciphertext).
        self._record_ad, self._salt_ad = (self._header + _AD_PREFIX + label + b"\x00" for label in (RECORD_JSON, SALT))
        # HMAC-SHA256 with the key's inner and outer pads hashed once (RFC 2104): 0.7 µs per id instead of
        # 1.6 µs for hmac.digest, which re-derives them on every call. The domain prefix is absorbed too.
        padded = index_key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded) + _INDEX_PREFIX)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __repr__(self) -> str:
        return f"Keyring(data_keys={sorted(self._ciphers)}, current={self.current})"

    @property
    def key_ids(self) -> list[int]:
        return sorted(self._ciphers)

    def index(self, hospital_id: str, result_id: str) -> bytes:
        """The keyed hash stored and queried instead of a result id: HMAC-SHA256(index key,
        "mrl-result-id/1" 0x00 hospital 0x00 result id), its first ``INDEX_BYTES``. The hospital is part of
        it, so equal ids at two hospitals do not link."""
        inner = self._inner.copy()
        inner.update(hospital_id.encode("utf-8") + b"\x00" + result_id.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:INDEX_BYTES]

    def encrypt_version(self, context: bytes, record_json: bytes, salt: bytes) -> tuple[bytes, bytes]:
        """``encrypt(RECORD_JSON, …)`` and ``encrypt(SALT, …)`` of one record version (the ingest path: one
        nonce draw and prebuilt associated data, ~1 µs less per record than two ``encrypt`` calls)."""
        header, write = self._header, self._write
        nonces = self._nonces(2 * NONCE_BYTES)
        first, second = nonces[:NONCE_BYTES], nonces[NONCE_BYTES:]
        return (header + first + write.encrypt(first, record_json, self._record_ad + context),
                header + second + write.encrypt(second, salt, self._salt_ad + context))

    def encrypt(self, label: bytes, context: bytes, plaintext: bytes) -> bytes:
        """``header || nonce || AES-GCM(current data key)``, bound to ``label`` (the column) and ``context``
        (the row)."""
        header, nonce = self._header, self._nonces(NONCE_BYTES)
        return header + nonce + self._write.encrypt(nonce, plaintext, header + _AD_PREFIX + label + b"\x00" + context)

    def decrypt(self, label: bytes, context: bytes, blob: bytes) -> bytes:
        """The plaintext, or DecryptionError if the ciphertext was altered or does not belong to this
        column and row (UnknownDataKeyError if it names a key this keyring does not hold)."""
        key_id = blob_key_id(blob)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownDataKeyError(f"a stored value is encrypted under data key {key_id}, which this node has "
                                      f"not loaded (it holds {self.key_ids})", key_id)
        header = blob[:_HEADER.size]
        nonce = blob[_HEADER.size:_HEADER.size + NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, blob[_HEADER.size + NONCE_BYTES:],
                                  header + _AD_PREFIX + label + b"\x00" + context)
        except InvalidTag as exc:
            raise DecryptionError(f"a stored {label.decode()} failed authentication: it was altered, or moved "
                                  "from another row or column") from exc
