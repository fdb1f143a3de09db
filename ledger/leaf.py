"""Salted leaf commitments (``mrl-leaf/1``).

Consensus-critical. The leaf binds a record version to its hospital, result id and version, and hides it
behind a fresh 128-bit salt: a leaf hash on chain or in a batch listing lets nobody confirm a guessed
value (a patient id, an HIV result) without the salt, which only the hospital and the receipt holder
have. The salt is an argument, not drawn here, so the core stays deterministic and testable.

leaf_data = JCS({"format": "mrl-leaf/1", "hospital_id", "result_id", "version",
                 "salt": hex(salt), "content_digest": hex(SHA-256(JCS(record)))})
leaf_hash = SHA-256(0x00 || leaf_data)            (RFC 9162 §2.1.1)
"""

from __future__ import annotations

from ledger.canonical import canonicalize, sha256
from ledger.errors import EncodingError
from ledger.merkle import leaf_hash as _rfc9162_leaf_hash
from ledger.records import ResultRecord

LEAF_FORMAT = "mrl-leaf/1"
SALT_BYTES = 16


def content_digest(record: ResultRecord) -> bytes:
    """SHA-256 of the record's canonical bytes: every field, not only the values, is committed."""
    return sha256(record.canonical_bytes())


def leaf_data(record: ResultRecord, salt: bytes) -> bytes:
    if len(salt) != SALT_BYTES:
        raise EncodingError(f"salt must be {SALT_BYTES} bytes")
    return canonicalize(
        {
            "format": LEAF_FORMAT,
            "hospital_id": record.hospital_id,
            "result_id": record.result_id,
            "version": record.version,
            "salt": salt.hex(),
            "content_digest": content_digest(record).hex(),
        }
    )


def commit(record: ResultRecord, salt: bytes) -> bytes:
    """The leaf hash of one record version under one salt."""
    return _rfc9162_leaf_hash(leaf_data(record, salt))
