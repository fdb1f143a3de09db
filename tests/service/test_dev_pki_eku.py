"""The dev PKI and the batch-signing extended key usage (issue 14, finding 10; docs/signatures.md §1, §10).

The dev CA issues the EKU from now on; a hospital whose current dev certificate predates it gets a new one at
its next seal, and the batches the old certificate signed keep verifying (their certificate was issued before
``EKU_REQUIRED_FROM``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mrledger.ledger import BatchHead, sign_batch_with, verify_batch_signature
from mrledger.ledger.signing import HOSPITAL_URI_PREFIX, signs_batches
from mrledger.service.pki import CERT_SUFFIX, KEY_SUFFIX, BatchSigning, SigningKeys, write_private, write_public
from mrledger.service.pki_dev import DEV_HOSPITAL_DAYS, DevCA, _certificate, _key_pem, _name, _pem, _usage

CHAIN_ID, CONTRACT = 31337, "0x" + "cd" * 20


def _legacy_certificate(ca: DevCA, hospital_id: str, keys_dir: Path, now: datetime) -> Path:
    """A hospital certificate exactly as the dev CA issued them before this change: no extendedKeyUsage."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(_name(f"{hospital_id} batch signing (dev)", hospital_id), key, ca.intermediate, ca.key, now,
                        DEV_HOSPITAL_DAYS, [(x509.BasicConstraints(ca=False, path_length=None), True),
                                            (_usage(sign=True), True),
                                            (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                                                HOSPITAL_URI_PREFIX + hospital_id)]), False)])
    folder = keys_dir / hospital_id
    folder.mkdir(parents=True, exist_ok=True)
    write_private(folder / ("legacy" + KEY_SUFFIX), _key_pem(key, None))
    write_public(folder / ("legacy" + CERT_SUFFIX), _pem(cert, ca.intermediate))
    return folder / ("legacy" + CERT_SUFFIX)


def test_new_dev_certificates_carry_the_eku(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = DevCA.create(tmp_path / "pki", now)
    cert = x509.load_pem_x509_certificate(ca.issue("gz-001", tmp_path / "keys", now).read_bytes())
    assert signs_batches(cert)


def test_a_legacy_dev_certificate_is_replaced_and_its_batches_keep_verifying(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = DevCA.create(tmp_path / "pki", now - timedelta(days=1))
    keys_dir = tmp_path / "pki" / "hospitals"
    legacy = _legacy_certificate(ca, "gz-001", keys_dir, now - timedelta(hours=2))
    trust = ca.trust()
    # What the legacy certificate signed before the upgrade still verifies.
    keys = SigningKeys(keys_dir)
    old = keys.current("gz-001", now - timedelta(hours=1))
    assert old is not None and old.signer is not None and old.name == "legacy"
    earlier = BatchHead("gz-001", 1, 1, bytes(32), now - timedelta(hours=1))
    verify_batch_signature(earlier, sign_batch_with(earlier, CHAIN_ID, CONTRACT, old.signer), trust.store)
    # The next seal: the dev CA issues a certificate with the EKU, which signs from now on.
    signing = BatchSigning(keys, trust, ca, clock=lambda: now)
    head = BatchHead("gz-001", 2, 1, bytes(32), now)
    signature = signing.sign(head, CHAIN_ID, CONTRACT)
    leaf = x509.load_der_x509_certificate(signature.certificates[0])
    assert signs_batches(leaf) and legacy.is_file()
    verify_batch_signature(head, signature, trust.store)
    assert signing.sign(BatchHead("gz-001", 3, 1, bytes(32), now), CHAIN_ID, CONTRACT).certificates[0] == \
        signature.certificates[0]  # issued once, not at every seal
