"""Receipts: the mrl-receipt/1 (/2 on a v2 registry) a patient is handed, built from a sealed version, its batch
and its anchor."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import and_, select

from mrledger.ledger import Anchor as AnchorInfo
from mrledger.ledger import BatchHead, BatchSignature, Receipt, ResultRecord, parse_json
from mrledger.ledger.receipt import STATUS_SECRET_EXTENSION, HubPosition
from mrledger.ledger.statusmap import EMPTY as EMPTY_MAP_ROOT
from mrledger.store.batches import Batches
from mrledger.store.crypto import SALT, record_context
from mrledger.store.models import Anchor, Batch, BatchLeaf
from mrledger.store.results import version_row
from mrledger.store.statusmaps import first_row


class AnchorFacts(Protocol):
    """What the store knows of a batch's anchor: an ``anchors`` row, or ``store.anchor_rows.AnchorState``."""

    @property
    def chain_id(self) -> int | None: ...
    @property
    def contract(self) -> str | None: ...
    @property
    def tx_hash(self) -> str | None: ...
    @property
    def block_number(self) -> int | None: ...
    @property
    def block_hash(self) -> str | None: ...
    @property
    def registry_version(self) -> int | None: ...
    @property
    def hub_id(self) -> int | None: ...
    @property
    def hub_index(self) -> int | None: ...
    @property
    def hub_path(self) -> bytes | None: ...


def hub_position(a: AnchorFacts) -> HubPosition | None:
    """The stored hub placement of a v2 anchor (None: stored alone, or a v1 registry)."""
    if a.hub_id is None:
        return None
    path = a.hub_path or b""
    return HubPosition(a.hub_id, a.hub_index or 0, tuple(path[i:i + 32] for i in range(0, len(path), 32)))


def anchor_section(a: AnchorFacts, map_root: bytes | None) -> AnchorInfo | None:
    """The §8 anchor section of a batch whose anchor is on chain (None while any of its facts is missing).
    On a v2 registry it carries the map root the commitment binds (``EMPTY`` for a batch sealed without a map:
    the commitment the worker anchored, anchoring/registry.py) and the hub placement."""
    if not (a.chain_id and a.contract and a.tx_hash and a.block_hash):
        return None
    if (a.registry_version or 1) == 1:
        return AnchorInfo(a.chain_id, a.contract, a.tx_hash, a.block_number or 0, a.block_hash)
    return AnchorInfo(a.chain_id, a.contract, a.tx_hash, a.block_number or 0, a.block_hash,
                      map_root=map_root or EMPTY_MAP_ROOT, hub=hub_position(a))


class Receipts(Batches):
    """Building receipts (a mixin of ``Store``); a subclass of ``Batches`` for its tree cache."""

    def receipt(self, hospital_id: str, result_id: str, version: int | None = None) -> Receipt | None:
        """The mrl-receipt/1 of a record version, or None while it is not yet sealed into a batch. The
        anchor section is filled once the batch's anchor is confirmed."""
        rid = self.keys.index(hospital_id, result_id)
        with self.read() as s:
            row = version_row(s, hospital_id, rid, result_id, version)
            member = s.scalar(select(BatchLeaf).where(BatchLeaf.record_version_id == row.id))
            if member is None:
                return None
            b = s.get(Batch, (hospital_id, member.seq))
            anchor = s.scalar(select(Anchor).where(and_(Anchor.hospital_id == hospital_id, Anchor.seq == member.seq,
                                                        Anchor.status == "confirmed")))
            leaf, index = row.leaf_hash, member.leaf_index
            first = first_row(s, hospital_id, rid)
        assert b is not None  # the foreign key guarantees it
        record_json, salt = self._open_version(hospital_id, rid, row.version, leaf, row.record_enc, row.salt_enc)
        tree = self._tree(hospital_id, member.seq)
        head = BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at)
        anchor_info = None if anchor is None else anchor_section(anchor, b.map_root)
        # The stored section is parsed as strictly as a patient's receipt: a mangled column raises
        # EncodingError here rather than travelling on to a doctor.
        signature = None if b.signature is None else BatchSignature.from_obj(parse_json(b.signature))
        record = ResultRecord.from_json(record_json)
        extensions = {}
        if first.id != row.id or record.version != 1:
            # Only the first stored version's salt names the result's status-map entry (ledger/status_check.py).
            first_salt = self._decrypt(SALT, record_context(hospital_id, rid, first.version, first.leaf_hash),
                                       first.salt_enc)
            extensions[STATUS_SECRET_EXTENSION] = first_salt.hex()
        return Receipt(record, salt, index, leaf, tuple(tree.inclusion_proof(index)), head, anchor_info,
                       extensions=extensions, signature=signature)

