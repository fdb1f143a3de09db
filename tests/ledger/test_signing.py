"""Hospital batch signatures (``mrl-batch-sig/1``): signing, chain validation, every failure reason, and the
receipt's ``signature`` section through ``verify_receipt``.

The chains come from tests/pki.py, each broken in exactly one way. The receipt under test is the worked
example of docs/receipt.md (tests/vectors/receipt/ok_unanchored.json), signed here.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from mrledger.ledger import (
    SIGNATURE_REASONS,
    Anchor,
    BatchHead,
    BatchSignature,
    KeySigner,
    Receipt,
    SignatureError,
    SigningError,
    TrustStore,
    batch_signing_bytes,
    load_certificate_chain,
    load_signing_key,
    sign_batch,
    sign_batch_with,
    verify_batch_signature,
    verify_receipt,
)
from mrledger.ledger.errors import EncodingError, VerificationError
from mrledger.ledger.verify import CHECKS
from tests.pki import HOSPITAL_URN, Leaf, Pki, der, key, key_pem, pem, root, sha1_twin

ROOT_DIR = Path(__file__).resolve().parents[2]
VECTORS = ROOT_DIR / "tests" / "vectors" / "receipt"
SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT_DIR / "docs" / "receipt.schema.json").read_text()))


def _vector(stem: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((VECTORS / f"{stem}.json").read_text())["receipt"]
    return obj


BASE = Receipt.from_obj(_vector("ok_unanchored"))  # qd-municipal-01, batch 7, sealed 2024-05-01T02:05:00Z
ANCHOR = Anchor.from_obj(_vector("ok_anchored")["anchor"])  # chain 31337, registry 0xabab…ab
HEAD = BASE.batch
HID = HEAD.hospital_id
CHAIN_ID, CONTRACT = ANCHOR.chain_id, ANCHOR.contract

PKI = Pki()
OTHER_PKI = Pki("Other")  # a CA this deployment does not trust
LEAF = PKI.hospital(HID)
TRUST = PKI.trust()


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def head_at(sealed_at: datetime, seq: int = 7) -> BatchHead:
    return dataclasses.replace(HEAD, sealed_at=sealed_at, seq=seq)


def sign(leaf: Leaf = LEAF, head: BatchHead = HEAD, chain_id: int = CHAIN_ID, contract: str = CONTRACT
         ) -> BatchSignature:
    return sign_batch(head, chain_id, contract, leaf.key, leaf.chain)  # type: ignore[arg-type]


SIG = sign()


def reason(head: BatchHead, sig: BatchSignature, trust: TrustStore = TRUST) -> str | None:
    try:
        verify_batch_signature(head, sig, trust)
    except SignatureError as exc:
        assert isinstance(exc, VerificationError)
        assert str(exc).startswith(exc.reason + ": ")
        return exc.reason
    return None


def flip_last_byte(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 1])


# -- the signed encoding -----------------------------------------------------------------------------


def test_signed_bytes_known_answer() -> None:
    # RFC 8785 of {"format": "mrl-batch-sig/1", "batch": <mrl-batch/1 head>, "chain_id", "contract"}: keys
    # sorted (batch < chain_id < contract < format), the head exactly as in the receipt (docs/receipt.md §12),
    # the contract in lower case even when given checksummed.
    want = (b'{"batch":{"format":"mrl-batch/1","hospital_id":"qd-municipal-01",'
            b'"root":"76d17b31b2b1ad8493866ae98cddd0af9b428261402b199a3458aa168da7be15",'
            b'"sealed_at":"2024-05-01T02:05:00Z","seq":7,"size":7},"chain_id":31337,'
            b'"contract":"0xabababababababababababababababababababab","format":"mrl-batch-sig/1"}')
    assert batch_signing_bytes(HEAD, 31337, "0x" + "AB" * 20) == want
    # the value is a plain ECDSA P-256 / SHA-256 DER signature over exactly these bytes
    public_key = LEAF.cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(SIG.value, want, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(SIG.value)
    assert encode_dss_signature(r, s) == SIG.value and len(SIG.value) <= 72


@pytest.mark.parametrize(("chain_id", "contract"), [(0, CONTRACT), (True, CONTRACT), (1, "0xab"), (1, "ab" * 20)])
def test_signed_bytes_refuse_bad_deployment(chain_id: Any, contract: str) -> None:
    with pytest.raises(EncodingError):
        batch_signing_bytes(HEAD, chain_id, contract)


def test_es256_signatures_are_deterministic_rfc6979() -> None:
    assert sign().value == SIG.value
    assert sign(head=head_at(HEAD.sealed_at, seq=8)).value != SIG.value


# -- valid signatures --------------------------------------------------------------------------------


def test_valid_es256() -> None:
    assert SIG.alg == "ES256" and SIG.chain_id == CHAIN_ID and SIG.contract == CONTRACT
    assert SIG.certificates == LEAF.chain and len(SIG.certificates) == 2  # leaf, intermediate; no root
    assert reason(HEAD, SIG) is None


def test_valid_ed25519_chain_and_mixed_chain() -> None:
    ed = Pki("Ed", kind="ed25519")
    leaf = ed.hospital(HID, kind="ed25519")
    sig = sign(leaf)
    assert sig.alg == "Ed25519" and len(sig.value) == 64
    assert reason(HEAD, sig, ed.trust()) is None
    assert reason(HEAD, dataclasses.replace(sig, value=flip_last_byte(sig.value)), ed.trust()) == "signature-invalid"
    # An Ed25519 hospital key under an ECDSA CA (and vice versa the CA's algorithm is free).
    mixed = PKI.hospital(HID, kind="ed25519")
    assert reason(HEAD, sign(mixed)) is None


def test_chain_may_carry_the_anchor_itself() -> None:
    sig = dataclasses.replace(SIG, certificates=(*LEAF.chain, der(PKI.root.cert)))
    assert reason(HEAD, sig) is None


def test_rotation_old_batches_keep_verifying_with_the_old_certificate() -> None:
    """A new certificate signs from the next batch on; the old one expires later, and batches it signed
    still verify because validity is judged at each batch's sealed_at, never at 'now'."""
    old = PKI.hospital(HID, key_label="rotation-old", window=(utc(2023, 1, 1), utc(2024, 7, 1)))
    new = PKI.hospital(HID, key_label="rotation-new", window=(utc(2024, 6, 1), utc(2026, 6, 1)))
    before, after = head_at(utc(2024, 5, 1), seq=7), head_at(utc(2024, 8, 1), seq=8)
    trust = PKI.trust()
    assert reason(before, sign(old, before), trust) is None
    assert reason(after, sign(new, after), trust) is None
    assert reason(before, sign(old, before), trust) is None  # still, after the rotation
    # The retired key cannot sign later batches, and the new one cannot backdate.
    assert reason(after, sign(old, after), trust) == "certificate-expired"
    assert reason(before, sign(new, before), trust) == "certificate-expired"


# -- each failure ------------------------------------------------------------------------------------


def test_forged_signatures_are_invalid() -> None:
    assert reason(HEAD, dataclasses.replace(SIG, value=flip_last_byte(SIG.value))) == "signature-invalid"
    # Mallory's key with the hospital's (public) certificates.
    mallory = ec.derive_private_key(12345, ec.SECP256R1())
    forged = mallory.sign(batch_signing_bytes(HEAD, CHAIN_ID, CONTRACT), ec.ECDSA(hashes.SHA256()))
    assert reason(HEAD, dataclasses.replace(SIG, value=forged)) == "signature-invalid"
    # A genuine signature, replayed onto another batch, chain or registry.
    assert reason(head_at(HEAD.sealed_at, seq=8), SIG) == "signature-invalid"
    assert reason(HEAD, dataclasses.replace(SIG, chain_id=1)) == "signature-invalid"
    assert reason(HEAD, dataclasses.replace(SIG, contract="0x" + "cd" * 20)) == "signature-invalid"


def test_signed_by_another_hospitals_certificate() -> None:
    other = PKI.hospital("gz-002")
    assert reason(HEAD, sign(other)) == "certificate-hospital-mismatch"
    # The subject CN is not authoritative: a certificate naming the hospital only there does not count.
    cn_only = PKI.hospital(HID, key_label="cn-only", uris=[], cn=HID)
    assert reason(HEAD, sign(cn_only)) == "certificate-hospital-mismatch"
    # One certificate, one hospital.
    both = PKI.hospital(HID, key_label="both", uris=[HOSPITAL_URN + HID, HOSPITAL_URN + "gz-002"])
    assert reason(HEAD, sign(both)) == "certificate-hospital-mismatch"
    # Ids compare exactly.
    upper = PKI.hospital(HID, key_label="upper", uris=[HOSPITAL_URN + HID.upper()])
    assert reason(HEAD, sign(upper)) == "certificate-hospital-mismatch"


def test_untrusted_chains() -> None:
    assert reason(HEAD, sign(OTHER_PKI.hospital(HID))) == "certificate-untrusted"
    assert reason(HEAD, dataclasses.replace(SIG, certificates=SIG.certificates[:1])) == "certificate-untrusted"
    assert reason(HEAD, dataclasses.replace(SIG, certificates=SIG.certificates[::-1])) == "certificate-untrusted"
    # Names the intermediate as issuer, but another key signed it.
    fake = PKI.hospital(HID, key_label="fake", signer=key("mallory"))
    assert reason(HEAD, sign(fake)) == "certificate-untrusted"
    # A self-signed "root" carried in the receipt is not an anchor.
    # A look-alike root (same names as ours, another key) carried in the receipt is not an anchor.
    rogue = root("mrledger Test Root", key_label="rogue-root")
    rogue_leaf = rogue.issue_ca("mrledger Test Issuing CA", key_label="rogue-ca").hospital(HID)
    rogue_sig = sign(rogue_leaf)
    assert reason(HEAD, rogue_sig) == "certificate-untrusted"
    assert reason(HEAD, dataclasses.replace(rogue_sig, certificates=(*rogue_leaf.chain, der(rogue.cert)))) == (
        "certificate-untrusted")


def test_sha1_certificate_signatures_are_untrusted() -> None:
    """SHA-1 collisions are practical (SHAttered, 2017): a SHA-1 certificate signature proves nothing. We rely
    on cryptography refusing it; this pins that, should a future release relax it."""
    twin = sha1_twin(LEAF, PKI.intermediate)
    assert x509.load_der_x509_certificate(twin).signature_hash_algorithm.name == "sha1"  # type: ignore[union-attr]
    assert reason(HEAD, dataclasses.replace(SIG, certificates=(twin, *SIG.certificates[1:]))) == "certificate-untrusted"


def test_unknown_critical_extension_is_untrusted() -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = PKI.hospital(HID, key_label="crit", extra=[(unknown, True)])
    assert reason(HEAD, sign(leaf)) == "certificate-untrusted"
    harmless = PKI.hospital(HID, key_label="noncrit", extra=[(unknown, False)])
    assert reason(HEAD, sign(harmless)) is None


def test_expired_at_sealing_time() -> None:
    lapsed = PKI.hospital(HID, key_label="lapsed", window=(utc(2023, 1, 1), utc(2024, 1, 1)))
    assert reason(HEAD, sign(lapsed)) == "certificate-expired"


def test_valid_now_but_not_when_sealed() -> None:
    """Issued after the batch was sealed (and valid today): a key obtained later cannot sign the past."""
    later = PKI.hospital(HID, key_label="later", window=(utc(2024, 6, 1), utc(2030, 1, 1)))
    with pytest.raises(SignatureError, match=r"not at 2024-05-01T02:05:00Z") as exc:
        verify_batch_signature(HEAD, sign(later), TRUST)
    assert exc.value.reason == "certificate-expired"


def test_expired_intermediate_or_root_at_sealing_time() -> None:
    short = PKI.root.issue_ca("Short-lived CA", key_label="short-ca", window=(utc(2021, 1, 1), utc(2024, 3, 1)))
    assert reason(HEAD, sign(short.hospital(HID))) == "certificate-expired"
    old_root = root("Old Root", key_label="old-root", window=(utc(2019, 1, 1), utc(2024, 2, 1)))
    under_old = old_root.issue_ca("Old Issuing CA", key_label="old-ca")
    trust = TrustStore.from_pem([old_root.pem])
    assert reason(HEAD, sign(under_old.hospital(HID)), trust) == "certificate-expired"


def test_validation_cache_is_keyed_by_signing_time() -> None:
    trust = PKI.trust()
    assert trust.validate(SIG.certificates, HEAD.sealed_at) is trust.validate(SIG.certificates, HEAD.sealed_at)
    late = head_at(utc(2027, 1, 1))
    assert reason(late, sign(head=late), trust) == "certificate-expired"


@pytest.mark.parametrize("encoding", ["pem", "der"])
def test_revoked_via_crl(encoding: str) -> None:
    crl = PKI.intermediate.crl([LEAF.serial, 42], encoding=encoding)  # type: ignore[arg-type]
    assert reason(HEAD, SIG, PKI.trust([crl])) == "certificate-revoked"
    assert reason(HEAD, SIG, PKI.trust([PKI.intermediate.crl([42])])) is None


def test_revoked_intermediate_on_the_roots_crl() -> None:
    crl = PKI.root.crl([PKI.intermediate.serial])
    assert reason(HEAD, SIG, PKI.trust([crl])) == "certificate-revoked"


def test_revocation_applies_regardless_of_sealing_date_and_crl_age() -> None:
    """sealed_at is the signer's own claim, so a revocation is not limited to batches sealed after it; a
    stale CRL still counts (and is reported by stale_crls for the service to refresh)."""
    crl = PKI.intermediate.crl([LEAF.serial], last_update=utc(2025, 1, 1), next_update=utc(2025, 1, 8))
    trust = PKI.trust([crl])
    assert reason(HEAD, SIG, trust) == "certificate-revoked"  # HEAD sealed in 2024, before the revocation
    assert trust.stale_crls(utc(2025, 1, 2)) == []
    assert trust.stale_crls(utc(2025, 2, 1)) == [PKI.intermediate.cert.subject.rfc4514_string()]


def test_newest_crl_of_a_ca_wins() -> None:
    listed = PKI.intermediate.crl([LEAF.serial], last_update=utc(2025, 1, 1), number=1)
    released = PKI.intermediate.crl([], last_update=utc(2025, 2, 1), number=2)
    assert reason(HEAD, SIG, PKI.trust([listed, released])) is None
    assert reason(HEAD, SIG, PKI.trust([released, listed])) is None
    assert reason(HEAD, SIG, PKI.trust([released, PKI.intermediate.crl([LEAF.serial], last_update=utc(2025, 3, 1))])
                  ) == "certificate-revoked"


def test_crl_change_is_not_hidden_by_the_cache() -> None:
    trust = PKI.trust()
    assert reason(HEAD, SIG, trust) is None  # warm
    trust.replace_crls([PKI.intermediate.crl([LEAF.serial])])
    assert reason(HEAD, SIG, trust) == "certificate-revoked"
    trust.replace_crls([])
    assert reason(HEAD, SIG, trust) is None


def test_crl_signed_by_the_wrong_ca_is_refused() -> None:
    forged = PKI.intermediate.crl([LEAF.serial], signer=key("mallory"))  # right issuer name, wrong key
    with pytest.raises(SigningError, match="not signed by a configured CA"):
        PKI.trust([forged])
    with pytest.raises(SigningError, match="not signed by a configured CA"):
        PKI.trust([OTHER_PKI.intermediate.crl([LEAF.serial])])
    # An intermediate's CRL needs that intermediate configured (it authenticates the CRL).
    with pytest.raises(SigningError, match="not signed by a configured CA"):
        PKI.trust([PKI.intermediate.crl([LEAF.serial])], with_intermediate=False)
    trust = PKI.trust()
    with pytest.raises(SigningError):
        trust.replace_crls([forged])
    assert reason(HEAD, SIG, trust) is None  # the refused update left the store as it was


def test_partitioned_crl_is_refused() -> None:
    idp = x509.IssuingDistributionPoint(full_name=None, relative_name=None, only_contains_user_certs=True,
                                        only_contains_ca_certs=False, only_some_reasons=None, indirect_crl=False,
                                        only_contains_attribute_certs=False)
    with pytest.raises(SigningError, match="critical extensions"):
        PKI.trust([PKI.intermediate.crl([], extra=[(idp, True)])])


@pytest.mark.parametrize("case", ["no-digital-signature", "non-repudiation-only", "no-key-usage", "ca-as-signer"])
def test_wrong_key_usage_of_the_signer(case: str) -> None:
    leaf = {
        "no-digital-signature": lambda: PKI.hospital(HID, key_label=case, usage={"key_encipherment": True}),
        "non-repudiation-only": lambda: PKI.hospital(HID, key_label=case, usage={"content_commitment": True}),
        # keyUsage is required: an unrestricted key is not an explicit signing authorisation.
        "no-key-usage": lambda: PKI.hospital(HID, key_label=case, key_usage=False),
        "ca-as-signer": lambda: PKI.hospital(HID, key_label=case, ca=True),
    }[case]()
    assert reason(HEAD, sign(leaf)) == "certificate-key-usage"


def test_issuer_that_is_not_a_ca() -> None:
    not_ca = PKI.root.issue_ca("Not a CA", key_label="not-ca", ca=False)
    assert reason(HEAD, sign(not_ca.hospital(HID))) == "certificate-key-usage"
    no_cert_sign = PKI.root.issue_ca("No keyCertSign", key_label="no-cert-sign", usage={"crl_sign": True})
    assert reason(HEAD, sign(no_cert_sign.hospital(HID))) == "certificate-key-usage"


def test_path_length_constraint() -> None:
    strict = root("PathLen0 Root", key_label="pathlen0", path_length=0)
    intermediate = strict.issue_ca("PathLen0 Issuing CA", key_label="pathlen0-ca")
    trust = TrustStore.from_pem([strict.pem])
    assert reason(HEAD, sign(intermediate.hospital(HID)), trust) == "certificate-key-usage"
    assert reason(HEAD, sign(strict.hospital(HID)), trust) is None  # directly under the root: allowed


def test_unsupported_algorithms() -> None:
    assert reason(HEAD, dataclasses.replace(SIG, alg="ES512")) == "signature-algorithm"
    assert reason(HEAD, dataclasses.replace(SIG, alg="Ed25519")) == "signature-algorithm"
    for kind in ("p384", "rsa"):
        leaf = PKI.hospital(HID, key_label=f"alg-{kind}", kind=kind)
        with pytest.raises(SigningError, match="P-256 or Ed25519"):
            sign(leaf)
        # Hand-made: a P-384 / RSA leaf certificate under a trusted CA, claiming ES256.
        fake = dataclasses.replace(SIG, certificates=leaf.chain)
        assert reason(HEAD, fake) == "signature-algorithm"


def test_malformed_signatures() -> None:
    assert reason(HEAD, dataclasses.replace(SIG, certificates=(b"not a certificate", SIG.certificates[1]))) == (
        "signature-malformed")
    r, s = decode_dss_signature(SIG.value)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS-style r||s is not the format
    assert reason(HEAD, dataclasses.replace(SIG, value=raw)) == "signature-malformed"
    body = SIG.value[2:]
    ber = b"\x30\x81" + bytes([len(body)]) + body  # long-form length: BER, not DER
    assert reason(HEAD, dataclasses.replace(SIG, value=ber)) == "signature-malformed"
    ed = PKI.hospital(HID, key_label="ed-malformed", kind="ed25519")
    assert reason(HEAD, dataclasses.replace(sign(ed), value=bytes(63))) == "signature-malformed"


def test_corrupted_certificates_only_ever_give_a_reason() -> None:
    """Bit flips anywhere in the carried certificates: verification reports a reason, never crashes (the
    verdict of a hostile receipt must be a verdict)."""
    rng = random.Random(8)
    blob = b"".join(SIG.certificates)
    seen: set[str] = set()
    for _ in range(300):
        i = rng.randrange(len(blob))
        flipped = blob[:i] + bytes([blob[i] ^ (1 << rng.randrange(8))]) + blob[i + 1:]
        certs = (flipped[:len(SIG.certificates[0])], flipped[len(SIG.certificates[0]):])
        got = reason(HEAD, dataclasses.replace(SIG, certificates=certs), PKI.trust())
        assert got in SIGNATURE_REASONS, got
        seen.add(got)
    assert {"signature-malformed", "certificate-untrusted"} <= seen


@pytest.mark.parametrize(
    "change",
    [{"alg": ""}, {"alg": "ES 256"}, {"chain_id": 0}, {"chain_id": True}, {"contract": "0x" + "AB" * 20},
     {"value": b""}, {"value": bytes(513)}, {"certificates": ()}, {"certificates": (b"x",) * 5},
     {"certificates": (b"",)}],
)
def test_batch_signature_shape_is_checked_at_construction(change: dict[str, Any]) -> None:
    with pytest.raises(EncodingError):
        dataclasses.replace(SIG, **change)


# -- signers and keys --------------------------------------------------------------------------------


def test_key_signer_refuses_a_key_that_is_not_the_certificates() -> None:
    with pytest.raises(SigningError, match="does not belong"):
        KeySigner(key("mallory"), LEAF.chain)  # type: ignore[arg-type]
    with pytest.raises(SigningError):
        KeySigner(LEAF.key, ())  # type: ignore[arg-type]
    signer = KeySigner(LEAF.key, LEAF.certs)  # type: ignore[arg-type]
    assert signer.certificates == LEAF.chain and signer.algorithm == "ES256"
    assert "KeySigner(algorithm='ES256'" in repr(signer)
    assert str(LEAF.key.private_numbers().private_value) not in repr(signer)  # type: ignore[union-attr]


def test_load_signing_key_with_and_without_passphrase() -> None:
    clear = key_pem(LEAF.key)
    locked = key_pem(LEAF.key, b"s3cret-passphrase")
    for loaded in (load_signing_key(clear), load_signing_key(locked, b"s3cret-passphrase")):
        assert reason(HEAD, sign_batch(HEAD, CHAIN_ID, CONTRACT, loaded, LEAF.chain)) is None
    for pem_bytes, passphrase in [(locked, b"Tr0ub4dor"), (locked, None), (clear, b"s3cret-passphrase"),
                                  (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None),
                                  (key_pem(key("rsa-signer", "rsa")), None), (key_pem(key("p384", "p384")), None)]:
        with pytest.raises(SigningError) as exc:
            load_signing_key(pem_bytes, passphrase)
        shown = f"{exc.value} {exc.value!r} {exc.value.__cause__}"
        assert "s3cret" not in shown and "Tr0ub4dor" not in shown and "PRIVATE" not in shown and "BEGIN" not in shown


def test_load_certificate_chain_keeps_file_order() -> None:
    assert load_certificate_chain(pem(*LEAF.certs)) == LEAF.chain
    with pytest.raises(SigningError):
        load_certificate_chain(b"not pem")


class _HsmLikeSigner:
    """What a PKCS#11 adapter does: CKM_ECDSA over a SHA-256 digest returns raw r||s, converted to DER."""

    def __init__(self, leaf: Leaf, der_encode: bool = True) -> None:
        self._leaf, self._der = leaf, der_encode
        self.algorithm = "ES256"
        self.certificates = leaf.chain

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        digest = hashes.Hash(hashes.SHA256())
        digest.update(data)
        value = self._leaf.key.sign(digest.finalize(), ec.ECDSA(Prehashed(hashes.SHA256())))  # type: ignore[call-arg, arg-type]
        if self._der:
            return value
        r, s = decode_dss_signature(value)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_signer_protocol_for_hardware_keys() -> None:
    sig = sign_batch_with(HEAD, CHAIN_ID, CONTRACT, _HsmLikeSigner(LEAF))
    assert reason(HEAD, sig) is None
    # A signer returning the wrong encoding is caught at sealing, not by a doctor years later.
    with pytest.raises(SigningError, match="signature-malformed"):
        sign_batch_with(HEAD, CHAIN_ID, CONTRACT, _HsmLikeSigner(LEAF, der_encode=False))


# -- trust store configuration -----------------------------------------------------------------------


def test_trust_store_configuration_errors() -> None:
    with pytest.raises(SigningError, match="at least one anchor"):
        TrustStore.from_pem([])
    with pytest.raises(SigningError, match="is not a CA"):
        TrustStore.from_pem([pem(LEAF.cert)])
    with pytest.raises(SigningError, match="PEM"):
        TrustStore.from_pem([b"garbage"])
    with pytest.raises(SigningError, match="chaining to a configured anchor"):
        TrustStore.from_pem([PKI.root.pem], [], [OTHER_PKI.intermediate.pem])
    with pytest.raises(SigningError, match="not a CRL"):
        TrustStore.from_pem([PKI.root.pem], [b"garbage"])
    bundle = TrustStore.from_pem([PKI.root.pem + OTHER_PKI.root.pem])
    assert len(bundle.anchors) == 2
    assert reason(HEAD, sign(OTHER_PKI.hospital(HID)), bundle) is None


# -- receipts ----------------------------------------------------------------------------------------

SIGNED = BASE.with_signature(SIG)


def test_unsigned_receipts_serialise_as_before() -> None:
    assert "signature" not in BASE.to_obj()
    assert json.loads(BASE.to_json()) == _vector("ok_unanchored")


def test_signed_receipt_round_trip() -> None:
    obj = SIGNED.to_obj()
    assert obj["signature"] == {
        "alg": "ES256", "chain_id": CHAIN_ID, "contract": CONTRACT,
        "value": base64.b64encode(SIG.value).decode(),
        "certificates": [base64.b64encode(c).decode() for c in LEAF.chain],
    }
    parsed = Receipt.from_json(SIGNED.to_json())
    assert parsed == SIGNED and parsed.to_json() == SIGNED.to_json()
    assert parsed.with_anchor(ANCHOR).signature == SIG
    assert not list(SCHEMA.iter_errors(obj)) and not list(SCHEMA.iter_errors(SIGNED.with_anchor(ANCHOR).to_obj()))


def test_signed_receipt_verifies() -> None:
    verdict = verify_receipt(SIGNED.to_json(), trust=TRUST)
    assert verdict.status == "unanchored" and verdict.failed is None
    names = [c.name for c in verdict.checks]
    assert names == ["format", "critical-extensions", "leaf-hash", "batch-identity", "inclusion", "signature", "anchor"]
    assert all(n in CHECKS for n in names)
    assert verdict.signature.status == "valid" and verdict.signature.alg == "ES256"
    signer = verdict.signature.signer
    assert signer is not None and signer.hospital_id == HID and signer.serial == format(LEAF.serial, "x")
    assert signer.subject == LEAF.cert.subject.rfc4514_string()
    out = verdict.to_obj()["signature"]
    assert out["status"] == "valid" and out["signer"]["not_before"] == "2024-01-01T00:00:00Z"
    anchored = verify_receipt(SIGNED.with_anchor(ANCHOR).to_obj(), trust=TRUST, require_signature=True)
    assert anchored.status == "valid" and anchored.signature.status == "valid"
    # EIP-55 spelling of the same registry in the anchor is the same registry.
    mixed = Anchor(CHAIN_ID, "0x" + "aB" * 20, ANCHOR.tx_hash, ANCHOR.block_number, ANCHOR.block_hash)
    assert verify_receipt(SIGNED.with_anchor(mixed), trust=TRUST).status == "valid"


def test_signature_is_not_checked_when_an_earlier_check_fails() -> None:
    obj = copy.deepcopy(SIGNED.to_obj())
    obj["record"]["subject"]["value"] = "P-000000"
    verdict = verify_receipt(obj, trust=TRUST)
    assert verdict.failed == "leaf-hash" and verdict.signature.status == "not-checked"
    assert verdict.signature.alg == "ES256"


def test_signed_receipt_without_trust_is_not_checked() -> None:
    """No anchors, no judgement: the receipt's own Merkle checks decide, the signature is reported as such."""
    verdict = verify_receipt(SIGNED.to_json())
    assert verdict.status == "unanchored"
    assert [c.name for c in verdict.checks] == [c.name for c in verify_receipt(BASE).checks]
    assert verdict.signature.status == "not-checked" and verdict.signature.signer is None
    forged = SIGNED.with_signature(dataclasses.replace(SIG, value=flip_last_byte(SIG.value)))
    assert verify_receipt(forged).signature.status == "not-checked"


def test_old_unsigned_vectors_verify_exactly_as_before() -> None:
    cases = sorted(VECTORS.glob("*.json"))
    assert cases, "no receipt vectors"
    for path in cases:
        case = json.loads(path.read_text())
        before = verify_receipt(json.dumps(case["receipt"]))
        after = verify_receipt(json.dumps(case["receipt"]), trust=TRUST)
        assert (after.status, after.failed, after.checks) == (before.status, before.failed, before.checks), path.stem
        assert after.failed == case["want_error"]
        # "absent" once the receipt parsed; a file that is not a receipt cannot say whether it was signed.
        want = "not-checked" if case["want_error"] == "format" else "absent"
        assert after.signature.status == before.signature.status == want, path.stem


def test_require_signature() -> None:
    verdict = verify_receipt(BASE, trust=TRUST, require_signature=True)
    assert verdict.status == "invalid" and not verdict.ok and verdict.failed == "signature"
    assert verdict.signature.status == "signature-missing"
    assert verify_receipt(SIGNED, trust=TRUST, require_signature=True).status == "unanchored"
    with pytest.raises(ValueError, match="trust store"):
        verify_receipt(SIGNED, require_signature=True)


def _sig_obj(**change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(SIGNED.to_obj())
    obj["signature"].update(change)
    return obj


@pytest.mark.parametrize(
    ("desc", "mutate", "schema_can_tell"),
    [
        ("unknown field", lambda o: o["signature"].update(note="x"), True),
        ("missing certificates", lambda o: o["signature"].pop("certificates"), True),
        ("null signature", lambda o: o.update(signature=None), True),
        ("upper-case contract", lambda o: o["signature"].update(contract="0x" + "AB" * 20), True),
        ("chain id zero", lambda o: o["signature"].update(chain_id=0), True),
        ("chain id as string", lambda o: o["signature"].update(chain_id="31337"), True),
        ("chain id as bool", lambda o: o["signature"].update(chain_id=True), True),
        ("alg empty", lambda o: o["signature"].update(alg=""), True),
        ("value without padding", lambda o: o["signature"].update(value="AAAAAA"), True),
        ("value url-safe alphabet", lambda o: o["signature"].update(value="-_" + o["signature"]["value"][2:]), True),
        ("value with a line break", lambda o: o["signature"].update(value=o["signature"]["value"][:8] + "\n"
                                                                          + o["signature"]["value"][8:]), True),
        ("certificates empty", lambda o: o["signature"].update(certificates=[]), True),
        ("certificates not a list", lambda o: o["signature"].update(certificates=o["signature"]["certificates"][0]),
         True),
        ("five certificates", lambda o: o["signature"].update(certificates=o["signature"]["certificates"] * 3), True),
        # "AB==" decodes to one byte with non-zero pad bits: only a decoder can tell ("AA==" is canonical).
        ("non-canonical pad bits", lambda o: o["signature"].update(value="AB=="), False),
    ],
)
def test_tampered_signature_section_shape_is_a_format_failure(desc: str, mutate: Callable[[dict[str, Any]], Any],
                                                             schema_can_tell: bool) -> None:
    obj = copy.deepcopy(SIGNED.to_obj())
    mutate(obj)
    verdict = verify_receipt(json.dumps(obj), trust=TRUST)
    assert verdict.failed == "format" and verdict.status == "invalid", desc
    assert bool(list(SCHEMA.iter_errors(obj))) == schema_can_tell, desc


def test_tampered_signature_section_values_fail_the_signature_check() -> None:
    other_value = sign(head=head_at(HEAD.sealed_at, seq=8)).value
    cases = {
        "signature-invalid": [
            _sig_obj(chain_id=1),
            _sig_obj(contract="0x" + "cd" * 20),
            _sig_obj(value=base64.b64encode(other_value).decode()),
        ],
        "certificate-hospital-mismatch": [
            _sig_obj(certificates=[base64.b64encode(c).decode() for c in PKI.hospital("gz-002").chain]),
        ],
        "certificate-untrusted": [_sig_obj(certificates=[SIGNED.to_obj()["signature"]["certificates"][0]])],
        "signature-algorithm": [_sig_obj(alg="ES384")],
    }
    for want, objs in cases.items():
        for obj in objs:
            verdict = verify_receipt(obj, trust=TRUST)
            assert (verdict.failed, verdict.signature.status) == ("signature", want)
            assert not list(SCHEMA.iter_errors(obj))  # well-formed: only a verifier can tell


@pytest.mark.parametrize(("field", "value"), [("seq", 8), ("size", 8), ("sealed_at", "2024-05-01T02:06:00Z")])
def test_signature_binds_what_the_proof_does_not(field: str, value: Any) -> None:
    """The inclusion proof does not bind seq or sealed_at, and fits several sizes (docs/receipt.md §11); the
    signed head binds all three, so changing them passes every Merkle check and fails the signature."""
    obj = copy.deepcopy(SIGNED.to_obj())
    obj["batch"][field] = value
    assert verify_receipt(obj).status == "unanchored"  # unsigned view: the proof still holds
    verdict = verify_receipt(obj, trust=TRUST)
    assert (verdict.failed, verdict.signature.status) == ("signature", "signature-invalid")


def test_signature_must_match_the_anchor() -> None:
    wrong_chain = SIGNED.with_signature(sign(chain_id=1)).with_anchor(ANCHOR)
    wrong_registry = SIGNED.with_signature(sign(contract="0x" + "cd" * 20)).with_anchor(ANCHOR)
    for receipt in (wrong_chain, wrong_registry):
        verdict = verify_receipt(receipt, trust=TRUST)
        assert (verdict.failed, verdict.signature.status) == ("signature", "signature-anchor-mismatch")


SIGNATURE_VECTORS = sorted((ROOT_DIR / "tests" / "vectors" / "signature").glob("*.json"))
SIGNATURE_CASES = [json.loads(p.read_text()) for p in SIGNATURE_VECTORS]


#: Reasons that need the anchoring block (``mrledger.anchoring.verify.verify_on_chain``), so no offline vector or
#: receipt can produce them: ``signature-time`` is tested against a real chain in tests/service/test_signing_time.py.
ON_CHAIN_REASONS = {"signature-time"}


def test_signature_vectors_exist_and_cover_every_reason() -> None:
    assert len(SIGNATURE_CASES) >= 20
    assert set(SIGNATURE_REASONS) - ON_CHAIN_REASONS <= {c["want_signature"] for c in SIGNATURE_CASES}


@pytest.mark.parametrize("case", SIGNATURE_CASES, ids=[c["desc"] for c in SIGNATURE_CASES])
def test_signature_vector(case: dict[str, Any]) -> None:
    """Written by scripts/gen_vectors.py from tests/pki.py (deterministic keys and signatures)."""
    t = case["trust"]
    trust = TrustStore.from_pem([r.encode() for r in t["roots"]], [c.encode() for c in t["crls"]],
                                [i.encode() for i in t["intermediates"]])
    verdict = verify_receipt(json.dumps(case["receipt"]), trust=trust, require_signature=case["require_signature"])
    assert (verdict.failed, verdict.signature.status) == (case["want_error"], case["want_signature"]), verdict.to_obj()
    assert verdict.ok == (case["want_error"] is None)
    assert bool(list(SCHEMA.iter_errors(case["receipt"]))) == (case["want_error"] == "format")


def _failing_receipts() -> list[tuple[str, Receipt, TrustStore, bool]]:
    """One receipt per reason: (reason, receipt, trust, require_signature)."""
    def signed_by(leaf: Leaf) -> Receipt:
        return BASE.with_signature(sign(leaf))

    revoked_trust = PKI.trust([PKI.intermediate.crl([LEAF.serial])])
    return [
        ("signature-malformed", BASE.with_signature(dataclasses.replace(SIG, certificates=(b"junk",))), TRUST, False),
        ("signature-algorithm", BASE.with_signature(dataclasses.replace(SIG, alg="RS256")), TRUST, False),
        ("signature-invalid", BASE.with_signature(dataclasses.replace(SIG, value=flip_last_byte(SIG.value))), TRUST,
         False),
        ("certificate-untrusted", signed_by(OTHER_PKI.hospital(HID)), TRUST, False),
        ("certificate-key-usage", signed_by(PKI.hospital(HID, key_label="ku", usage={"key_agreement": True})), TRUST,
         False),
        ("certificate-expired",
         signed_by(PKI.hospital(HID, key_label="exp", window=(utc(2022, 1, 1), utc(2023, 1, 1)))), TRUST, False),
        ("certificate-revoked", SIGNED, revoked_trust, False),
        ("certificate-hospital-mismatch", signed_by(PKI.hospital("gz-002")), TRUST, False),
        ("signature-anchor-mismatch", BASE.with_signature(sign(chain_id=5)).with_anchor(ANCHOR), TRUST, False),
        ("signature-missing", BASE.with_anchor(ANCHOR), TRUST, True),
    ]


def test_every_reason_is_produced_and_none_is_authentic() -> None:
    cases = _failing_receipts()
    assert {c[0] for c in cases} == set(SIGNATURE_REASONS) - ON_CHAIN_REASONS
    for want, receipt, trust, required in cases:
        verdict = verify_receipt(receipt.to_json(), trust=trust, require_signature=required)
        assert verdict.status == "invalid" and not verdict.ok, want
        assert verdict.failed == "signature" and verdict.signature.status == want, want
        assert verdict.checks[-1].detail.startswith(want + ": "), verdict.checks[-1]
        assert verdict.signature.signer is None  # an unverified certificate is not shown as the signer
        assert verdict.to_obj()["signature"]["status"] == want


def test_a_remembered_good_signature_vouches_for_nothing_else() -> None:
    """The memo of passed checks (one ECDSA check per batch) is keyed by the exact signature, certificate
    and signed bytes: after the good one, a flipped value or another head still fails."""
    trust = PKI.trust()
    assert reason(HEAD, SIG, trust) is None and reason(HEAD, SIG, trust) is None
    flipped = dataclasses.replace(SIG, value=SIG.value[:-1] + bytes([SIG.value[-1] ^ 1]))
    assert reason(HEAD, flipped, trust) in ("signature-invalid", "signature-malformed")
    other = dataclasses.replace(HEAD, seq=HEAD.seq + 1)
    assert reason(other, SIG, trust) == "signature-invalid"
