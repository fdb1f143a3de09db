"""Is a receipt's version still the current one? The status document a node serves (``mrl-status-proof/1``) and
the check a verifier runs on it with nothing but the receipt (docs/receipt.md §17).

A receipt proves that version *v* was committed; the status map of the hospital (statusmap.py) says which version
is the latest as of a batch. The document carries that batch's head, its map root, and the map proof of the
receipt's key. ``check_status`` decides from those alone; binding the head and the map root to the chain is the
caller's part (anchoring/status.py: the batch must be the hospital's latest on chain, and on a v2 registry its
commitment binds the map root), because a verifier that trusts the node for the batch trusts it for the answer.

The key is the receipt holder's to derive (``receipt_status_key``): from the salt of the result's first version
— the receipt's own salt when it is of version 1, else the ``status_secret`` extension receipts of later
versions carry. Nobody else can name the key, so the node's route serves a proof only to a holder, and a node
cannot answer for another result: the key fixes the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mrledger.ledger.batch import BatchHead
from mrledger.ledger.canonical import parse_hex
from mrledger.ledger.errors import EncodingError, ProofError
from mrledger.ledger.receipt import STATUS_SECRET_EXTENSION, Anchor, Receipt
from mrledger.ledger.statusmap import SECRET_BYTES, StatusProof, status_key, verify_status_proof

STATUS_PROOF_FORMAT = "mrl-status-proof/1"
_FIELDS = {"format", "hospital_id", "key", "batch", "map_root", "proof", "anchor"}

Kind = Literal["current", "superseded", "withdrawn", "stale", "invalid", "unknown"]


@dataclass(frozen=True, slots=True)
class StatusDocument:
    """What ``GET …/status-proof`` answers: the map proof of ``key`` after batch ``batch``, whose map root is
    ``map_root``, anchored by ``anchor`` (the node's account of it; the verifier asks the chain)."""

    hospital_id: str
    key: bytes
    batch: BatchHead
    map_root: bytes
    proof: StatusProof
    anchor: Anchor | None

    def to_obj(self) -> dict[str, Any]:
        return {"format": STATUS_PROOF_FORMAT, "hospital_id": self.hospital_id, "key": self.key.hex(),
                "batch": self.batch.to_obj(), "map_root": self.map_root.hex(), "proof": self.proof.to_bytes().hex(),
                "anchor": None if self.anchor is None else self.anchor.to_obj()}

    @classmethod
    def from_obj(cls, obj: Any) -> StatusDocument:
        if not isinstance(obj, dict) or obj.get("format") != STATUS_PROOF_FORMAT or set(obj) != _FIELDS:
            raise EncodingError(f"a status proof must be an object of format {STATUS_PROOF_FORMAT!r} with exactly "
                                f"{sorted(_FIELDS)}")
        batch = BatchHead.from_obj(obj["batch"])
        if obj["hospital_id"] != batch.hospital_id:
            raise EncodingError("status proof names another hospital than its batch")
        proof_hex = obj["proof"]
        if not isinstance(proof_hex, str) or len(proof_hex) % 2 or len(proof_hex) > 2 * 9000:
            raise EncodingError("status proof must be hex of at most 9,000 bytes")
        try:
            proof = StatusProof.from_bytes(bytes.fromhex(proof_hex))
        except (ValueError, ProofError) as exc:
            raise EncodingError(f"status proof: {exc}") from exc
        map_root = parse_hex(obj["map_root"], size=32, what="map root")
        anchor = obj["anchor"]
        # A v2 registry's anchor names the map root its commitment binds (and the hub): it must be this one.
        parsed = None if anchor is None else Anchor.from_obj(
            anchor, 2 if isinstance(anchor, dict) and "map_root" in anchor else 1)
        if parsed is not None and parsed.map_root is not None and parsed.map_root != map_root:
            raise EncodingError("status proof's anchor binds another map root than the document's")
        return cls(batch.hospital_id, parse_hex(obj["key"], size=32, what="status key"), batch, map_root, proof,
                   parsed)


def receipt_status_key(receipt: Receipt) -> bytes | None:
    """The map key a receipt's holder derives, or None when the receipt cannot name it (a receipt of version 2
    or later issued before receipts carried ``status_secret``)."""
    secret = receipt.extensions.get(STATUS_SECRET_EXTENSION)
    if secret is not None:
        salt = parse_hex(secret, size=SECRET_BYTES, what=f"extensions.{STATUS_SECRET_EXTENSION}")
    elif receipt.record.version == 1:
        salt = receipt.salt
    else:
        return None
    return status_key(receipt.record.hospital_id, receipt.record.result_id, salt)


@dataclass(frozen=True, slots=True)
class StatusVerdict:
    """``current`` (this version is the latest), ``superseded`` (``version`` is), ``withdrawn`` (entered in error,
    by this version or ``version``), ``stale`` (the document is older than the receipt), ``invalid`` (the document
    contradicts itself or the receipt), ``unknown`` (the receipt cannot name its key). ``as_of`` is the batch."""

    kind: Kind
    version: int | None
    as_of: int | None
    detail: str

    def to_obj(self) -> dict[str, Any]:
        return {"status": self.kind, "version": self.version, "as_of_seq": self.as_of, "detail": self.detail}


def check_status(receipt: Receipt, doc: StatusDocument) -> StatusVerdict:
    """The receipt's status by ``doc``, trusting ``doc.batch`` and ``doc.map_root`` (the caller binds them to the
    chain) and nothing else the node said."""
    key = receipt_status_key(receipt)
    seq = doc.batch.seq
    mine = receipt.record.version
    if key is None:
        return StatusVerdict("unknown", None, seq, "this receipt predates status secrets and is not of version 1: "
                                                   "its map key cannot be derived")
    if doc.hospital_id != receipt.record.hospital_id or doc.key != key:
        return StatusVerdict("invalid", None, seq, "the status proof is for another result")
    if seq < receipt.batch.seq:
        return StatusVerdict("stale", None, seq, f"the status is as of batch {seq}, older than the receipt's batch "
                                                 f"{receipt.batch.seq}")
    answer = verify_status_proof(doc.map_root, key, doc.proof)
    if answer.kind == "invalid":
        return StatusVerdict("invalid", None, seq, f"the map proof does not check: {answer.detail}")
    if answer.kind == "absent" or answer.version is None:
        return StatusVerdict("invalid", None, seq, f"the map after batch {seq} has no entry for a result committed "
                                                   f"in batch {receipt.batch.seq}")
    if answer.version < mine or (answer.version == mine and answer.leaf_hash != receipt.leaf_hash):
        return StatusVerdict("invalid", answer.version, seq, f"the map commits version {answer.version} with another "
                                                             "leaf than this receipt's, or an older version")
    if answer.kind == "withdrawn":
        by = "this version" if answer.version == mine else f"version {answer.version}"
        return StatusVerdict("withdrawn", answer.version, seq, f"withdrawn (entered in error) by {by}")
    if answer.version > mine:
        return StatusVerdict("superseded", answer.version, seq, f"superseded by version {answer.version}")
    return StatusVerdict("current", mine, seq, f"current as of batch {seq}")
