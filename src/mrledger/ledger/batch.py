"""Sealed batches: a hospital's leaves in a fixed order, summarised by one RFC 9162 root.

Consensus-critical: the batch head is what gets anchored on chain (hospital key, seq, root, size) and
what the hospital signs (inside ``mrl-batch-sig/1``, ledger/signing.py). ``seq`` is gap-free per
hospital so an auditor can prove that no batch was left out between two anchored ones.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mrledger.ledger.canonical import canonicalize, parse_hex
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.merkle import HASH_SIZE, MerkleTree
from mrledger.ledger.records import HOSPITAL_ID_PATTERN, format_time

#: Largest batch we seal; the service default is 10,000 (see the batching policy).
MAX_BATCH_SIZE = 1 << 20
#: The registry stores a batch's seq as a uint64 (contracts/MrLedgerRegistry.sol): no head beyond it can be anchored.
MAX_SEQ = 2**64 - 1
#: EIP-155 chain ids in receipts (``anchor.chain_id``, ``signature.chain_id``) stay within the integers every
#: JSON parser holds exactly (I-JSON, RFC 7493 §2.2): above it a verifier reading numbers as doubles would
#: compare another id than the one written. Every chain in use is far below (EIP-2294 caps ids under 2^52).
MAX_CHAIN_ID = 2**53 - 1
HEAD_FORMAT = "mrl-batch/1"
_HOSPITAL_ID = re.compile(HOSPITAL_ID_PATTERN)


def hospital_key(hospital_id: str) -> bytes:
    """The 32-byte key the chain knows a hospital by: SHA-256 of its UTF-8 id. A fixed-size key keeps
    the contract's storage and calldata cheap and lets anyone map a receipt's hospital to chain state."""
    return hashlib.sha256(hospital_id.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class BatchHead:
    hospital_id: str
    seq: int
    size: int
    root: bytes
    sealed_at: datetime

    def __post_init__(self) -> None:
        if not 1 <= self.seq <= MAX_SEQ:
            raise EncodingError(f"batch seq must be in 1..{MAX_SEQ}")
        if not 1 <= self.size <= MAX_BATCH_SIZE:
            raise EncodingError(f"batch size must be in 1..{MAX_BATCH_SIZE}")
        if len(self.root) != HASH_SIZE:
            raise EncodingError("batch root must be 32 bytes")
        if self.sealed_at.tzinfo is None:
            raise EncodingError("sealed_at must carry a UTC offset")

    def to_obj(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "hospital_id": self.hospital_id,
            "seq": self.seq,
            "size": self.size,
            "root": self.root.hex(),
            "sealed_at": format_time(self.sealed_at),
        }

    def canonical_bytes(self) -> bytes:
        """RFC 8785 of ``to_obj()``. Not what a hospital signs: the signature covers
        ``mrledger.ledger.signing.batch_signing_bytes``, which embeds this object together with the deployment
        (chain id, registry), so that one signature cannot be replayed for another deployment."""
        return canonicalize(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> BatchHead:
        if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
            raise EncodingError(f"batch head must be an object with format {HEAD_FORMAT!r}")
        if set(obj) != {"format", "hospital_id", "seq", "size", "root", "sealed_at"}:
            raise EncodingError("batch head has missing or unknown fields")
        seq, size = obj["seq"], obj["size"]
        if not (isinstance(seq, int) and isinstance(size, int)) or isinstance(seq, bool) or isinstance(size, bool):
            raise EncodingError("batch seq and size must be integers")
        if not isinstance(obj["hospital_id"], str) or not _HOSPITAL_ID.fullmatch(obj["hospital_id"]):
            raise EncodingError(f"batch hospital_id must match {HOSPITAL_ID_PATTERN} (as record.hospital_id)")
        try:
            sealed_at = datetime.fromisoformat(obj["sealed_at"])
        except (TypeError, ValueError) as exc:
            raise EncodingError("batch sealed_at must be an RFC 3339 time") from exc
        head = cls(obj["hospital_id"], seq, size, parse_hex(obj["root"], size=32, what="batch root"), sealed_at)
        if head.to_obj() != obj:
            raise EncodingError("batch head is not in canonical form (sealed_at as YYYY-MM-DDTHH:MM:SS[.f]Z)")
        return head


def build_batch(
    hospital_id: str, seq: int, leaf_hashes: Sequence[bytes], sealed_at: datetime
) -> tuple[BatchHead, MerkleTree]:
    """Seal leaves (in submission order) into a batch; the tree is returned for proof generation."""
    if len(leaf_hashes) > MAX_BATCH_SIZE:
        raise EncodingError(f"batch of {len(leaf_hashes)} leaves exceeds {MAX_BATCH_SIZE}")
    tree = MerkleTree(leaf_hashes)
    return BatchHead(hospital_id, seq, tree.size, tree.root, sealed_at), tree
