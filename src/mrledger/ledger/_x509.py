"""X.509 path validation for hospital signing certificates, written against ``cryptography`` primitives.

Why not ``cryptography.x509.verification``: its policies are the Web PKI's (RFC 5280 as profiled by the
CA/Browser Forum) and they do not fit a hospital PKI. It consults no CRLs at all, while revocation is one
of the failures we must report; it allows only the Web PKI's signature algorithms (an Ed25519 chain is
refused, and hospitals may use Ed25519); and it reports every failure as one free-text
``VerificationError``, where a verdict needs one stable reason per failure. A hospital chain is short,
ordered and carried in the receipt, so walking it ourselves is a short list of RFC 5280 §6.1 checks, each
mapped to its reason:

1. every certificate decodes (DER, extensions)                         → ``signature-malformed``
2. each certificate is signed by the next, the last by a configured
   anchor (or is one); no unknown critical extension; every name below a
   CA with name constraints (anchor included) within them               → ``certificate-untrusted``
3. the leaf is not a CA, allows digitalSignature and carries the batch-
   signing extended key usage; every issuer is a CA (basicConstraints
   CA=TRUE, keyCertSign if keyUsage is present) within its
   pathLenConstraint whose EKU, if any, allows batch signing           → ``certificate-key-usage``
4. every certificate, anchor included, is valid at the signing time     → ``certificate-expired``
5. no certificate is listed on its issuer's configured CRL             → ``certificate-revoked``

The signing time is the batch's ``sealed_at``, not the clock: a receipt signed in 2024 must still verify in
2040, after the certificate expired (this is what makes key rotation work). ``TrustStore`` caches parsed
certificates and successful validations, so a warm verification costs one signature check.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtensionOID

from mrledger.ledger._x509_usage import (
    EKU_REQUIRED_FROM,
    HOSPITAL_URI_PREFIX,
    check_name_constraints,
    eku_problem,
    ext,
    who,
)
from mrledger.ledger.errors import SignatureError, SigningError
from mrledger.ledger.records import format_time

#: A receipt carries the leaf and at most three intermediates; each certificate at most 16 KiB.
MAX_CERTIFICATES = 4
MAX_CERTIFICATE_BYTES = 16 * 1024
#: Entries per cache (parsed certificates; validated chains per CRL generation).
CACHE_SIZE = 4096

#: Critical extensions we process: basicConstraints, keyUsage, subjectAltName, extendedKeyUsage and
#: nameConstraints. Any other critical extension (policy constraints …) makes the certificate untrusted, as
#: RFC 5280 §4.2 requires of an extension a verifier does not implement.
_UNDERSTOOD_CRITICAL = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE,
                                  ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.EXTENDED_KEY_USAGE,
                                  ExtensionOID.NAME_CONSTRAINTS})

K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    """Bounded memo that evicts the oldest entry. FIFO rather than LRU: a hit costs one dict lookup and no
    lock, which is what the verify hot path needs; the working set (a few hundred hospitals' chains) is far
    below the bound, so eviction order hardly matters."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if key not in self._data and len(self._data) >= self._size:
                del self._data[next(iter(self._data))]
            self._data[key] = value

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """Who signed, as the leaf certificate states it. Reported in verdicts once the signature verified;
    on its own (``describe_signer``) it is a claim, not a trust decision."""

    hospital_id: str | None
    subject: str
    issuer: str
    serial: str  # lower-case hex, no prefix
    not_before: datetime
    not_after: datetime
    fingerprint: str  # SHA-256 of the DER, lower-case hex

    def to_obj(self) -> dict[str, Any]:
        return {
            "hospital_id": self.hospital_id, "subject": self.subject, "issuer": self.issuer, "serial": self.serial,
            "not_before": format_time(self.not_before), "not_after": format_time(self.not_after),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class ValidatedChain:
    """A chain that passed checks 1-5 at one signing time: what the signature check still needs."""

    public_key: CertificatePublicKeyTypes
    algorithm: str | None  # "ES256" / "Ed25519", or None for a key type we do not sign with
    hospital_ids: frozenset[str]
    signer: SignerInfo


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_algorithm(public_key: object) -> str | None:
    """The batch-signature algorithm a key signs with: P-256 → ES256, Ed25519 → Ed25519, anything else None."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return None


def hospital_ids(cert: x509.Certificate) -> frozenset[str]:
    """Hospital ids named by the certificate: SAN URIs ``urn:mrledger:hospital:<id>``. The subject CN is
    never consulted: it is free text chosen by each CA, where the URN is one agreed spelling."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(u[len(HOSPITAL_URI_PREFIX):] for u in san.get_values_for_type(x509.UniformResourceIdentifier)
                     if u.startswith(HOSPITAL_URI_PREFIX))


def describe(cert: x509.Certificate) -> SignerInfo:
    ids = hospital_ids(cert)
    return SignerInfo(
        hospital_id=next(iter(ids)) if len(ids) == 1 else None,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


#: What cryptography raises for a certificate it cannot read (not all of them are ValueErrors).
_UNDECODABLE = (ValueError, x509.DuplicateExtension, x509.InvalidVersion, x509.UnsupportedGeneralNameType)


def parse_certificate(der: bytes) -> x509.Certificate:
    """Decode one DER certificate *completely*. cryptography parses names, times and extensions lazily; a
    garbled one must fail here as malformed, not later as an exception nobody expects (the verdict of a
    hostile receipt must still be a verdict)."""
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise SignatureError("signature-malformed", f"certificate larger than {MAX_CERTIFICATE_BYTES} bytes")
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.serial_number, cert.extensions,
             cert.not_valid_before_utc, cert.not_valid_after_utc, hospital_ids(cert))
    except _UNDECODABLE as exc:
        raise SignatureError("signature-malformed", f"certificate does not decode: {exc}") from exc
    if cert.serial_number <= 0:  # RFC 5280 §4.1.2.2; cryptography will refuse these itself one day
        raise SignatureError("signature-malformed", "certificate serial number is not positive")
    return cert


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Issuer name and signature. ``cryptography`` refuses SHA-1 and MD5 certificate signatures itself (a
    test pins that, since a SHA-1 signature proves nothing since SHAttered)."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _ca_problem(cert: x509.Certificate) -> str | None:
    bc = ext(cert, x509.BasicConstraints)
    if bc is None or not bc.ca:
        return "is not a CA (basicConstraints CA=TRUE missing)"
    ku = ext(cert, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        return "is a CA whose keyUsage lacks keyCertSign"
    return None


class _Generation:
    """One CRL set and the validations made under it: replacing the CRLs replaces the whole object, so a
    validation cached under old CRLs can never answer under new ones, even if it is stored after the swap."""

    def __init__(self, crls: dict[tuple[bytes, bytes], x509.CertificateRevocationList], cache_size: int) -> None:
        self.crls = crls
        self.validated: _Cache[tuple[bytes, datetime], ValidatedChain] = _Cache(cache_size)


class TrustStore:
    """What a deployment trusts: anchor certificates (roots), CRLs, and intermediates known in advance so
    their CRLs can be authenticated. Pure: it takes bytes, never paths; reloading is the caller's job.

    Thread-safe. Parsed certificates are cached by DER bytes for the store's lifetime; validated chains by
    (SHA-256 of the chain, signing time) per CRL generation (see ``replace_crls``).
    """

    def __init__(self, roots: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList] = (),
                 intermediates: Sequence[x509.Certificate] = (), *, cache_size: int = CACHE_SIZE,
                 eku_required_from: datetime = EKU_REQUIRED_FROM) -> None:
        if not roots:
            raise SigningError("a trust store needs at least one anchor certificate")
        for anchor in roots:
            problem = _ca_problem(anchor)
            if problem:
                raise SigningError(f"anchor {who(anchor)} {problem}")
        self._anchor_ders = frozenset(_der(a) for a in roots)
        self._anchors: dict[bytes, list[x509.Certificate]] = {}
        for anchor in roots:
            self._anchors.setdefault(anchor.subject.public_bytes(), []).append(anchor)
        self._cas = list(roots) + self._chain_intermediates(roots, intermediates)
        self._cache_size = cache_size
        #: Leaves issued from then on need the batch-signing EKU (``EKU_REQUIRED_FROM``; tests move it).
        self.eku_required_from = eku_required_from
        self._parsed: _Cache[bytes, x509.Certificate] = _Cache(cache_size)
        self._generation = _Generation(self._index_crls(crls), cache_size)

    @classmethod
    def from_pem(cls, roots: Iterable[bytes], crls: Iterable[bytes] = (), intermediates: Iterable[bytes] = (),
                 *, cache_size: int = CACHE_SIZE, eku_required_from: datetime = EKU_REQUIRED_FROM) -> TrustStore:
        """Build from PEM: each item of ``roots``/``intermediates`` may hold several certificates; each item of
        ``crls`` is one CRL, PEM or DER (distribution points usually serve DER). Raises SigningError."""
        return cls(_load_certs(roots, "anchor"), [_load_crl(c) for c in crls],
                   _load_certs(intermediates, "intermediate"), cache_size=cache_size,
                   eku_required_from=eku_required_from)

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return tuple(a for group in self._anchors.values() for a in group)

    def replace_crls(self, crls: Iterable[bytes]) -> None:
        """Swap in a new CRL set (PEM or DER items). Validations cached under the old set are dropped with it:
        a certificate revoked a minute ago must not keep verifying from the cache."""
        self._generation = _Generation(self._index_crls([_load_crl(c) for c in crls]), self._cache_size)

    def stale_crls(self, now: datetime) -> list[str]:
        """Issuers whose CRL's nextUpdate is before ``now``. Verification still applies a stale CRL (a serial
        it lists stays revoked) and does not fail because of its age: it is pure and clockless, and the
        service that has a clock should alert and fetch a fresh CRL instead (docs/signatures.md §6)."""
        return sorted(crl.issuer.rfc4514_string() for crl in self._generation.crls.values()
                      if crl.next_update_utc is not None and crl.next_update_utc < now)

    def certificate(self, der: bytes) -> x509.Certificate:
        """Parse (or fetch from the cache) one DER certificate; raises SignatureError(signature-malformed)."""
        der = bytes(der)
        cert = self._parsed.get(der)
        if cert is None:
            cert = parse_certificate(der)
            self._parsed.put(der, cert)
        return cert

    def validate(self, certificates: Sequence[bytes], at: datetime) -> ValidatedChain:
        """Checks 1-5 of the module docstring for the chain ``certificates`` (leaf first) at time ``at``.
        Raises SignatureError with the reason of the first failed check; successes are cached."""
        if not 1 <= len(certificates) <= MAX_CERTIFICATES:
            raise SignatureError("signature-malformed", f"a chain holds 1..{MAX_CERTIFICATES} certificates")
        generation = self._generation
        digest = hashlib.sha256()
        for der in certificates:
            digest.update(len(der).to_bytes(4, "big") + der)
        key = (digest.digest(), at)
        found = generation.validated.get(key)
        if found is None:
            found = self._validate([self.certificate(d) for d in certificates], at, generation.crls)
            generation.validated.put(key, found)
        return found

    # -- internals --------------------------------------------------------------------------------------

    def _validate(self, certs: list[x509.Certificate], at: datetime,
                  crls: dict[tuple[bytes, bytes], x509.CertificateRevocationList]) -> ValidatedChain:
        for child, parent in itertools.pairwise(certs):
            if not _issued_by(child, parent):
                raise SignatureError("certificate-untrusted", f"{who(child)} is not issued by the next certificate")
        top = certs[-1]
        path = list(certs)  # leaf … anchor
        if _der(top) not in self._anchor_ders:  # the receipt may carry the anchor itself; it SHOULD omit it
            anchor = next((a for a in self._anchors.get(top.issuer.public_bytes(), []) if _issued_by(top, a)), None)
            if anchor is None:
                raise SignatureError("certificate-untrusted", f"{who(top)} does not chain to a configured anchor")
            path.append(anchor)
        for cert in path[:-1]:  # not the anchor: it is trusted as configured (RFC 5280 §6.1.1 d)
            unknown = [e.oid.dotted_string for e in cert.extensions if e.critical and e.oid not in _UNDERSTOOD_CRITICAL]
            if unknown:
                raise SignatureError("certificate-untrusted",
                                     f"{who(cert)} has unsupported critical extensions {unknown}")
        check_name_constraints(path)

        leaf = certs[0]
        bc = ext(leaf, x509.BasicConstraints)
        if bc is not None and bc.ca:
            raise SignatureError("certificate-key-usage", f"{who(leaf)} is a CA certificate, not a signer")
        ku = ext(leaf, x509.KeyUsage)
        if ku is None or not ku.digital_signature:
            raise SignatureError("certificate-key-usage", f"{who(leaf)} does not allow digitalSignature")
        problem = eku_problem(leaf, leaf=True, required_from=self.eku_required_from)
        if problem:
            raise SignatureError("certificate-key-usage", f"{who(leaf)} {problem}")
        for depth, ca in enumerate(path[1:]):  # depth = intermediates between this CA and the leaf
            problem = _ca_problem(ca) or eku_problem(ca, leaf=False, required_from=self.eku_required_from)
            if problem:
                raise SignatureError("certificate-key-usage", f"{who(ca)} {problem}")
            ca_bc = ext(ca, x509.BasicConstraints)
            if ca_bc.path_length is not None and depth > ca_bc.path_length:
                raise SignatureError("certificate-key-usage",
                                     f"{who(ca)} allows {ca_bc.path_length} intermediate(s) below it, found {depth}")

        for cert in path:
            if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
                raise SignatureError("certificate-expired",
                                     f"{who(cert)} is valid {format_time(cert.not_valid_before_utc)} .. "
                                     f"{format_time(cert.not_valid_after_utc)}, not at {format_time(at)}")

        for cert, issuer in itertools.pairwise(path):
            crl = crls.get((cert.issuer.public_bytes(), _spki(issuer)))
            if crl is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise SignatureError("certificate-revoked",
                                     f"{who(cert)} is listed on the CRL of {crl.issuer.rfc4514_string()} "
                                     f"(thisUpdate {format_time(crl.last_update_utc)})")

        try:
            public_key = leaf.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:  # a key type cryptography does not know
            raise SignatureError("signature-algorithm", f"{who(leaf)} has an unsupported public key") from exc
        return ValidatedChain(public_key, key_algorithm(public_key), hospital_ids(leaf), describe(leaf))

    @staticmethod
    def _chain_intermediates(roots: Sequence[x509.Certificate],
                             intermediates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        """Accept configured intermediates only if they chain to an anchor: they authenticate CRLs, so an
        unchained one would let anybody's CRL in (or, worse, look like it vouches for something)."""
        known, pending = list(roots), list(intermediates)
        while pending:
            ready = [c for c in pending if _ca_problem(c) is None and any(_issued_by(c, k) for k in known)]
            if not ready:
                raise SigningError(f"intermediate {who(pending[0])} is not a CA chaining to a configured anchor")
            known += ready
            pending = [c for c in pending if c not in ready]
        return known[len(roots):]

    def _index_crls(self, crls: Sequence[x509.CertificateRevocationList]
                    ) -> dict[tuple[bytes, bytes], x509.CertificateRevocationList]:
        """Authenticate each CRL against the configured CAs and keep the newest per (issuer name, key).

        A CRL that no configured CA signed is refused outright (SigningError) rather than ignored: silently
        dropping it would turn a misconfiguration into "nothing is revoked". Partitioned, delta and indirect
        CRLs (critical extensions) are refused too, since treating them as complete would be wrong."""
        index: dict[tuple[bytes, bytes], x509.CertificateRevocationList] = {}
        for crl in crls:
            name = crl.issuer.rfc4514_string()
            critical = [e.oid.dotted_string for e in crl.extensions if e.critical]
            critical += [e.oid.dotted_string for r in crl for e in r.extensions if e.critical]
            if critical:
                raise SigningError(f"CRL of {name} has critical extensions {critical} (partitioned, delta or "
                                   "indirect CRLs are not supported)")
            issuers = [ca for ca in self._cas if ca.subject == crl.issuer and _crl_signed_by(crl, ca)]
            if not issuers:
                raise SigningError(f"CRL of {name} is not signed by a configured CA allowed to sign CRLs")
            for ca in issuers:
                key = (crl.issuer.public_bytes(), _spki(ca))
                held = index.get(key)
                if held is None or held.last_update_utc < crl.last_update_utc:
                    index[key] = crl
        return index


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if not getattr(ext(ca, x509.KeyUsage), "crl_sign", True):
        return False
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def _load_certs(items: Iterable[bytes], what: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for item in items:
        try:
            certs += x509.load_pem_x509_certificates(bytes(item))
        except ValueError as exc:
            raise SigningError(f"{what} is not a PEM certificate: {exc}") from exc
    return certs


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    data = bytes(data)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise SigningError(f"not a CRL: {exc}") from exc
