"""A test-only PKI: root → issuing intermediate → hospital certificates, and CRLs, built with ``cryptography``.

Why a factory instead of fixture files: every signature test needs a chain that is wrong in exactly one
way (expired at sealing, no digitalSignature, another hospital's URN, revoked, another root), and building
the chain in code keeps each test's defect visible next to its assertion.

Deterministic and fast: EC and Ed25519 keys are *derived* from a label (SHA-256 of it), so the same label
gives the same key in every process, and certificates and CRLs are signed with RFC 6979 deterministic
ECDSA. With explicit ``serial`` values the output is byte-identical run to run, which is what lets
``scripts/gen_vectors.py`` write signed-receipt vectors from this module. Only RSA keys (used to test an
unsupported signer) are random, and generated once per process.

Usable from any test package::

    from tests.pki import Pki
    pki = Pki()                                   # root + issuing intermediate, ECDSA P-256
    leaf = pki.hospital("qd-municipal-01")        # ES256 signer, valid 2024-01-01 .. 2026-01-01
    sig = sign_batch(head, 31337, CONTRACT, leaf.key, leaf.chain)
    verify_batch_signature(head, sig, pki.trust())
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from mrledger.ledger import TrustStore

KeyKind = Literal["ec", "ed25519", "p384", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
Window = tuple[datetime, datetime]

#: Default windows: the root outlives the intermediate, which outlives the hospital certificate. Test
#: batches are sealed in 2024-2025, inside all three.
ROOT_WINDOW: Window = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC))
CA_WINDOW: Window = (datetime(2021, 1, 1, tzinfo=UTC), datetime(2035, 1, 1, tzinfo=UTC))
LEAF_WINDOW: Window = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
HOSPITAL_URN = "urn:mrledger:hospital:"

SIGNER_USAGE = {"digital_signature": True}
CA_USAGE = {"key_cert_sign": True, "crl_sign": True}
_USAGE_FLAGS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


@functools.cache
def key(label: str = "default", kind: KeyKind = "ec") -> PrivateKey:
    """The key for ``label``: same label, same key. Tests that need *a different* key use another label."""
    seed = hashlib.sha256(f"mrledger test key:{kind}:{label}".encode()).digest()
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if kind in ("ec", "p384"):
        curve: ec.EllipticCurve = ec.SECP256R1() if kind == "ec" else ec.SECP384R1()
        return ec.derive_private_key(int.from_bytes(seed, "big") % (2**255) + 1, curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _sign(builder: x509.CertificateBuilder, by: PrivateKey) -> x509.Certificate:
    if isinstance(by, ed25519.Ed25519PrivateKey):
        return builder.sign(by, None)
    return builder.sign(by, hashes.SHA256(), ecdsa_deterministic=_deterministic(by))


def _deterministic(by: PrivateKey) -> bool | None:
    """RFC 6979 for EC keys (reproducible output); the option must be left unset for RSA."""
    return True if isinstance(by, ec.EllipticCurvePrivateKey) else None


def _usage(flags: dict[str, bool]) -> x509.KeyUsage:
    return x509.KeyUsage(**{n: flags.get(n, False) for n in _USAGE_FLAGS})


def _name(cn: str, org: str = "mrledger test PKI") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _serial(serial: int | None) -> int:
    return serial if serial is not None else x509.random_serial_number()


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def key_pem(private_key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of a key, encrypted when a passphrase is given (for ``load_signing_key`` tests)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@dataclass(frozen=True)
class Leaf:
    """A hospital signing certificate, its key, and the chain a receipt carries (leaf first, no root)."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    certs: tuple[x509.Certificate, ...] = ()

    @property
    def chain(self) -> tuple[bytes, ...]:
        return tuple(der(c) for c in self.certs)

    @property
    def serial(self) -> int:
        return self.cert.serial_number


@dataclass(frozen=True)
class CA:
    """A certificate authority: its certificate, its key, and the chain from it up to (excluding) the root."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    above: tuple[x509.Certificate, ...] = ()

    @property
    def pem(self) -> bytes:
        return pem(self.cert)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def _issue(self, builder: x509.CertificateBuilder, signer: PrivateKey | None) -> x509.Certificate:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return _sign(builder.issuer_name(self.cert.subject).add_extension(aki, critical=False),
                     signer if signer is not None else self.key)

    def issue_ca(self, cn: str, *, key_label: str = "intermediate", kind: KeyKind = "ec", window: Window = CA_WINDOW,
                 path_length: int | None = 0, ca: bool = True, usage: dict[str, bool] | None = None,
                 serial: int | None = None, extra: Iterable[tuple[x509.ExtensionType, bool]] = ()) -> CA:
        """A subordinate CA. ``ca=False`` or a ``usage`` without ``key_cert_sign`` build broken ones on purpose;
        ``extra``: more extensions (name constraints, an extended key usage)."""
        sub_key = key(key_label, kind)
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).public_key(sub_key.public_key())
                   .serial_number(_serial(serial)).not_valid_before(window[0]).not_valid_after(window[1])
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
                   .add_extension(_usage(CA_USAGE if usage is None else usage), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(sub_key.public_key()), critical=False))
        for ext, critical in extra:
            builder = builder.add_extension(ext, critical=critical)
        cert = self._issue(builder, None)
        return CA(cert, sub_key, (cert, *self.above))

    def hospital(self, hospital_id: str, *, key_label: str | None = None, kind: KeyKind = "ec",
                 window: Window = LEAF_WINDOW, usage: dict[str, bool] | None = None, key_usage: bool = True,
                 uris: Sequence[str] | None = None, ca: bool = False, serial: int | None = None,
                 cn: str | None = None, extra: Iterable[tuple[x509.ExtensionType, bool]] = (),
                 signer: PrivateKey | None = None) -> Leaf:
        """A hospital signing certificate naming ``urn:mrledger:hospital:<hospital_id>``.

        Each option breaks one thing: ``window`` (expired / not yet valid at sealing), ``usage`` (no
        digitalSignature), ``key_usage=False`` (no keyUsage extension at all), ``uris`` (another, several or
        no hospital URN), ``ca`` (a CA certificate used as signer), ``extra`` (e.g. an unknown critical
        extension), ``signer`` (signed by another key than this CA's), ``key_label`` (a second key for the
        same hospital: rotation)."""
        leaf_key = key(key_label or f"hospital:{hospital_id}", kind)
        names = [HOSPITAL_URN + hospital_id] if uris is None else list(uris)
        builder = (x509.CertificateBuilder().subject_name(_name(cn or f"{hospital_id} batch signing", hospital_id))
                   .public_key(leaf_key.public_key())
                   .serial_number(_serial(serial)).not_valid_before(window[0]).not_valid_after(window[1])
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False))
        if key_usage:
            builder = builder.add_extension(_usage(SIGNER_USAGE if usage is None else usage), critical=True)
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in names]), critical=False)
        for ext, critical in extra:
            builder = builder.add_extension(ext, critical=critical)
        cert = self._issue(builder, signer)
        return Leaf(cert, leaf_key, (cert, *self.above))

    def crl(self, revoked: Iterable[int] = (), *, last_update: datetime = datetime(2025, 1, 1, tzinfo=UTC),
            next_update: datetime | None = None, number: int = 1, signer: PrivateKey | None = None,
            extra: Iterable[tuple[x509.ExtensionType, bool]] = (), encoding: Literal["pem", "der"] = "pem") -> bytes:
        """A CRL of this CA listing ``revoked`` serials; ``signer`` forges one with another key."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(last_update).next_update(next_update or last_update + timedelta(days=7))
                   .add_extension(x509.CRLNumber(number), critical=False))
        for ext, critical in extra:
            builder = builder.add_extension(ext, critical=critical)
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last_update).build())
        by = signer if signer is not None else self.key
        if isinstance(by, ed25519.Ed25519PrivateKey):
            crl = builder.sign(by, None)
        else:
            crl = builder.sign(by, hashes.SHA256(), ecdsa_deterministic=_deterministic(by))
        return crl.public_bytes(serialization.Encoding.PEM if encoding == "pem" else serialization.Encoding.DER)


def root(cn: str = "mrledger Test Root", *, key_label: str = "root", kind: KeyKind = "ec", window: Window = ROOT_WINDOW,
         path_length: int | None = None, serial: int | None = None,
         extra: Iterable[tuple[x509.ExtensionType, bool]] = ()) -> CA:
    """A self-signed root CA; ``extra``: more extensions (name constraints, an extended key usage)."""
    root_key = key(key_label, kind)
    name = _name(cn)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(root_key.public_key())
               .serial_number(_serial(serial)).not_valid_before(window[0]).not_valid_after(window[1])
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(_usage(CA_USAGE), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False))
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    return CA(_sign(builder, root_key), root_key)


# -- a SHA-1 certificate, which cryptography will no longer build ------------------------------------------

_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier ecdsa-with-SHA256
_ECDSA_SHA1 = bytes.fromhex("300906072a8648ce3d0401")  # AlgorithmIdentifier ecdsa-with-SHA1


def _tlv(tag: int, body: bytes) -> bytes:
    n, size = len(body), (len(body).bit_length() + 7) // 8
    length = bytes([n]) if n < 128 else bytes([0x80 | size]) + n.to_bytes(size, "big")
    return bytes([tag]) + length + body


def _body(tlv: bytes) -> bytes:
    first = tlv[1]
    if first < 128:
        return tlv[2:2 + first]
    size = first & 0x7F
    return tlv[2 + size:2 + size + int.from_bytes(tlv[2:2 + size], "big")]


def sha1_twin(leaf: Leaf, issuer: CA) -> bytes:
    """DER of ``leaf`` re-signed by ``issuer`` (an EC CA) with ECDSA-SHA1: same TBS, SHA-1 algorithm ids."""
    assert isinstance(issuer.key, ec.EllipticCurvePrivateKey)
    body = _body(leaf.cert.tbs_certificate_bytes)
    assert body.count(_ECDSA_SHA256) == 1
    tbs = _tlv(0x30, body.replace(_ECDSA_SHA256, _ECDSA_SHA1))
    signature = issuer.key.sign(tbs, ec.ECDSA(hashes.SHA1()))  # SHA-1: the point of the exercise
    return _tlv(0x30, tbs + _ECDSA_SHA1 + _tlv(0x03, b"\x00" + signature))


class Pki:
    """The usual deployment: one root (kept offline) and one issuing intermediate that certifies hospitals."""

    def __init__(self, name: str = "mrledger Test", *, kind: KeyKind = "ec", serials: tuple[int, int] | None = None
                 ) -> None:
        self.root = root(f"{name} Root", key_label=f"{name}:root", kind=kind, serial=serials[0] if serials else None)
        self.intermediate = self.root.issue_ca(f"{name} Issuing CA", key_label=f"{name}:intermediate", kind=kind,
                                               serial=serials[1] if serials else None)

    def hospital(self, hospital_id: str, **options: Any) -> Leaf:
        """A hospital certificate from the intermediate; options as ``CA.hospital``."""
        return self.intermediate.hospital(hospital_id, **options)

    def trust(self, crls: Sequence[bytes] = (), *, with_intermediate: bool = True) -> TrustStore:
        """The verifier's view: the root as anchor, CRLs, and the intermediate (which authenticates its CRLs)."""
        return TrustStore.from_pem([self.root.pem], crls, [self.intermediate.pem] if with_intermediate else [])
