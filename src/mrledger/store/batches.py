"""Batches: sealing pending leaves into a hospital's next batch, and reading sealed batches back.

Sealed batches are immutable, so their Merkle trees are cached per store (``_tree``, set up by ``Store``):
a proof for a 10,000-leaf batch then costs microseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, delete, func, select
from sqlalchemy.orm import Session

from mrledger.ledger import BatchHead, BatchSignature, MerkleTree, build_batch, canonicalize, parse_json
from mrledger.ledger.statusmap import MapRow, MissingStatusKeyError, StatusProof, map_changes, record_entries
from mrledger.store.bulk import IN_CHUNK, DriverInsert
from mrledger.store.errors import NotFoundError, StoreError
from mrledger.store.hospitals import lock_hospital
from mrledger.store.models import Batch, BatchLeaf, PendingLeaf, RecordVersion
from mrledger.store.statusmaps import MapCache, map_rows
from mrledger.store.vault import Vault

log = logging.getLogger("mrledger.store")

_INSERT_BATCH_LEAVES = DriverInsert.values(cast(Table, BatchLeaf.__table__),
                                           ("hospital_id", "seq", "leaf_index", "record_version_id"))
#: (first signed seq of a hospital, whether this ledger holds batch ``seq``): ``sealed_before_signing``.
_SIGNED_FROM = select(
    select(func.min(Batch.seq)).where(Batch.hospital_id == bindparam("hid"), Batch.signature.is_not(None))
    .scalar_subquery(),
    select(func.count()).where(Batch.hospital_id == bindparam("hid"), Batch.seq == bindparam("seq"))
    .scalar_subquery())


class Batches(Vault):
    """Sealing and batch reads (a mixin of ``Store``, which sets ``_tree``)."""

    _tree: Callable[[str, int], MerkleTree]
    _maps: MapCache

    def seal(self, hospital_id: str, max_size: int, now: datetime | None = None,
             sign: Callable[[BatchHead], BatchSignature] | None = None) -> BatchHead | None:
        """Seal up to ``max_size`` pending leaves of a hospital (oldest first) into its next batch.

        ``sign`` returns the hospital's signature of the new head (docs/signatures.md). It runs inside the
        sealing transaction, so a node that signs never commits an unsigned batch: if it raises, nothing is
        sealed — the leaves stay pending, the seq is not used — and the error propagates to the caller."""
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        with self.unit_of_work() as s:
            lock_hospital(s, hospital_id)  # sealers of one hospital take turns
            pending = s.execute(
                select(PendingLeaf.record_version_id, RecordVersion.leaf_hash, RecordVersion.status_key,
                       RecordVersion.version, RecordVersion.status)
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
            map_root = self._next_map_root(s, hospital_id, seq, [(p[2], p[3], p[4], p[1]) for p in pending])
            s.add(Batch(hospital_id=hospital_id, seq=seq, size=head.size, root=head.root, sealed_at=head.sealed_at,
                        signature=signature, map_root=map_root))
            s.flush()
            _INSERT_BATCH_LEAVES.run(s.connection(), [(hospital_id, seq, i, p[0]) for i, p in enumerate(pending)])
            ids = [p[0] for p in pending]
            for i in range(0, len(ids), IN_CHUNK):
                s.execute(delete(PendingLeaf).where(PendingLeaf.record_version_id.in_(ids[i:i + IN_CHUNK])))
            return head

    def _next_map_root(self, s: Session, hospital_id: str, seq: int, rows: list[MapRow]) -> bytes | None:
        """The hospital's status-map root after batch ``seq`` (the map after ``seq - 1`` plus ``rows``), or None
        while rows written before migration 0013 wait for their keys (a store opened without the master key
        cannot derive them; the first batch sealed after they are keyed commits them)."""
        try:
            with self._maps.at(s, hospital_id, "seal", seq - 1) as entry:
                entry.map.apply(map_changes(entry.map, record_entries(rows)))
                entry.seq = seq
                return entry.map.root
        except MissingStatusKeyError:
            log.warning("batch %d of %s sealed without a status-map root: rows written before migration 0013 "
                        "are not keyed yet (open the store with the master key)", seq, hospital_id)
            return None

    def map_root(self, hospital_id: str, seq: int) -> bytes | None:
        """The status-map root batch ``seq`` committed (None: sealed before migration 0013, or no such batch)."""
        with self.single_read() as conn:
            return conn.execute(select(Batch.map_root).where(Batch.hospital_id == hospital_id, Batch.seq == seq)
                                ).scalar()

    def status_key_of(self, hospital_id: str, result_id: str) -> bytes | None:
        """The status-map key of a stored result (None: unknown result, or not keyed yet)."""
        rid = self.keys.index(hospital_id, result_id)
        with self.single_read() as conn:
            return conn.execute(select(RecordVersion.status_key).where(
                RecordVersion.hospital_id == hospital_id, RecordVersion.result_hmac == rid).limit(1)).scalar()

    def status_proof(self, hospital_id: str, key: bytes, seq: int) -> tuple[bytes, StatusProof] | None:
        """The map proof of ``key`` after batch ``seq``, with the root that batch committed; None if it has none.
        The map is rebuilt from the sealed rows, so it is checked against the committed root before it proves
        anything: rows altered after sealing raise StoreError instead of yielding a proof the chain refutes."""
        with self.read() as s:
            root = s.scalar(select(Batch.map_root).where(Batch.hospital_id == hospital_id, Batch.seq == seq))
            if root is None:
                return None
            with self._maps.at(s, hospital_id, "prove", seq) as entry:
                if entry.map.root != root:
                    raise StoreError(f"the status map of {hospital_id!r} rebuilt from its rows does not match the root "
                                     f"batch {seq} committed: the database was altered after sealing")
                return root, entry.map.prove(key)

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

    def sealed_before_signing(self, hospital_id: str, seq: int) -> bool:
        """This ledger holds batch ``seq`` of the hospital, and it precedes the hospital's first signed batch
        (or none is signed): the allowance for receipts handed out before signing was switched on. Unknown
        hospitals and batches get none (service/verification.py)."""
        ((first, held),) = self.fetch(_SIGNED_FROM, {"hid": hospital_id, "seq": seq})
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

    def published_map(self, hospital_id: str, seq: int) -> tuple[bytes | None, list[MapRow]] | None:
        """Batch ``seq``'s committed map root and, per leaf in tree order, the map change it makes (key, version,
        record status, leaf hash): what a monitor re-derives the map root from (docs/monitor.md). None when
        there is no such batch. Read from the table, like ``published_leaves``."""
        with self.read() as s:
            b = s.get(Batch, (hospital_id, seq))
            return None if b is None else (b.map_root, map_rows(s, hospital_id, seq - 1, seq))

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
