"""Receipts: the mrl-receipt/1 (/2 on a v2 registry) a patient is handed, built from a sealed version, its batch
and its anchor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import BindParameter, Integer, bindparam, func, select
from sqlalchemy.orm import aliased

from mrledger.ledger import Anchor as AnchorInfo
from mrledger.ledger import BatchHead, BatchSignature, Receipt, ResultRecord, parse_json
from mrledger.ledger.receipt import STATUS_SECRET_EXTENSION, HubPosition
from mrledger.ledger.status import CONFIRMED
from mrledger.ledger.statusmap import EMPTY as EMPTY_MAP_ROOT
from mrledger.store.batches import Batches
from mrledger.store.crypto import SALT, record_context
from mrledger.store.errors import NotFoundError
from mrledger.store.models import Anchor, Batch, BatchLeaf, RecordVersion
from mrledger.store.results import missing_version
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


@dataclass(frozen=True, slots=True)
class _Anchored:
    """A confirmed anchor's columns as ``_RECEIPT`` reads them (all None: no confirmed anchor)."""

    chain_id: int | None
    contract: str | None
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    registry_version: int | None
    hub_id: int | None
    hub_index: int | None
    hub_path: bytes | None


_HID: BindParameter[str] = bindparam("hid")
_RID: BindParameter[bytes] = bindparam("rid")
_FIRST, _LATEST = aliased(RecordVersion, name="first_version"), aliased(RecordVersion, name="latest_version")
#: Everything a receipt is built from, in one statement on the DB-API cursor (``Store.fetch``): the version (the
#: latest when ``v`` is null), its place in its batch, the batch, the batch's confirmed anchor, and the id of the
#: result's first stored version. Five ORM statements in a transaction before: 13 % of an API process's CPU in a
#: city replay, where every verification by record rebuilds its receipt (py-spy, issue 20).
_RECEIPT = (
    select(RecordVersion.id, RecordVersion.version, RecordVersion.record_enc, RecordVersion.salt_enc,
           RecordVersion.leaf_hash, BatchLeaf.seq, BatchLeaf.leaf_index, Batch.size, Batch.root, Batch.sealed_at,
           Batch.signature, Batch.map_root, Anchor.chain_id, Anchor.contract, Anchor.tx_hash, Anchor.block_number,
           Anchor.block_hash, Anchor.registry_version, Anchor.hub_id, Anchor.hub_index, Anchor.hub_path,
           select(func.min(_FIRST.id)).where(_FIRST.hospital_id == _HID, _FIRST.result_hmac == _RID)
           .scalar_subquery())
    .outerjoin(BatchLeaf, BatchLeaf.record_version_id == RecordVersion.id)
    .outerjoin(Batch, (Batch.hospital_id == RecordVersion.hospital_id) & (Batch.seq == BatchLeaf.seq))
    .outerjoin(Anchor, (Anchor.hospital_id == RecordVersion.hospital_id) & (Anchor.seq == BatchLeaf.seq)
               & (Anchor.status == bindparam("confirmed")))
    .where(RecordVersion.hospital_id == _HID, RecordVersion.result_hmac == _RID,
           RecordVersion.version == func.coalesce(
               bindparam("v", type_=Integer),
               select(func.max(_LATEST.version)).where(_LATEST.hospital_id == _HID, _LATEST.result_hmac == _RID)
               .scalar_subquery())))


class Receipts(Batches):
    """Building receipts (a mixin of ``Store``); a subclass of ``Batches`` for its tree cache."""

    def receipt(self, hospital_id: str, result_id: str, version: int | None = None) -> Receipt | None:
        """The mrl-receipt/1 of a record version, or None while it is not yet sealed into a batch. The
        anchor section is filled once the batch's anchor is confirmed. One statement (``_RECEIPT``), a second
        only for a result with more than one version (the first version's salt)."""
        rid = self.keys.index(hospital_id, result_id)
        rows = self.fetch(_RECEIPT, {"hid": hospital_id, "rid": rid, "v": version, "confirmed": CONFIRMED})
        if not rows:
            raise NotFoundError(missing_version(hospital_id, result_id, version))
        (row_id, row_version, record_enc, salt_enc, leaf, seq, index, size, root, sealed_at, signature_json,
         map_root, *anchored, first_id) = rows[0]
        if seq is None:
            return None
        record_json, salt = self._open_version(hospital_id, rid, row_version, leaf, record_enc, salt_enc)
        tree = self._tree(hospital_id, seq)
        head = BatchHead(hospital_id, seq, size, root, sealed_at)
        anchor_info = anchor_section(_Anchored(*anchored), map_root)
        # The stored section is parsed as strictly as a patient's receipt: a mangled column raises
        # EncodingError here rather than travelling on to a doctor.
        signature = None if signature_json is None else BatchSignature.from_obj(parse_json(signature_json))
        record = ResultRecord.from_json(record_json)
        extensions = {}
        if first_id != row_id or record.version != 1:
            with self.read() as s:
                first = first_row(s, hospital_id, rid)
            # Only the first stored version's salt names the result's status-map entry (ledger/status_check.py).
            first_salt = self._decrypt(SALT, record_context(hospital_id, rid, first.version, first.leaf_hash),
                                       first.salt_enc)
            extensions[STATUS_SECRET_EXTENSION] = first_salt.hex()
        return Receipt(record, salt, index, leaf, tuple(tree.inclusion_proof(index)), head, anchor_info,
                       extensions=extensions, signature=signature)

