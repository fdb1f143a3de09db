"""mrledger's pure core: records → salted leaves → RFC 9162 batches → proofs → receipts.

CONSENSUS-CRITICAL. The leaf encoding (``mrl-leaf/1``), the tree hashing (RFC 9162), the signed batch
encoding (``mrl-batch-sig/1``) and the receipt format (``mrl-receipt/1``) decide whether a receipt already
handed to a patient still verifies. Never
change them in place: add a new version tag and keep the old one verifying. Parsers reject trailing data
and unknown fields (extensions go under ``extensions``; unknown *critical* ones are refused).

This package does no I/O and imports no database, chain, web or clock library (a test enforces it):
time and randomness are arguments.
"""

from mrledger.ledger.batch import MAX_BATCH_SIZE, BatchHead, build_batch, hospital_key
from mrledger.ledger.canonical import canonicalize, parse_json
from mrledger.ledger.errors import (
    EncodingError,
    MrLedgerError,
    ProofError,
    RecordError,
    RootMismatchError,
    SignatureError,
    SigningError,
    VerificationError,
)
from mrledger.ledger.leaf import LEAF_FORMAT, SALT_BYTES, commit, content_digest, leaf_data
from mrledger.ledger.merkle import (
    MerkleTree,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion_proof,
    roots_from_consistency_proof,
    verify_consistency,
    verify_inclusion,
)
from mrledger.ledger.receipt import RECEIPT_FORMAT, RECEIPT_FORMAT_V2, Anchor, HubPosition, Receipt
from mrledger.ledger.records import MAX_RECORD_BYTES, ResultRecord
from mrledger.ledger.signing import (
    BATCH_SIG_FORMAT,
    SIGNATURE_REASONS,
    BatchSignature,
    KeySigner,
    Signer,
    SignerInfo,
    TrustStore,
    batch_signing_bytes,
    describe_signer,
    load_certificate_chain,
    load_signing_key,
    sign_batch,
    sign_batch_with,
    verify_batch_signature,
)
from mrledger.ledger.verify import Check, SignatureResult, Verdict, verify_receipt

__all__ = [
    "BATCH_SIG_FORMAT",
    "LEAF_FORMAT",
    "MAX_BATCH_SIZE",
    "MAX_RECORD_BYTES",
    "RECEIPT_FORMAT",
    "RECEIPT_FORMAT_V2",
    "SALT_BYTES",
    "SIGNATURE_REASONS",
    "Anchor",
    "BatchHead",
    "BatchSignature",
    "Check",
    "EncodingError",
    "HubPosition",
    "KeySigner",
    "MerkleTree",
    "MrLedgerError",
    "ProofError",
    "Receipt",
    "RecordError",
    "ResultRecord",
    "RootMismatchError",
    "SignatureError",
    "SignatureResult",
    "Signer",
    "SignerInfo",
    "SigningError",
    "TrustStore",
    "Verdict",
    "VerificationError",
    "batch_signing_bytes",
    "build_batch",
    "canonicalize",
    "commit",
    "content_digest",
    "describe_signer",
    "hospital_key",
    "leaf_data",
    "leaf_hash",
    "load_certificate_chain",
    "load_signing_key",
    "merkle_root",
    "node_hash",
    "parse_json",
    "root_from_inclusion_proof",
    "roots_from_consistency_proof",
    "sign_batch",
    "sign_batch_with",
    "verify_batch_signature",
    "verify_consistency",
    "verify_inclusion",
    "verify_receipt",
]
