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

from json.encoder import encode_basestring

from mrledger.ledger.canonical import FAST_INT_LIMIT, canonicalize, sha256
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.merkle import leaf_hash as _rfc9162_leaf_hash
from mrledger.ledger.records import ResultRecord

LEAF_FORMAT = "mrl-leaf/1"
SALT_BYTES = 16


def content_digest(record: ResultRecord) -> bytes:
    """SHA-256 of the record's canonical bytes: every field, not only the values, is committed."""
    return sha256(record.canonical_bytes())


def leaf_data(record: ResultRecord, salt: bytes) -> bytes:
    return _leaf_data(record.hospital_id, record.result_id, record.version, salt, content_digest(record))


def _leaf_data(hospital_id: str, result_id: str, version: int, salt: bytes, digest: bytes) -> bytes:
    if len(salt) != SALT_BYTES:
        raise EncodingError(f"salt must be {SALT_BYTES} bytes")
    salt_hex, digest_hex = salt.hex(), digest.hex()
    if (
        type(hospital_id) is str and type(result_id) is str and type(version) is int
        and -FAST_INT_LIMIT < version < FAST_INT_LIMIT and type(salt) is bytes
    ):
        # What canonicalize() of the dict below emits, assembled directly (2.5 of its ~5 µs per record):
        # the keys are fixed ASCII, written here in sorted order; the hex strings need no escaping; the
        # ids are escaped by the encoder's own string function and the version is spelled as it spells an
        # int inside these bounds (the bounds of its fast path). A lone surrogate in an id cannot be
        # encoded: then the general path decides. tests/ledger/test_fast_paths.py compares both.
        text = (
            f'{{"content_digest":"{digest_hex}","format":"{LEAF_FORMAT}",'
            f'"hospital_id":{encode_basestring(hospital_id)},"result_id":{encode_basestring(result_id)},'
            f'"salt":"{salt_hex}","version":{int.__repr__(version)}}}'
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass
    return _leaf_data_reference(hospital_id, result_id, version, salt_hex, digest_hex)


def _leaf_data_reference(hospital_id: str, result_id: str, version: int, salt_hex: str, digest_hex: str) -> bytes:
    return canonicalize(
        {
            "format": LEAF_FORMAT,
            "hospital_id": hospital_id,
            "result_id": result_id,
            "version": version,
            "salt": salt_hex,
            "content_digest": digest_hex,
        }
    )


def commit(record: ResultRecord, salt: bytes) -> bytes:
    """The leaf hash of one record version under one salt."""
    return _rfc9162_leaf_hash(leaf_data(record, salt))


def commit_canonical(hospital_id: str, result_id: str, version: int, canonical: bytes, salt: bytes) -> bytes:
    """``commit`` of the record whose RFC 8785 bytes are ``canonical`` (and whose hospital, result id and version
    are these), without parsing it into a ``ResultRecord``. Why: an audit re-hashes millions of stored records
    whose canonical bytes it already holds (the store keeps exactly those bytes), and parsing and validating
    each one again cost more than everything else it does. The caller vouches that ``canonical`` is a
    record's canonical form and names that record's identity; ``commit`` of the parsed record is the same
    hash (tests/ledger/test_leaf.py)."""
    return _rfc9162_leaf_hash(_leaf_data(hospital_id, result_id, version, salt, sha256(canonical)))
