"""Receipts: the mrl-receipt/1 a patient is handed, built from a sealed version, its batch and its anchor."""

from __future__ import annotations

from sqlalchemy import and_, func, select

from mrledger.ledger import Anchor as AnchorInfo
from mrledger.ledger import BatchHead, BatchSignature, Receipt, ResultRecord, parse_json
from mrledger.ledger.receipt import STATUS_SECRET_EXTENSION
from mrledger.store.batches import Batches
from mrledger.store.models import Anchor, Batch, BatchLeaf, RecordVersion
from mrledger.store.results import version_row
from mrledger.store.statusmaps import first_version


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
            first_id = s.scalar(select(func.min(RecordVersion.id)).where(RecordVersion.hospital_id == hospital_id,
                                                                         RecordVersion.result_hmac == rid))
        assert b is not None  # the foreign key guarantees it
        record_json, salt = self._open_version(hospital_id, rid, row.version, leaf, row.record_enc, row.salt_enc)
        tree = self._tree(hospital_id, member.seq)
        head = BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at)
        anchor_info = None
        if anchor is not None and anchor.tx_hash and anchor.block_hash and anchor.contract and anchor.chain_id:
            anchor_info = AnchorInfo(anchor.chain_id, anchor.contract, anchor.tx_hash,
                                     anchor.block_number or 0, anchor.block_hash)
        # The stored section is parsed as strictly as a patient's receipt: a mangled column raises
        # EncodingError here rather than travelling on to a doctor.
        signature = None if b.signature is None else BatchSignature.from_obj(parse_json(b.signature))
        record = ResultRecord.from_json(record_json)
        extensions = {}
        if first_id != row.id or record.version != 1:
            # Only the first stored version's salt names the result's status-map entry (ledger/status_check.py).
            with self.read() as s:
                extensions[STATUS_SECRET_EXTENSION] = first_version(self, s, hospital_id, rid)[2].hex()
        return Receipt(record, salt, index, leaf, tuple(tree.inclusion_proof(index)), head, anchor_info,
                       extensions=extensions, signature=signature)

