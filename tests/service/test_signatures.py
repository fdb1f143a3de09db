"""Hospital signatures end to end in the service: sealed with the hospital's current key, carried by the
receipt endpoint, checked by ``POST /v1/verify`` for receipts and for records rebuilt from the database,
with every failure a ``tampered`` verdict naming its reason. Certificates come from tests/pki.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from sqlalchemy import text

from mrledger.http.schemas import VerifyOut
from mrledger.ledger import BatchHead, BatchSignature, SignatureError, TrustStore, sign_batch, verify_batch_signature
from mrledger.node.background import Sealer
from mrledger.node.pki import configure
from mrledger.node.settings import Settings
from mrledger.service.pki import BatchSigning, KeyInfo, NoSigningKeyError, PkiError, SigningKeys, TrustFiles
from tests.harness import Api
from tests.http.test_results import record, submit
from tests.http.test_verify import anchored_receipt, verify
from tests.pki import Leaf, Pki, key_pem, pem

CHAIN_ID, CONTRACT = 31337, "0x" + "cd" * 20
#: Certificates valid around the machine's clock (the store seals at the real time in these tests).
WINDOW = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2034, 1, 1, tzinfo=UTC))
PKI = Pki("api signatures")
GZ = PKI.hospital("gz-001", window=WINDOW)
QD = PKI.hospital("qd-002", window=WINDOW)
VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors" / "signature").glob("*.json"))


def signer(leaf: Leaf, chain_id: int = CHAIN_ID, contract: str = CONTRACT) -> Callable[[BatchHead], BatchSignature]:
    return lambda head: sign_batch(head, chain_id, contract, leaf.key, leaf.chain)


def seal_signed(api: Api, leaf: Leaf, hospital: str = "gz-001", **kw: Any) -> None:
    assert api.ledger.store.seal(hospital, 100, sign=signer(leaf, **kw)) is not None


def trusting(api: Api, trust: TrustStore, require: bool = True) -> None:
    api.rebuild(trust=trust, require_signatures=require)


def failed(out: dict[str, Any]) -> tuple[str, str, str | None, str]:
    check = next(c for c in out["checks"] if not c["ok"])
    return out["verdict"], out["failed_check"], out["signature"]["status"], check["detail"]


def test_signed_receipt_verifies_and_names_the_signer(api: Api) -> None:
    trusting(api, PKI.trust())
    assert submit(api, record(1)).status_code == 202
    seal_signed(api, GZ)
    out = verify(api, {"receipt": api.ledger.store.receipt("gz-001", "R1").to_obj()})  # type: ignore[union-attr]
    VerifyOut.model_validate(out)  # the documented response schema, signature object included
    assert out["verdict"] == "pending" and out["failed_check"] == "anchor-confirmed"  # not anchored: no chain here
    sig = out["signature"]
    assert sig["status"] == "valid" and sig["alg"] == "ES256"
    assert sig["signer"]["hospital_id"] == "gz-001" and sig["signer"]["serial"] == f"{GZ.serial:x}"
    assert "gz-001 batch signing" in sig["signer"]["subject"]
    assert next(c for c in out["checks"] if c["name"] == "signature")["ok"]


def _forge(receipt: dict[str, Any]) -> dict[str, Any]:
    value = bytearray(base64.b64decode(receipt["signature"]["value"]))
    value[-1] ^= 1
    receipt["signature"]["value"] = base64.b64encode(bytes(value)).decode()
    return receipt


@pytest.mark.parametrize(("case", "reason"), [
    ("forged", "signature-invalid"),
    ("other-hospital", "certificate-hospital-mismatch"),
    ("revoked", "certificate-revoked"),
    ("untrusted", "certificate-untrusted"),
    ("unsigned", "signature-missing"),
])
def test_bad_signatures_are_tampered_with_their_reason(api: Api, case: str, reason: str) -> None:
    trust = PKI.trust([PKI.intermediate.crl([GZ.serial])]) if case == "revoked" else \
        Pki("somebody else's CA").trust() if case == "untrusted" else PKI.trust()
    trusting(api, trust)
    if case != "unsigned":
        assert submit(api, record(1)).status_code == 202
    if case == "unsigned":  # sealed unsigned after the hospital's batches were signed (batch 1 is signed)
        assert submit(api, record(0)).status_code == 202
        seal_signed(api, GZ)
        assert submit(api, record(1)).status_code == 202
        api.ledger.store.seal("gz-001", 100)
    else:
        seal_signed(api, QD if case == "other-hospital" else GZ)
    receipt = api.ledger.store.receipt("gz-001", "R1").to_obj()  # type: ignore[union-attr]
    out = verify(api, {"receipt": _forge(receipt) if case == "forged" else receipt})
    VerifyOut.model_validate(out)
    verdict, check, status, detail = failed(out)
    assert (verdict, check, status) == ("tampered", "signature", reason)
    assert detail.startswith(reason)  # the reason is visible in the check, not only in a status code
    assert out["signature"]["signer"] is None  # a failed signature names nobody
    assert out["recognition"]["decision"] == "reorder"


def test_receipts_from_before_signing_keep_verifying_and_a_stripped_signature_does_not(api: Api) -> None:
    """Issue 8: old receipts stay verifiable. Batch 1 was sealed before the node signed; batch 2 after. With
    signatures required, batch 1's unsigned receipt still verifies; batch 2's with its signature removed
    is tampered (signature-missing), and so is batch 3 once its stored signature is emptied in the
    database (a later batch than the first signed one)."""
    trusting(api, PKI.trust())
    assert submit(api, record(1)).status_code == 202
    api.ledger.store.seal("gz-001", 100)  # before signing was switched on
    assert submit(api, record(2)).status_code == 202
    seal_signed(api, GZ)
    old = verify(api, {"receipt": api.ledger.store.receipt("gz-001", "R1").to_obj()})  # type: ignore[union-attr]
    assert old["verdict"] == "pending" and old["signature"]["status"] == "absent", old  # no chain here
    stripped = api.ledger.store.receipt("gz-001", "R2").to_obj()  # type: ignore[union-attr]
    del stripped["signature"]
    assert failed(verify(api, {"receipt": stripped}))[:3] == ("tampered", "signature", "signature-missing")
    assert submit(api, record(3)).status_code == 202
    seal_signed(api, GZ)
    with api.ledger.store.engine.begin() as conn:  # the database's own record of batch 3 emptied
        conn.execute(text("UPDATE batches SET signature = NULL WHERE hospital_id = 'gz-001' AND seq = 3"))
    out = verify(api, {"hospital_id": "gz-001", "result_id": "R3", "record": record(3)}, "doctor")
    assert failed(out)[:3] == ("tampered", "signature", "signature-missing"), out


def test_without_trust_a_signature_is_reported_not_checked(api: Api) -> None:
    assert submit(api, record(1)).status_code == 202
    seal_signed(api, QD)  # would fail if checked: nobody trusts anything here, so nothing is claimed
    out = verify(api, {"receipt": api.ledger.store.receipt("gz-001", "R1").to_obj()})  # type: ignore[union-attr]
    assert out["verdict"] == "pending" and out["signature"] == {"status": "not-checked", "alg": "ES256",
                                                                 "signer": None}


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_signature_vectors_through_the_api(api: Api, path: Path) -> None:
    case = json.loads(path.read_text())
    pems = {k: [v.encode() for v in vs] for k, vs in case["trust"].items()}
    trusting(api, TrustStore.from_pem(pems["roots"], pems["crls"], pems["intermediates"]), case["require_signature"])
    got = api.client.post("/v1/verify", json={"receipt": case["receipt"]})
    if case["want_error"] == "format":
        assert got.status_code == 422 and got.json()["type"] == "urn:mrledger:problem:not-a-receipt", got.text
        return
    out = got.json()
    VerifyOut.model_validate(out)
    assert out["signature"]["status"] == case["want_signature"], out
    if case["want_error"] == "signature":
        assert (out["verdict"], out["failed_check"]) == ("tampered", "signature")
    else:  # genuine: pending without an anchor, unknown with one (this node has no chain to check it on)
        assert out["verdict"] in ("pending", "unknown") and out["failed_check"] != "signature"
        assert out["signature"]["signer"]["hospital_id"] == case["receipt"]["batch"]["hospital_id"]


def test_vectors_are_present() -> None:
    assert len(VECTORS) >= 20, "tests/vectors/signature is empty"


def test_by_record_checks_the_stored_signature(api: Api) -> None:
    """The record form rebuilds the receipt from the database: a batch row whose signature was swapped for
    another batch's (or rewritten) is caught without the chain."""
    trusting(api, PKI.trust())
    for i in (1, 2):
        assert submit(api, record(i)).status_code == 202
        seal_signed(api, GZ)
    body = {"hospital_id": "gz-001", "result_id": "R1", "record": record(1)}
    out = verify(api, body, "doctor")
    assert out["verdict"] == "pending" and out["signature"]["status"] == "valid"
    assert [c["name"] for c in out["checks"]][-3:] == ["inclusion", "signature", "anchor-confirmed"]
    with api.ledger.store.engine.begin() as c:
        c.execute(text("UPDATE batches SET signature = (SELECT signature FROM batches WHERE seq = 2) "
                       "WHERE hospital_id = 'gz-001' AND seq = 1"))
    assert failed(verify(api, body, "doctor"))[:3] == ("tampered", "signature", "signature-invalid")


@pytest.mark.anvil
def test_receipt_endpoint_carries_the_signature_and_verifies_authentic(chain_api: Api) -> None:
    api = chain_api
    chain = api.ledger.chain
    assert chain is not None
    trusting(api, PKI.trust())
    assert submit(api, record(1)).status_code == 202
    seal_signed(api, GZ, chain_id=chain.chain_id, contract=chain.contract)
    api.anchor_all()
    receipt = anchored_receipt(api)
    stored = api.ledger.store.receipt("gz-001", "R1")
    assert stored is not None and stored.signature is not None
    assert receipt["signature"] == stored.signature.to_obj()  # byte for byte through the endpoint
    out = verify(api, {"receipt": receipt})
    assert out["verdict"] == "authentic", out["checks"]
    assert out["signature"]["status"] == "valid" and out["signature"]["signer"]["hospital_id"] == "gz-001"
    # signed for another registry than the one it is anchored in: the signature does not carry over
    seal_other = {**receipt, "signature": BatchSignature.from_obj(receipt["signature"]).to_obj()}
    seal_other["signature"]["contract"] = CONTRACT
    assert failed(verify(api, {"receipt": seal_other}))[:3] == ("tampered", "signature", "signature-anchor-mismatch")


# -- the node's signing machinery: key files, rotation, the sealer ---------------------------------------


def _install(keys_dir: Path, leaf: Leaf, name: str, hospital: str = "gz-001") -> None:
    folder = keys_dir / hospital
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.key.pem").write_bytes(key_pem(leaf.key))
    (folder / f"{name}.key.pem").chmod(0o600)  # a key file others may read is refused (store/keyfiles.py)
    (folder / f"{name}.crt.pem").write_bytes(pem(*leaf.certs))


def _trust_files(tmp_path: Path) -> TrustFiles:
    (tmp_path / "root.pem").write_bytes(PKI.root.pem)
    (tmp_path / "intermediate.pem").write_bytes(PKI.intermediate.pem)
    return TrustFiles((tmp_path / "root.pem",), (), (tmp_path / "intermediate.pem",))


def test_rotation_newest_certificate_signs_and_old_batches_keep_verifying(api: Api, tmp_path: Path) -> None:
    old = PKI.hospital("gz-001", key_label="gz-001 2024", window=(WINDOW[0], datetime(2026, 1, 1, tzinfo=UTC)))
    new = PKI.hospital("gz-001", key_label="gz-001 2025", window=(datetime(2025, 6, 1, tzinfo=UTC), WINDOW[1]))
    trust = _trust_files(tmp_path)
    trusting(api, trust.store)
    signing = BatchSigning(SigningKeys(tmp_path / "keys"), trust, stats=api.ledger.sign_stats)
    sign = signing.for_chain(CHAIN_ID, CONTRACT)
    store = api.ledger.store
    _install(tmp_path / "keys", old, "2024")
    sealed = [datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)]
    assert submit(api, record(1)).status_code == 202
    store.seal("gz-001", 100, now=sealed[0], sign=sign)
    _install(tmp_path / "keys", new, "2025")  # rotation: a new pair while the node runs
    for i, when in ((2, sealed[1]), (3, sealed[2])):  # both valid in July 2025: the newer one signs
        assert submit(api, record(i)).status_code == 202
        store.seal("gz-001", 100, now=when, sign=sign)
    serials = []
    for i in (1, 2, 3):
        out = verify(api, {"receipt": store.receipt("gz-001", f"R{i}").to_obj()})  # type: ignore[union-attr]
        assert out["signature"]["status"] == "valid", out["checks"]
        serials.append(out["signature"]["signer"]["serial"])
    assert serials == [f"{old.serial:x}", f"{new.serial:x}", f"{new.serial:x}"]
    samples = api.client.get("/metrics").text  # what the sealer spent signing, for bench_api.py
    assert "mrledger_batch_sign_seconds_count 3.0" in samples


def test_a_certificate_the_node_does_not_trust_never_seals(api: Api, tmp_path: Path) -> None:
    """Signing checks the fresh signature against the node's own trust: a revoked (or expired, untrusted)
    certificate would make receipts every doctor refuses, so the batch is not sealed at all."""
    trust = _trust_files(tmp_path)
    (tmp_path / "crl.pem").write_bytes(PKI.intermediate.crl([GZ.serial]))
    revoked = TrustFiles(trust.anchors, (tmp_path / "crl.pem",), trust.intermediates)
    _install(tmp_path / "keys", GZ, "gz")
    sign = BatchSigning(SigningKeys(tmp_path / "keys"), revoked).for_chain(CHAIN_ID, CONTRACT)
    assert submit(api, record(1)).status_code == 202
    with pytest.raises(Exception, match="certificate-revoked"):
        api.ledger.store.seal("gz-001", 100, sign=sign)
    with pytest.raises(NoSigningKeyError, match="qd-002"):
        assert submit(api, record(1, "qd-002"), "qd-002").status_code == 202
        api.ledger.store.seal("qd-002", 100, sign=sign)
    assert api.ledger.store.pending_count() == 2 and api.ledger.store.batches("gz-001") == []


class _Chain:
    """What the sealer reads of the chain context when it has no admin key: the deployment it signs for."""

    chain_id, contract, admin = CHAIN_ID, CONTRACT, None


def test_sealer_with_the_dev_pki_signs_every_hospital(api: Api, tmp_path: Path, caplog: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data", batch_interval=0.001)
    pki = configure(settings, seal=True)
    assert pki.dev is not None and pki.signing is not None and pki.require_signatures
    assert pki.trust is not None
    trusting(api, pki.trust.store)
    sealer = Sealer(api.ledger.store, _Chain(), settings, pki.signing)  # type: ignore[arg-type]
    for hospital in ("gz-001", "qd-002"):
        assert submit(api, record(1, hospital), hospital).status_code == 202
    time.sleep(0.01)  # older than the 1 ms batch interval (a fast submit otherwise leaves the last one unsealed)
    sealer.step()  # no key yet for either hospital: the dev CA issues them on demand
    assert api.ledger.store.pending_count() == 0
    for hospital in ("gz-001", "qd-002"):
        keys = list((tmp_path / "data" / "pki" / "hospitals" / hospital).glob("*.key.pem"))
        assert len(keys) == 1 and keys[0].stat().st_mode & 0o777 == 0o600
        out = verify(api, {"receipt": api.ledger.store.receipt(hospital, "R1").to_obj()})  # type: ignore[union-attr]
        assert out["signature"]["status"] == "valid" and out["signature"]["signer"]["hospital_id"] == hospital
    # production-like: no dev CA, a hospital without a key waits (unsealed) and the others seal
    prod = BatchSigning(pki.signing.keys, pki.trust)
    assert submit(api, record(2, "qd-002"), "qd-002").status_code == 202
    for p in (tmp_path / "data" / "pki" / "hospitals" / "qd-002").iterdir():
        p.unlink()
    assert submit(api, record(2), "gz-001").status_code == 202
    time.sleep(0.01)
    Sealer(api.ledger.store, _Chain(), settings, prod).step()  # type: ignore[arg-type]
    assert api.ledger.store.pending_count("qd-002") == 1 and api.ledger.store.pending_count("gz-001") == 0
    assert "cannot sign qd-002's batch" in caplog.text


# -- configuration: the HSM hook and refusals -------------------------------------------------------------


class TokenSigner:
    """Stands in for a PKCS#11 token: the "token" returns raw r‖s (as ``CKM_ECDSA`` does) over a digest the
    adapter computed, and the adapter converts it to the DER value ``mrl-batch-sig/1`` stores."""

    algorithm = "ES256"

    def __init__(self, leaf: Leaf) -> None:
        self._token_key, self.certificates = leaf.key, leaf.chain

    def _token_sign(self, digest: bytes) -> bytes:  # what the HSM would do with its key inside
        r, s = decode_dss_signature(self._token_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def sign(self, data: bytes) -> bytes:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(data)
        raw = self._token_sign(digest.finalize())
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


class TokenKeys(SigningKeys):
    def keys(self, hospital_id: str) -> list[KeyInfo]:
        return [KeyInfo.of(hospital_id, "token-slot-1", TokenSigner(GZ))] if hospital_id == "gz-001" else []


def make_keys(settings: Settings) -> SigningKeys:
    """The ``MRL_SIGNER_FACTORY`` of the test below."""
    return TokenKeys(settings.data_dir / "unused")


def _production(tmp_path: Path, **kw: Any) -> Settings:
    trust = _trust_files(tmp_path)
    return Settings(data_dir=tmp_path / "data", trust_anchors=list(trust.anchors),
                    trust_intermediates=list(trust.intermediates), **kw)


def test_signer_factory_plugs_in_a_key_that_is_not_a_file(api: Api, tmp_path: Path) -> None:
    pki = configure(_production(tmp_path, signer_factory=f"{__name__}:make_keys"), seal=True)
    assert pki.signing is not None and isinstance(pki.signing.keys, TokenKeys) and pki.dev is None
    assert pki.trust is not None and pki.require_signatures
    trusting(api, pki.trust.store)
    assert submit(api, record(1)).status_code == 202
    api.ledger.store.seal("gz-001", 100, sign=pki.signing.for_chain(CHAIN_ID, CONTRACT))
    out = verify(api, {"receipt": api.ledger.store.receipt("gz-001", "R1").to_obj()})  # type: ignore[union-attr]
    assert out["signature"]["status"] == "valid" and out["signature"]["signer"]["serial"] == f"{GZ.serial:x}"
    assert not (tmp_path / "data" / "pki").exists()  # a production trust configuration: no dev CA


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "MRL_SIGNING_KEYS_DIR is not"),
    ({"signer_factory": "no.such.module:make"}, "MRL_SIGNER_FACTORY"),
    ({"trust_anchors": [], "trust_crls": [Path("/dev/null")]}, "need MRL_TRUST_ANCHORS"),
    ({"trust_anchors": [], "trust_intermediates": [], "sign_batches": False, "require_signatures": True},
     "MRL_REQUIRE_SIGNATURES"),
    ({"trust_anchors": [Path("/nonexistent/root.pem")]}, "cannot read trust anchor file /nonexistent/root.pem"),
    ({"trust_crls": [Path("/dev/null")]}, "trust configuration"),
])
def test_configurations_that_would_sign_or_check_nothing_are_refused(tmp_path: Path, settings: dict[str, Any],
                                                                     message: str) -> None:
    with pytest.raises(PkiError, match=message):
        configure(_production(tmp_path).model_copy(update=settings), seal=True)
    assert not (tmp_path / "data" / "pki").exists()


def test_crl_files_are_reloaded_without_a_restart(tmp_path: Path, caplog: Any) -> None:
    trust = _trust_files(tmp_path)
    crl = tmp_path / "issuing.crl"
    crl.write_bytes(PKI.intermediate.crl([], number=1))
    files = TrustFiles(trust.anchors, (crl,), trust.intermediates)
    head = BatchHead("gz-001", 1, 1, bytes(32), datetime(2025, 3, 1, tzinfo=UTC))
    sig = signer(GZ)(head)
    verify_batch_signature(head, sig, files.store)  # valid, and now cached
    now = datetime(2025, 1, 2, tzinfo=UTC)
    crl.write_bytes(PKI.intermediate.crl([GZ.serial], number=2, last_update=datetime(2025, 1, 2, tzinfo=UTC)))
    assert files.refresh(now, force=True)
    with pytest.raises(SignatureError, match="certificate-revoked"):  # the cached validation was dropped
        verify_batch_signature(head, sig, files.store)
    crl.write_bytes(b"truncated download")
    assert not files.refresh(now, force=True) and "previous CRLs stay in force" in caplog.text
    with pytest.raises(SignatureError, match="certificate-revoked"):
        verify_batch_signature(head, sig, files.store)
    files.refresh(datetime(2030, 1, 1, tzinfo=UTC), force=True)
    assert "stale CRL" in caplog.text
