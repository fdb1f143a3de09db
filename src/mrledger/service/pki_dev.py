"""The development CA of ``mrledger pki init`` and of a node's first start (docs/signatures.md §10).

Why a CA of our own: a hospital's signature is only worth checking against a CA, and the embedded default
(``mrledger serve`` with no configuration) must sign every batch like a production node does, so that the
path that signs, stores and verifies is the one exercised every day. Its certificates say NOT FOR
PRODUCTION in their names: its keys sit next to the database, so a signature from them proves only that
whoever holds this data dir signed. Production nodes configure their regional CA instead
(``MRL_TRUST_ANCHORS``, ``MRL_SIGNING_KEYS_DIR``) and never run this code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mrledger.ledger import SigningError, load_signing_key
from mrledger.ledger.signing import BATCH_SIGNING_EKU, HOSPITAL_URI_PREFIX
from mrledger.service.pki import (
    CERT_SUFFIX,
    KEY_SUFFIX,
    PkiError,
    TrustFiles,
    check_hospital_id,
    read_file,
    read_key_file,
    write_private,
    write_public,
)

ROOT_CERT, ROOT_KEY = "root.crt.pem", "root.key.pem"
INTERMEDIATE_CERT, INTERMEDIATE_KEY = "intermediate.crt.pem", "intermediate.key.pem"
#: Dev certificates start this long before they are issued: a batch sealed a moment earlier by another
#: clock, or a clock a little behind, must not fall before notBefore (``certificate-expired``).
BACKDATE = timedelta(minutes=5)
DEV_ROOT_DAYS, DEV_INTERMEDIATE_DAYS, DEV_HOSPITAL_DAYS = 3650, 1825, 365


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, sign: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _certificate(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                 issuer_key: ec.EllipticCurvePrivateKey, now: datetime, days: int,
                 extensions: Iterable[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=days))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class DevCA:
    """A development CA: a root and an issuing intermediate in ``<data_dir>/pki``, made by ``mrledger pki
    init`` or on a node's first start. Its certificates say NOT FOR PRODUCTION in their names: the keys sit
    next to the database, so a signature from them proves only that this data dir's owner signed."""

    directory: Path
    root: x509.Certificate
    intermediate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    passphrase: bytes | None = field(default=None, repr=False)

    @property
    def root_file(self) -> Path:
        return self.directory / ROOT_CERT

    @property
    def intermediate_file(self) -> Path:
        return self.directory / INTERMEDIATE_CERT

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / INTERMEDIATE_CERT).is_file()

    @classmethod
    def create(cls, directory: Path, now: datetime, passphrase: bytes | None = None) -> DevCA:
        """A new root and intermediate (ECDSA P-256). Refuses to overwrite: replacing the CA would leave
        every batch signed so far verifiable only by those who kept the old root."""
        if (directory / ROOT_CERT).exists() or (directory / INTERMEDIATE_CERT).exists():
            raise PkiError(f"a CA already exists in {directory}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        org = "mrledger development PKI"
        root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        root = _certificate(_name("mrledger dev root CA - NOT FOR PRODUCTION", org), root_key, None, root_key, now,
                            DEV_ROOT_DAYS, [(x509.BasicConstraints(ca=True, path_length=1), True),
                                            (_usage(ca=True), True)])
        intermediate = _certificate(_name("mrledger dev issuing CA - NOT FOR PRODUCTION", org), key, root, root_key,
                                    now, DEV_INTERMEDIATE_DAYS, [(x509.BasicConstraints(ca=True, path_length=0), True),
                                                                 (_usage(ca=True), True)])
        write_private(directory / ROOT_KEY, _key_pem(root_key, passphrase))
        write_private(directory / INTERMEDIATE_KEY, _key_pem(key, passphrase))
        write_public(directory / ROOT_CERT, _pem(root))
        write_public(directory / INTERMEDIATE_CERT, _pem(intermediate))  # last: its presence means "complete"
        return cls(directory, root, intermediate, key, passphrase)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes | None = None) -> DevCA:
        try:
            root = x509.load_pem_x509_certificate(read_file(directory / ROOT_CERT, "dev root certificate"))
            intermediate = x509.load_pem_x509_certificate(read_file(directory / INTERMEDIATE_CERT,
                                                                "dev intermediate certificate"))
        except ValueError as exc:
            raise PkiError(f"the dev CA certificates in {directory} do not decode") from exc
        try:
            key = load_signing_key(read_key_file(directory / INTERMEDIATE_KEY, "dev intermediate key"), passphrase)
        except PkiError:
            raise
        except SigningError as exc:  # say which file; MRL_SIGNING_KEY_PASSPHRASE is the usual cause
            raise PkiError(f"{directory / INTERMEDIATE_KEY}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{directory / INTERMEDIATE_KEY} is not the dev CA's ECDSA key")
        return cls(directory, root, intermediate, key, passphrase)

    def trust(self) -> TrustFiles:
        return TrustFiles((self.root_file,), (), (self.intermediate_file,))

    def issue(self, hospital_id: str, keys_dir: Path, now: datetime, name: str | None = None) -> Path:
        """A new ECDSA P-256 key and certificate for a hospital (SAN ``urn:mrledger:hospital:<id>``,
        keyUsage digitalSignature, extendedKeyUsage batch signing, not a CA), valid from now (backdated
        ``BACKDATE``) for a year. Being the newest, it signs from the next batch on. Returns the certificate
        file."""
        check_hospital_id(hospital_id)
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = keys_dir / hospital_id
        target.mkdir(mode=0o700, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            _name(f"{hospital_id} batch signing (dev)", hospital_id), key, self.intermediate, self.key, now,
            DEV_HOSPITAL_DAYS, [(x509.BasicConstraints(ca=False, path_length=None), True), (_usage(sign=True), True),
                                (x509.ExtendedKeyUsage([BATCH_SIGNING_EKU]), False),
                                (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                                    HOSPITAL_URI_PREFIX + hospital_id)]), False)])
        stem = name or f"{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{cert.serial_number:x}"[:48]
        write_private(target / (stem + KEY_SUFFIX), _key_pem(key, self.passphrase))
        cert_file = target / (stem + CERT_SUFFIX)
        write_public(cert_file, _pem(cert, self.intermediate))  # last: the pair is complete once this exists
        return cert_file
