"""The keys of encryption at rest, as the store uses them: the base of every aggregate that reads or writes
records (store/hospitals.py, submission.py, results.py, batches.py, receipts.py).

Why a base class: every aggregate needs the same three things (transactions, the unwrapped keyring, the
clock), and the keyring must be one per store: unwrapped once under a lock, reloaded when a rotation added a
data key (docs/encryption.md). ``Store`` (store/repository.py) composes the aggregates over this one core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from mrledger.store.crypto import RECORD_JSON, SALT, Keyring, MasterKey, record_context
from mrledger.store.errors import KeysUnavailableError, MasterKeyError, UnknownDataKeyError
from mrledger.store.keystore import convert_backlog, load_keyring, scrub_sqlite
from mrledger.store.unit import UnitOfWork

log = logging.getLogger("mrledger.store")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Vault(UnitOfWork):
    """Transactions plus the keys that open the records (see ``Store`` for where the master key comes from)."""

    def __init__(self, engine: Engine, *, clock: Clock = utcnow, master_key: MasterKey | Path | None = None) -> None:
        super().__init__(engine)
        self._master_source = master_key
        self._keys: Keyring | None = None
        self._keys_lock = threading.Lock()
        self._clock = clock

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
