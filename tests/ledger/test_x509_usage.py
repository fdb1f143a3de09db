"""Extended key usage and name constraints of hospital signing chains (issue 14, finding 10;
src/mrledger/ledger/_x509_usage.py, docs/signatures.md §1).

Before: a serverAuth-only or codeSigning-only certificate signed batches, name constraints on a root were
ignored and on an intermediate refused as an unknown critical extension — so any CA a deployment trusts could sign
for any hospital. Where cryptography's own verifier (``x509.verification.PolicyBuilder``) applies — ECDSA chains,
EKU, DNS and IP name constraints; it does not process URI constraints — it is the differential oracle: both must
accept or both refuse.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509 import verification as oracle
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mrledger.ledger import BatchHead, SignatureError, TrustStore, sign_batch, verify_batch_signature
from mrledger.ledger.signing import BATCH_SIGNING_EKU, EKU_REQUIRED_FROM, signs_batches
from tests.pki import CA, HOSPITAL_URN, Leaf, root

HID = "gz-001"
CHAIN_ID, CONTRACT = 31337, "0x" + "ab" * 20
#: After EKU_REQUIRED_FROM, so the grace for certificates issued before it does not apply.
NEW_WINDOW = (datetime(2027, 2, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC))
NEW_AT = datetime(2027, 6, 1, tzinfo=UTC)
OLD_AT = datetime(2024, 5, 1, tzinfo=UTC)  # inside tests/pki.py's default leaf window (2024-2026)

BATCH = x509.ExtendedKeyUsage([BATCH_SIGNING_EKU])
SERVER = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
CODE = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])
ANY = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
BOTH = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, BATCH_SIGNING_EKU])


def head(hospital_id: str = HID, at: datetime = NEW_AT) -> BatchHead:
    return BatchHead(hospital_id=hospital_id, seq=1, size=1, root=bytes(32), sealed_at=at)


def outcome(leaf: Leaf, anchor: CA, hospital_id: str = HID, at: datetime = NEW_AT,
            trust: TrustStore | None = None) -> str | None:
    """Our verdict on a batch signed by ``leaf``: None (valid) or the failure reason."""
    h = head(hospital_id, at)
    signature = sign_batch(h, CHAIN_ID, CONTRACT, leaf.key, leaf.chain)  # type: ignore[arg-type]
    try:
        verify_batch_signature(h, signature, trust or TrustStore([anchor.cert]))
    except SignatureError as exc:
        return exc.reason
    return None


def _eku(ca: bool) -> Any:
    def check(policy: Any, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None) -> None:
        if ext is None:
            if not ca:
                raise ValueError("a batch signer needs the batch-signing EKU")
            return
        if BATCH_SIGNING_EKU not in ext and not (ca and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in ext):
            raise ValueError("EKU does not allow batch signing")
    return check


def oracle_accepts(leaf: Leaf, anchor: CA, at: datetime = NEW_AT) -> bool:
    """cryptography's RFC 5280 path validation with mrledger's EKU rule as its extension policy."""
    ee = oracle.ExtensionPolicy.permit_all().require_present(x509.ExtendedKeyUsage, oracle.Criticality.AGNOSTIC,
                                                           _eku(ca=False))
    ca = oracle.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, oracle.Criticality.AGNOSTIC, _eku(ca=True))
    verifier = (oracle.PolicyBuilder().store(oracle.Store([anchor.cert])).time(at)
                .extension_policies(ca_policy=ca, ee_policy=ee).build_client_verifier())
    try:
        verifier.verify(leaf.cert, list(leaf.certs[1:]))
    except oracle.VerificationError:
        return False
    return True


def chain(*, root_ext: Any = (), ca_ext: Any = (), label: str) -> tuple[CA, CA]:
    r = root(f"{label} root", key_label=f"{label}:root", extra=list(root_ext))
    return r, r.issue_ca(f"{label} issuing CA", key_label=f"{label}:ca", extra=list(ca_ext))


# -- extended key usage -------------------------------------------------------------------------------


LEAF_EKUS = {"batch": BATCH, "server": SERVER, "code": CODE, "any": ANY, "server+batch": BOTH, "none": None}
CA_EKUS = {"none": None, "batch": BATCH, "any": ANY, "server": SERVER}


@pytest.mark.parametrize("ca_eku", CA_EKUS, ids=[f"ca-{k}" for k in CA_EKUS])
@pytest.mark.parametrize("leaf_eku", LEAF_EKUS, ids=[f"leaf-{k}" for k in LEAF_EKUS])
def test_eku_rules_agree_with_cryptographys_verifier(leaf_eku: str, ca_eku: str) -> None:
    r, ca = chain(ca_ext=[] if CA_EKUS[ca_eku] is None else [(CA_EKUS[ca_eku], False)], label=f"eku-{ca_eku}")
    ext = LEAF_EKUS[leaf_eku]
    leaf = ca.hospital(HID, window=NEW_WINDOW, extra=[] if ext is None else [(ext, False)])
    ours = outcome(leaf, r)
    want_ok = leaf_eku in ("batch", "server+batch") and ca_eku in ("none", "batch", "any")
    assert (ours is None) == want_ok, ours
    assert (ours is None) == oracle_accepts(leaf, r)  # the oracle agrees, case by case
    if ours is not None:
        assert ours == "certificate-key-usage"


@pytest.mark.parametrize("ext", [SERVER, CODE, ANY], ids=["serverAuth", "codeSigning", "anyExtendedKeyUsage"])
def test_a_certificate_for_another_purpose_never_signs_batches_whatever_its_date(ext: x509.ExtendedKeyUsage) -> None:
    r, ca = chain(label="purpose")
    leaf = ca.hospital(HID, extra=[(ext, False)])  # issued 2024: the grace for EKU-less certificates is no help
    assert outcome(leaf, r, at=OLD_AT) == "certificate-key-usage"


def test_certificates_issued_before_the_eku_existed_keep_verifying() -> None:
    """The dev PKI (and a region's first CA) issued hospital certificates without any EKU before this change:
    their batches keep verifying; a certificate without it issued from EKU_REQUIRED_FROM on does not."""
    r, ca = chain(label="legacy")
    legacy = ca.hospital(HID)  # notBefore 2024-01-01, no extendedKeyUsage
    assert not signs_batches(legacy.cert) and legacy.cert.not_valid_before_utc < EKU_REQUIRED_FROM
    assert outcome(legacy, r, at=OLD_AT) is None
    late = ca.hospital(HID, window=NEW_WINDOW)
    assert outcome(late, r) == "certificate-key-usage"
    assert outcome(ca.hospital(HID, window=NEW_WINDOW, extra=[(BATCH, False)]), r) is None
    # A deployment can end the grace earlier (TrustStore's eku_required_from).
    strict = TrustStore([r.cert], eku_required_from=datetime(2020, 1, 1, tzinfo=UTC))
    assert outcome(legacy, r, at=OLD_AT, trust=strict) == "certificate-key-usage"


def test_a_root_for_another_purpose_certifies_no_batch_signer() -> None:
    r, ca = chain(root_ext=[(SERVER, False)], label="tls-root")
    assert outcome(ca.hospital(HID, window=NEW_WINDOW, extra=[(BATCH, False)]), r) == "certificate-key-usage"


# -- name constraints ---------------------------------------------------------------------------------


def uris(*values: str) -> list[x509.GeneralName]:
    return [x509.UniformResourceIdentifier(v) for v in values]


def constraints(permitted: list[x509.GeneralName] | None = None,
                excluded: list[x509.GeneralName] | None = None) -> tuple[x509.NameConstraints, bool]:
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded), True


def signer(ca: CA, hospital_id: str, **options: Any) -> Leaf:
    return ca.hospital(hospital_id, window=NEW_WINDOW, key_label=f"nc:{hospital_id}", extra=[(BATCH, False)],
                       **options)


@pytest.mark.parametrize("on", ["root", "intermediate"])
def test_a_constrained_ca_signs_only_for_its_hospitals(on: str) -> None:
    nc = [constraints(uris(HOSPITAL_URN + "gz-"))]
    r, ca = chain(root_ext=nc if on == "root" else (), ca_ext=nc if on == "intermediate" else (), label=f"nc-{on}")
    for hospital_id in ("gz-001", "gz-002"):
        assert outcome(signer(ca, hospital_id), r, hospital_id) is None
    assert outcome(signer(ca, "qd-002"), r, "qd-002") == "certificate-untrusted"


def test_an_exact_hospital_urn_permits_that_hospital_and_no_prefix_of_it() -> None:
    r, ca = chain(ca_ext=[constraints(uris(HOSPITAL_URN + "gz-001"))], label="nc-exact")
    assert outcome(signer(ca, "gz-001"), r) is None
    for other in ("gz-0012", "gz-001.events", "gz-00"):
        assert outcome(signer(ca, other), r, other) == "certificate-untrusted", other
    # Its event stream, too, once the constraint names it (a constraint ending in '.' is a subtree).
    r2, ca2 = chain(ca_ext=[constraints(uris(HOSPITAL_URN + "gz-001", HOSPITAL_URN + "gz-001."))], label="nc-s")
    assert outcome(signer(ca2, "gz-001.events"), r2, "gz-001.events") is None


def test_excluded_subtrees_win() -> None:
    nc = constraints(uris(HOSPITAL_URN), uris(HOSPITAL_URN + "qd-"))
    r, ca = chain(root_ext=[nc], label="nc-excl")
    assert outcome(signer(ca, "gz-001"), r) is None
    assert outcome(signer(ca, "qd-002"), r, "qd-002") == "certificate-untrusted"


def test_a_host_uri_constraint_permits_no_hospital_urn() -> None:
    """RFC 5280 URI constraints name hosts; a URN has none, so it is outside every host subtree."""
    r, ca = chain(ca_ext=[constraints(uris(".hospital.example"))], label="nc-host")
    assert outcome(signer(ca, "gz-001"), r) == "certificate-untrusted"
    ok = signer(ca, "gz-001", uris=[HOSPITAL_URN + "gz-001", "https://signer.gz.hospital.example/"])
    assert outcome(ok, r) == "certificate-untrusted"  # its URN is still outside
    excluded = chain(ca_ext=[constraints(None, uris(".hospital.example"))], label="nc-hostx")
    assert outcome(signer(excluded[1], "gz-001"), excluded[0]) is None  # excluding hosts excludes no URN


def test_directory_name_constraints() -> None:
    permitted = [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gz-001")]))]
    r, ca = chain(ca_ext=[constraints(permitted)], label="nc-dn")
    assert outcome(signer(ca, "gz-001"), r) is None  # tests/pki.py names the leaf O=<hospital id>, CN=…
    assert outcome(signer(ca, "qd-002"), r, "qd-002") == "certificate-untrusted"


@pytest.mark.parametrize(("subtree", "names", "expect_ok"), [
    (x509.DNSName("gz.example"), [x509.DNSName("signer.gz.example")], True),
    (x509.DNSName("gz.example"), [x509.DNSName("signer.qd.example")], False),
    (x509.IPAddress(ipaddress.ip_network("10.1.0.0/16")), [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))], True),
    (x509.IPAddress(ipaddress.ip_network("10.1.0.0/16")), [x509.IPAddress(ipaddress.ip_address("10.2.2.3"))], False),
    (x509.DNSName("gz.example"), [], True),  # a constraint on a form the leaf does not use constrains nothing
], ids=["dns-in", "dns-out", "ip-in", "ip-out", "dns-unused"])
def test_dns_and_ip_constraints_agree_with_cryptographys_verifier(subtree: x509.GeneralName,
                                                                  names: list[x509.GeneralName],
                                                                  expect_ok: bool) -> None:
    label = f"nc-{subtree.value}-{names[0].value if names else 'none'}"
    r, ca = chain(ca_ext=[constraints([subtree])], label=label)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(HOSPITAL_URN + HID), *names])
    leaf = ca.hospital(HID, window=NEW_WINDOW, key_label=label, uris=[], extra=[(BATCH, False), (san, False)])
    assert (outcome(leaf, r) is None) == expect_ok == oracle_accepts(leaf, r)


def test_name_constraints_on_an_intermediate_are_no_longer_an_unknown_critical_extension() -> None:
    """The finding's other half: a critical nameConstraints made a chain untrusted, whatever it permitted."""
    r, ca = chain(ca_ext=[constraints(uris(HOSPITAL_URN))], label="nc-all")
    assert outcome(signer(ca, "gz-001"), r) is None


def test_an_unsupported_name_form_under_its_constraint_is_refused() -> None:
    other = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x03abc")
    r, ca = chain(ca_ext=[constraints([other])], label="nc-other")
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(HOSPITAL_URN + HID), other])
    leaf = ca.hospital(HID, window=NEW_WINDOW, key_label="nc-other", uris=[], extra=[(BATCH, False), (san, False)])
    assert outcome(leaf, r) == "certificate-untrusted"


def test_the_reason_names_the_constraint_and_the_ca() -> None:
    r, ca = chain(ca_ext=[constraints(uris(HOSPITAL_URN + "gz-"))], label="nc-detail")
    h = head("qd-002")
    leaf = signer(ca, "qd-002")
    signature = sign_batch(h, CHAIN_ID, CONTRACT, leaf.key, leaf.chain)  # type: ignore[arg-type]
    with pytest.raises(SignatureError) as exc:
        verify_batch_signature(h, signature, TrustStore([r.cert]))
    assert "urn:mrledger:hospital:qd-002" in str(exc.value) and "nc-detail issuing CA" in str(exc.value)
