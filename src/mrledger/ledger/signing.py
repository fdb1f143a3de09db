"""Hospital e-signatures on sealed batches: ``mrl-batch-sig/1`` (docs/signatures.md).

Why sign when the root is anchored: the anchor proves that *some* key the registry accepted for a hospital
wrote the root, and when; it says nothing a court or another hospital's doctor can check without the
chain, and nothing at all before the batch is anchored. The signature binds the batch head to a hospital
through an X.509 certificate from a CA the deployment trusts — the legal e-signature — and travels in
the receipt.

Consensus-critical. What is signed is domain-separated and names the deployment, so a signature can be
replayed neither as anything else nor on another chain or registry::

    JCS({"format": "mrl-batch-sig/1", "batch": <mrl-batch/1 head>, "chain_id": <int>, "contract": "0x<40 lower hex>"})

ES256 is ECDSA P-256 over SHA-256 of those bytes, the value DER-encoded (RFC 3279, *not* JWS's raw r||s);
Ed25519 is pure Ed25519 (RFC 8032) over the bytes themselves.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mrledger.ledger._x509 import (
    MAX_CERTIFICATE_BYTES,
    MAX_CERTIFICATES,
    SignerInfo,
    TrustStore,
    describe,
    key_algorithm,
    parse_certificate,
)
from mrledger.ledger._x509_usage import BATCH_SIGNING_EKU, EKU_REQUIRED_FROM, HOSPITAL_URI_PREFIX, signs_batches
from mrledger.ledger.batch import MAX_CHAIN_ID, BatchHead
from mrledger.ledger.canonical import canonicalize
from mrledger.ledger.errors import SIGNATURE_REASONS, EncodingError, SignatureError, SignatureReason, SigningError
from mrledger.ledger.records import format_time

BATCH_SIG_FORMAT = "mrl-batch-sig/1"
#: Algorithms this version signs and verifies. The receipt parser accepts any well-formed token in ``alg``
#: so that a receipt from a newer producer still parses; verifying it reports ``signature-algorithm``.
ALGORITHMS = ("ES256", "Ed25519")
#: Upper bound on a signature value (an ES256 DER signature is at most 72 bytes, Ed25519 exactly 64).
MAX_SIGNATURE_BYTES = 512
_ALG_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_CONTRACT = re.compile(r"0x[0-9a-f]{40}")

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _contract(value: Any) -> str:
    """The registry address in its one signed spelling: lower-case 0x hex (EIP-55 input is accepted)."""
    if not isinstance(value, str) or not _CONTRACT.fullmatch(value.lower()):
        raise EncodingError("contract must be 0x followed by 40 hex digits")
    return value.lower()


def batch_signing_bytes(head: BatchHead, chain_id: int, contract: str) -> bytes:
    """The exact bytes a hospital signs for a batch. The ``format`` tag keeps them from ever being valid as
    another message; ``chain_id`` and ``contract`` tie the signature to one deployment's registry."""
    if not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id < 1:
        raise EncodingError("chain_id must be an integer >= 1")
    return canonicalize({"format": BATCH_SIG_FORMAT, "batch": head.to_obj(), "chain_id": chain_id,
                         "contract": _contract(contract)})


def _b64(value: Any, what: str, limit: int) -> bytes:
    """Standard base64 with padding (RFC 4648 §4), in its one canonical spelling: no whitespace, no
    URL-safe alphabet, zero pad bits — so a receipt has one form, as everywhere else in mrl-receipt/1."""
    if not isinstance(value, str) or not value:
        raise EncodingError(f"{what} must be a non-empty base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise EncodingError(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != value:
        raise EncodingError(f"{what} is not canonical base64 (padding, pad bits)")
    if len(raw) > limit:
        raise EncodingError(f"{what} is larger than {limit} bytes")
    return raw


@dataclass(frozen=True, slots=True)
class BatchSignature:
    """A hospital's signature over one batch head for one deployment: the receipt's ``signature`` section.

    Shape is checked here (EncodingError); whether the bytes are a valid signature from a trusted,
    matching certificate is ``verify_batch_signature``'s job."""

    alg: str
    chain_id: int
    contract: str
    value: bytes
    certificates: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.alg, str) or not _ALG_TOKEN.fullmatch(self.alg):
            raise EncodingError("signature.alg must be an algorithm name such as 'ES256'")
        chain_id = self.chain_id
        if not isinstance(chain_id, int) or isinstance(chain_id, bool) or not 1 <= chain_id <= MAX_CHAIN_ID:
            raise EncodingError(f"signature.chain_id must be an integer in 1..{MAX_CHAIN_ID}")
        if not isinstance(self.contract, str) or not _CONTRACT.fullmatch(self.contract):
            raise EncodingError("signature.contract must be 0x followed by 40 lower-case hex digits")
        if not isinstance(self.value, bytes) or not 1 <= len(self.value) <= MAX_SIGNATURE_BYTES:
            raise EncodingError(f"signature.value must be 1..{MAX_SIGNATURE_BYTES} bytes")
        if not isinstance(self.certificates, tuple) or not 1 <= len(self.certificates) <= MAX_CERTIFICATES:
            raise EncodingError(f"signature.certificates must hold 1..{MAX_CERTIFICATES} certificates, leaf first")
        if not all(isinstance(c, bytes) and 1 <= len(c) <= MAX_CERTIFICATE_BYTES for c in self.certificates):
            raise EncodingError(f"each certificate must be 1..{MAX_CERTIFICATE_BYTES} bytes of DER")

    def __repr__(self) -> str:
        return (f"BatchSignature(alg={self.alg!r}, chain_id={self.chain_id}, contract={self.contract!r}, "
                f"value=<{len(self.value)} bytes>, certificates=<{len(self.certificates)}>)")

    def to_obj(self) -> dict[str, Any]:
        return {
            "alg": self.alg,
            "chain_id": self.chain_id,
            "contract": self.contract,
            "value": base64.b64encode(self.value).decode("ascii"),
            "certificates": [base64.b64encode(c).decode("ascii") for c in self.certificates],
        }

    @classmethod
    def from_obj(cls, obj: Any) -> BatchSignature:
        """Strict parse of the receipt's ``signature`` object (exactly the five fields)."""
        if not isinstance(obj, dict) or set(obj) != {"alg", "chain_id", "contract", "value", "certificates"}:
            raise EncodingError("signature must have exactly alg, chain_id, contract, value, certificates")
        certs = obj["certificates"]
        if not isinstance(certs, list) or not 1 <= len(certs) <= MAX_CERTIFICATES:
            raise EncodingError(f"signature.certificates must be a list of 1..{MAX_CERTIFICATES} certificates")
        return cls(
            alg=obj["alg"],
            chain_id=obj["chain_id"],
            contract=obj["contract"],
            value=_b64(obj["value"], "signature.value", MAX_SIGNATURE_BYTES),
            certificates=tuple(_b64(c, "signature.certificates entry", MAX_CERTIFICATE_BYTES) for c in certs),
        )


class Signer(Protocol):
    """Whatever holds a hospital's signing key. ``KeySigner`` wraps an in-memory key; an HSM or smart card
    (PKCS#11) implements the same three members so the key never enters the process.

    ``sign`` receives the whole message (``batch_signing_bytes``), not a digest, and returns the value as
    stored in the receipt: for ES256 the DER ECDSA signature over SHA-256(message) — a PKCS#11 adapter
    using ``CKM_ECDSA`` hashes first and converts the raw r||s it gets back with ``encode_dss_signature``;
    for Ed25519 the 64-byte signature (``CKM_EDDSA``)."""

    @property
    def algorithm(self) -> str: ...

    @property
    def certificates(self) -> tuple[bytes, ...]: ...

    def sign(self, data: bytes) -> bytes: ...


def _certificate_ders(certificates: Sequence[bytes | x509.Certificate]) -> tuple[bytes, ...]:
    return tuple(c.public_bytes(serialization.Encoding.DER) if isinstance(c, x509.Certificate) else bytes(c)
                 for c in certificates)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class KeySigner:
    """A ``Signer`` over an in-memory private key and its certificate chain (leaf first, no root).

    Refuses, at construction, a key of an unsupported type and a key that is not the leaf certificate's:
    both would otherwise surface only when a doctor's verification fails, years later."""

    __slots__ = ("_algorithm", "_certificates", "_key")

    def __init__(self, private_key: SigningKey, certificates: Sequence[bytes | x509.Certificate]) -> None:
        algorithm = key_algorithm(private_key.public_key())
        if algorithm is None:
            raise SigningError("signing keys must be ECDSA P-256 or Ed25519")
        ders = _certificate_ders(certificates)
        if not 1 <= len(ders) <= MAX_CERTIFICATES:
            raise SigningError(f"a signer needs its certificate chain: 1..{MAX_CERTIFICATES} certificates, leaf first")
        try:
            leaf = parse_certificate(ders[0])
        except SignatureError as exc:
            raise SigningError(f"leaf certificate: {exc.detail}") from exc
        if _spki(leaf.public_key()) != _spki(private_key.public_key()):
            raise SigningError("the private key does not belong to the leaf certificate "
                               f"{leaf.subject.rfc4514_string()}")
        self._key = private_key
        self._algorithm = algorithm
        self._certificates = ders

    @property
    def algorithm(self) -> str:
        return self._algorithm

    @property
    def certificates(self) -> tuple[bytes, ...]:
        return self._certificates

    def sign(self, data: bytes) -> bytes:
        """ECDSA nonces are derived per RFC 6979, not drawn: a weak or repeated nonce leaks the private key,
        and a deterministic signature can be pinned in test vectors. Ed25519 is deterministic anyway."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))

    def __repr__(self) -> str:  # never the key
        return f"KeySigner(algorithm={self._algorithm!r}, certificates=<{len(self._certificates)}>)"


def load_signing_key(pem: bytes, passphrase: bytes | None = None) -> SigningKey:
    """Load a PKCS#8 / SEC1 PEM private key, optionally encrypted. Errors say what is wrong, never echo the
    PEM or the passphrase; a key of a type we cannot sign with is refused here rather than at sealing."""
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:  # passphrase given for a clear key, or missing for an encrypted one
        raise SigningError("passphrase does not fit the key (missing, or given for an unencrypted key)") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningError("not a usable PEM private key (or wrong passphrase)") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) and key_algorithm(key.public_key()):
        return key
    raise SigningError("signing keys must be ECDSA P-256 or Ed25519")


def load_certificate_chain(pem: bytes) -> tuple[bytes, ...]:
    """DER certificates from a PEM bundle, in file order (leaf first, then intermediates)."""
    try:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise SigningError(f"not a PEM certificate chain: {exc}") from exc


def _check_value(public_key: CertificatePublicKeyTypes, alg: str, value: bytes, message: bytes) -> None:
    if alg == "Ed25519":
        if len(value) != 64:
            raise SignatureError("signature-malformed", "an Ed25519 signature is exactly 64 bytes")
    else:
        try:  # strict DER (rust-asn1): BER lengths, non-minimal integers, trailing bytes are refused
            decode_dss_signature(value)
        except ValueError as exc:
            raise SignatureError("signature-malformed", "an ES256 signature is a DER ECDSA-Sig-Value") from exc
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(value, message)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(value, message, ec.ECDSA(hashes.SHA256()))
        else:  # unreachable: algorithm and key type were matched before
            raise SignatureError("signature-algorithm", "unsupported key type")
    except InvalidSignature as exc:
        raise SignatureError("signature-invalid",
                             "the signature does not verify with the leaf certificate's key") from exc


def sign_batch_with(head: BatchHead, chain_id: int, contract: str, signer: Signer) -> BatchSignature:
    """Sign a sealed batch head for one deployment. The fresh signature is verified against the leaf
    certificate before it is returned: a signer that emits the wrong encoding (raw r||s from an HSM) or a
    faulty signature must fail at sealing, not in a doctor's hands."""
    if signer.algorithm not in ALGORITHMS:
        raise SigningError(f"unsupported signing algorithm {signer.algorithm!r}")
    certificates = tuple(signer.certificates)
    try:
        leaf_key = parse_certificate(certificates[0]).public_key()
    except (IndexError, SignatureError, ValueError, UnsupportedAlgorithm) as exc:
        raise SigningError("the signer has no usable leaf certificate") from exc
    if key_algorithm(leaf_key) != signer.algorithm:
        raise SigningError("the signer's algorithm does not match its leaf certificate's key")
    message = batch_signing_bytes(head, chain_id, contract)
    signature = BatchSignature(signer.algorithm, chain_id, _contract(contract), signer.sign(message), certificates)
    try:
        _check_value(leaf_key, signature.alg, signature.value, message)
    except SignatureError as exc:
        raise SigningError(f"the signer produced an unusable signature ({exc.reason})") from exc
    return signature


def sign_batch(head: BatchHead, chain_id: int, contract: str, private_key: SigningKey,
               certificates: Sequence[bytes | x509.Certificate]) -> BatchSignature:
    """``sign_batch_with`` for an in-memory key and its chain (leaf first, intermediates after, no root)."""
    return sign_batch_with(head, chain_id, contract, KeySigner(private_key, certificates))


#: Signature checks that passed, keyed by SHA-256 of (alg, leaf certificate, value, signed bytes).
_GOOD: dict[bytes, None] = {}
_GOOD_LOCK = threading.Lock()
_GOOD_MAX = 65536


def verify_batch_signature(head: BatchHead, signature: BatchSignature, trust: TrustStore) -> None:
    """Check that ``signature`` is a valid signature of ``head`` by the hospital the head names, through a
    certificate chain to one of ``trust``'s anchors, valid and unrevoked at the head's ``sealed_at``.

    Returns None or raises SignatureError whose ``reason`` names the first failure, in this order:
    malformed certificate → untrusted → key-usage → expired → revoked (the chain, cached per chain and
    time) → hospital-mismatch → algorithm → malformed value → invalid. A chain that is not trusted is
    reported as such before anything it claims (hospital, key type) is looked at."""
    chain = trust.validate(signature.certificates, head.sealed_at)
    if chain.hospital_ids != {head.hospital_id}:
        named = sorted(chain.hospital_ids) or "no hospital"
        raise SignatureError("certificate-hospital-mismatch",
                             f"the certificate names {named} ({HOSPITAL_URI_PREFIX}…), the batch {head.hospital_id!r}")
    if signature.alg not in ALGORITHMS or chain.algorithm != signature.alg:
        raise SignatureError("signature-algorithm",
                             f"alg {signature.alg!r} with a {chain.algorithm or 'unsupported'} key; "
                             f"supported: {', '.join(ALGORITHMS)}")
    message = batch_signing_bytes(head, signature.chain_id, signature.contract)
    # Every receipt of a batch carries the same signature over the same head: remember the ones that
    # verified, so the ECDSA check (~64 µs, 10 % of the service's time per verification) runs once per
    # batch. Only the arithmetic is remembered; the chain (trust, expiry, revocation) is checked above
    # every time, so a CRL update still takes effect at once.
    memo = hashlib.sha256(b"\0".join((signature.alg.encode(), signature.certificates[0], signature.value,
                                      message))).digest()
    with _GOOD_LOCK:
        if memo in _GOOD:
            return
    _check_value(chain.public_key, signature.alg, signature.value, message)
    with _GOOD_LOCK:
        if len(_GOOD) >= _GOOD_MAX:
            _GOOD.pop(next(iter(_GOOD)))  # oldest first (insertion order)
        _GOOD[memo] = None


#: How much later than its anchoring block a batch may claim to have been sealed: clock skew between the sealing
#: node and the block producer, nothing more (a batch is anchored after it is sealed).
SEALING_CLOCK_SKEW = timedelta(minutes=5)
#: Default bound on how much earlier than its anchoring block a batch may claim to have been sealed, when its
#: certificate is no longer valid at the block's time (docs/signatures.md §4: why 7 days, and why not tampered).
MAX_SEALING_DELAY = timedelta(days=7)


class SigningTimeError(SignatureError):
    """``signature-time``: the signed ``sealed_at`` does not fit the anchoring block's time. ``after_anchor``:
    sealed after it was anchored (impossible for a genuine batch); otherwise sealed too long before it, with a
    certificate no longer valid when it was anchored (a claimed time the chain cannot corroborate)."""

    def __init__(self, detail: str, *, after_anchor: bool) -> None:
        super().__init__("signature-time", detail)
        self.after_anchor = after_anchor


def check_signing_time(head: BatchHead, signature: BatchSignature, block_time: datetime, trust: TrustStore,
                       max_delay: timedelta = MAX_SEALING_DELAY) -> None:
    """The one independent clock a signature has is the anchoring block's: ``sealed_at`` — the time the chain
    is validated at — is the signer's own claim. Raises SigningTimeError when it is after the block (beyond
    ``SEALING_CLOCK_SKEW``), or more than ``max_delay`` before it while the chain is not valid at the block's
    time too. A chain still valid when the batch was anchored gains nothing from an earlier claimed time, so a
    genuine batch anchored late after an outage passes unless its certificate expired during that outage.
    Call it only for a signature ``verify_batch_signature`` accepted."""
    sealed = head.sealed_at
    if sealed > block_time + SEALING_CLOCK_SKEW:
        raise SigningTimeError(f"sealed_at {format_time(sealed)} is after the anchoring block's time "
                               f"{format_time(block_time)}: a batch is sealed before it is anchored", after_anchor=True)
    if block_time - sealed <= max_delay:
        return
    try:
        trust.validate(signature.certificates, block_time)
    except SignatureError as exc:
        raise SigningTimeError(f"sealed_at {format_time(sealed)} is {block_time - sealed} before the anchoring "
                               f"block's time {format_time(block_time)} (more than {max_delay}) and the certificate "
                               f"chain is not valid at the block's time ({exc.reason}): the signing time cannot be "
                               "corroborated", after_anchor=False) from exc


def describe_signer(signature: BatchSignature, trust: TrustStore | None = None) -> SignerInfo | None:
    """What the leaf certificate claims (subject, serial, hospital) — trustworthy only after
    ``verify_batch_signature`` passed. None if the leaf does not decode."""
    try:
        leaf = trust.certificate(signature.certificates[0]) if trust else parse_certificate(signature.certificates[0])
    except SignatureError:
        return None
    return describe(leaf)


__all__ = [
    "ALGORITHMS",
    "BATCH_SIGNING_EKU",
    "BATCH_SIG_FORMAT",
    "EKU_REQUIRED_FROM",
    "HOSPITAL_URI_PREFIX",
    "MAX_CERTIFICATES",
    "MAX_CERTIFICATE_BYTES",
    "MAX_SEALING_DELAY",
    "MAX_SIGNATURE_BYTES",
    "SEALING_CLOCK_SKEW",
    "SIGNATURE_REASONS",
    "BatchSignature",
    "KeySigner",
    "SignatureError",
    "SignatureReason",
    "Signer",
    "SignerInfo",
    "SigningError",
    "SigningKey",
    "SigningTimeError",
    "TrustStore",
    "batch_signing_bytes",
    "check_signing_time",
    "describe_signer",
    "load_certificate_chain",
    "load_signing_key",
    "sign_batch",
    "sign_batch_with",
    "signs_batches",
    "verify_batch_signature",
]
