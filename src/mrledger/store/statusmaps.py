"""The hospitals' status maps (``mrl-smap/1``, docs/receipt.md §15), as the store keeps and proves them.

What is stored: each record version's map key (``record_versions.status_key``, written at submission) and each
batch's map root (``batches.map_root``, written by the sealing transaction). The maps themselves are not
stored: the map after batch S of a hospital is a function of the versions sealed in its batches 1..S (for each
key, the highest version), so it is rebuilt from those rows and kept in memory (``MapCache``), advanced batch by
batch. Why not a table of tree nodes: the map of a hospital with 100,000 results rebuilds in ~0.5 s and then
proves in ~0.1 ms (measured on this machine), and rows that are a function of other rows can only disagree
with them.

Two cached maps per hospital at most, because they answer different questions: the sealer's map is at the
newest sealed batch (it is about to commit the next root); the prover's map is at the newest *anchored* batch
(a doctor's answer must be checkable against the chain). Each only moves forward; a request for an older
batch rebuilds from scratch (rare: an auditor's question).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Row, bindparam, select, update
from sqlalchemy.orm import Session

from mrledger.ledger import ResultRecord
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.statusmap import (
    UNKEYABLE,
    MapRow,
    StatusMap,
    map_changes,
    record_entries,
    status_key,
)
from mrledger.store.errors import StoreError
from mrledger.store.models import BatchLeaf, RecordVersion
from mrledger.store.vault import Vault

log = logging.getLogger("mrledger.store")

#: Rows of the map of one hospital between two batches (exclusive, inclusive), in sealing order.
_MAP_ROWS = (select(RecordVersion.status_key, RecordVersion.version, RecordVersion.status, RecordVersion.leaf_hash)
             .join(BatchLeaf, BatchLeaf.record_version_id == RecordVersion.id)
             .where(BatchLeaf.hospital_id == bindparam("hid"), BatchLeaf.seq > bindparam("after"),
                    BatchLeaf.seq <= bindparam("upto"))
             .order_by(BatchLeaf.seq, BatchLeaf.leaf_index))
BACKFILL_CHUNK = 500


def map_rows(conn: Connection | Session, hospital_id: str, after: int, upto: int) -> list[MapRow]:
    """The map rows (key, version, record status, leaf) of the hospital's batches ``after < seq <= upto``, in
    sealing order: what a map is advanced with, and what a monitor is shown of one batch."""
    return [tuple(r) for r in conn.execute(_MAP_ROWS, {"hid": hospital_id, "after": after, "upto": upto})]  # type: ignore[misc]


@dataclass
class _Entry:
    seq: int = 0
    map: StatusMap = field(default_factory=StatusMap)
    lock: threading.Lock = field(default_factory=threading.Lock)


#: Entries (results) the cached maps of one store hold together before the least recently used maps are dropped:
#: ~230 bytes an entry (``statusmap.CACHE_MIN``), so ~1.4 GB at most. Why a budget of entries and not of maps: the
#: sealer advances one map per hospital and one per event stream on every batch, and a map it no longer holds is
#: rebuilt from every row of that hospital before the next batch can be sealed. The earlier bound, 64 maps, was
#: exactly the 32-hospital replay's (32 hospitals, 32 event streams); Guangzhou's 270 institutions (540 maps)
#: would have rebuilt a map on every seal.
MAX_CACHED_ENTRIES = 6_000_000


class MapCache:
    """In-memory maps by (hospital, purpose), each with its batch seq and its own lock; least recently used
    ones are dropped while the maps hold more than ``MAX_CACHED_ENTRIES`` entries together."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def at(self, conn: Connection | Session, hospital_id: str, purpose: str, seq: int) -> Iterator[_Entry]:
        """The entry holding the hospital's map after batch ``seq``, locked for the caller. A caller that
        mutates the map sets ``entry.seq``; one that raises leaves the entry dropped, so a map changed by a
        transaction that rolled back is never served."""
        with self._lock:
            entry = self._entries.pop((hospital_id, purpose), None) or _Entry()
            self._entries[(hospital_id, purpose)] = entry
            held = sum(len(e.map) for e in self._entries.values())  # a few hundred maps: cheap beside a seal
            while held > MAX_CACHED_ENTRIES and len(self._entries) > 1:  # never the one asked for (the newest)
                held -= len(self._entries.popitem(last=False)[1].map)
        with entry.lock:
            try:
                if entry.seq > seq:
                    entry.seq, entry.map = 0, StatusMap()
                if entry.seq < seq:
                    rows = map_rows(conn, hospital_id, entry.seq, seq)
                    entry.map.apply(map_changes(entry.map, record_entries(rows)))
                    entry.seq = seq
                yield entry
            except BaseException:
                with self._lock:
                    if self._entries.get((hospital_id, purpose)) is entry:
                        del self._entries[(hospital_id, purpose)]
                entry.seq, entry.map = 0, StatusMap()
                raise


def first_row(s: Session, hospital_id: str, result_hmac: bytes) -> Row[int, int, bytes, bytes, bytes]:
    """A result's first stored version (id, version, leaf_hash, record_enc, salt_enc): the lowest row id, i.e.
    the first row its first submission inserted, whatever its version number. Its salt is the result's map-key
    secret (statusmap.status_key)."""
    return s.execute(select(RecordVersion.id, RecordVersion.version, RecordVersion.leaf_hash, RecordVersion.record_enc,
                            RecordVersion.salt_enc)
                     .where(RecordVersion.hospital_id == hospital_id, RecordVersion.result_hmac == result_hmac)
                     .order_by(RecordVersion.id).limit(1)).one()


def first_version_key(vault: Vault, s: Session, hospital_id: str, result_hmac: bytes) -> bytes:
    """A result's map key: the result id inside its first version's record and that version's salt, both
    encrypted, hence the vault."""
    row = first_row(s, hospital_id, result_hmac)
    record_json, salt = vault._open_version(hospital_id, result_hmac, row.version, row.leaf_hash, row.record_enc,
                                            row.salt_enc)
    return status_key(hospital_id, ResultRecord.from_json(record_json).result_id, salt)


def backfill_status_keys(vault: Vault, chunk: int = BACKFILL_CHUNK) -> int:
    """Give every row written before migration 0013 its map key, one transaction per ``chunk`` results (a
    resumable job: an interrupted run leaves whole results keyed or not). Returns the rows keyed. A result whose
    first version cannot be opened gets ``UNKEYABLE`` and an error in the log: the store still opens, and the
    read of that record fails where it always did."""
    vault.keys  # noqa: B018 - unlocked before the first transaction: unlocking opens its own
    done = 0
    while True:
        with vault.unit_of_work() as s:
            results = s.execute(select(RecordVersion.hospital_id, RecordVersion.result_hmac)
                                .where(RecordVersion.status_key.is_(None))
                                .group_by(RecordVersion.hospital_id, RecordVersion.result_hmac)
                                .limit(chunk)).all()
            if not results:
                return done
            for hospital_id, result_hmac in results:
                try:
                    key = first_version_key(vault, s, hospital_id, result_hmac)
                except (StoreError, EncodingError) as exc:
                    log.error("a result of %s written before migration 0013 cannot be opened (%s); it stays out of "
                              "the status map", hospital_id, type(exc).__name__)
                    key = UNKEYABLE
                result = s.connection().execute(update(RecordVersion).where(
                    RecordVersion.hospital_id == hospital_id, RecordVersion.result_hmac == result_hmac)
                    .values(status_key=key))
                done += result.rowcount
