"""The store's repository API: accept results, seal batches, build receipts.

Every public method is one unit of work (one transaction): a submission of 1,000 records lands whole
or not at all, and a seal moves its leaves out of the pending outbox in the same transaction that
writes the batch. Callers never see a session.

``Store`` is a facade over one module per aggregate: hospitals.py, submission.py, results.py (versions,
records, aliases), batches.py (sealing and batch reads), receipts.py, on the keys of vault.py and the
transactions of unit.py.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine

from mrledger.store.crypto import Keyring, MasterKey
from mrledger.store.db import make_engine, migrate
from mrledger.store.hospitals import Hospitals
from mrledger.store.receipts import Receipts
from mrledger.store.results import Results, VersionInfo
from mrledger.store.salts import SaltPool
from mrledger.store.statusmaps import MapCache, backfill_status_keys
from mrledger.store.submission import MAX_SUBMISSION, Accepted, SaltSource, Submission, Within
from mrledger.store.vault import Clock, utcnow

log = logging.getLogger("mrledger.store")


class Store(Hospitals, Submission, Results, Receipts):
    """Repository over one database. Thread-safe: each call opens its own session. Transactions of other
    modules go through the inherited ``unit_of_work`` / ``read`` / ``single_read`` (store/unit.py).

    Record contents, salts and result ids are encrypted at rest (``mrledger.store.crypto``, docs/encryption.md) under
    data keys that ``master_key`` unwraps: a key, or a key file (re-read when a rotation added a data key
    this process has not seen). The store reads no environment: the node's settings find the key
    (``MRL_MASTER_KEY_FILE`` / ``MRL_MASTER_KEY``, node/settings.py and ``master_key_for`` in node/serve.py) and
    pass it in, so a setting is read in one place. Without one, the store still seals, anchors and reads
    batches (the anchoring worker needs no more), but refuses to write or read records — there is no clear mode.
    The keys are unwrapped once, on first use (``Store.open``: at open, so a wrong key stops the caller
    there), and held for the life of the store.

    Why mixins rather than a facade that delegates: the aggregates share one core — the transactions, the
    keyring unwrapped once under a lock, the clock and the tree cache — and the callers (service, node, CLI,
    anchoring, tests) call ``store.submit``, ``store.receipt``, … on one object. Delegation would add ~20
    forwarding methods whose signatures and docstrings must be kept in step with the real ones; each mixin
    instead holds its aggregate's methods, and this class only composes them and builds the shared state."""

    def __init__(self, engine: Engine, *, clock: Clock = utcnow, salts: SaltSource | None = None,
                 master_key: MasterKey | Path | None = None) -> None:
        super().__init__(engine, clock=clock, master_key=master_key)
        self._salts = salts or SaltPool()  # the OS CSPRNG in 64 KiB draws (store/salts.py)
        self._tree = lru_cache(maxsize=64)(self._load_tree)
        self._maps = MapCache()
        self._status_keys_lock = threading.Lock()
        self._status_keys_done = False

    def unlock(self) -> Keyring:
        """``Vault.unlock``, then key the rows an earlier version wrote without status-map keys (migration
        0013): once per store, after the keyring is in place (the backfill decrypts with it)."""
        keys = super().unlock()
        with self._status_keys_lock:
            if not self._status_keys_done:
                if backfill_status_keys(self):
                    log.info("status-map keys derived for the rows written before migration 0013")
                self._status_keys_done = True
        return keys

    @classmethod
    def open(cls, url: str, **kwargs: object) -> Store:
        """Open (and migrate to head) the database at ``url``."""
        engine = make_engine(url)
        migrate(engine)
        store = cls(engine, **kwargs)  # type: ignore[arg-type]
        if store._master_source is not None:
            store.unlock()
        return store


__all__ = ["MAX_SUBMISSION", "Accepted", "Clock", "SaltSource", "Store", "VersionInfo", "Within", "utcnow"]
