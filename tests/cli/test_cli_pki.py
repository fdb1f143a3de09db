"""``mrledger pki`` (the dev CA, keys 0600, rotation) and ``mrledger verify --trust/--crl`` (the hospital's
signature checked offline; exit 0 only for a receipt signed by the hospital through the given CA)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mrledger.cli.main import app
from mrledger.ledger import (
    Anchor,
    BatchHead,
    Receipt,
    sign_batch,
    sign_batch_with,
    verify_batch_signature,
    verify_receipt,
)
from mrledger.service.pki import SigningKeys, TrustFiles
from mrledger.store import Store
from tests.conftest import TEST_KEY
from tests.pki import Pki, pem

runner = CliRunner()
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SIGNATURE_VECTORS = sorted((VECTORS / "signature").glob("*.json"))
SECRET = "correct horse battery staple"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A node's data dir whose database holds two hospitals (as after `mrledger serve` and registrations)."""
    data = tmp_path / "data"
    store = Store.open(f"sqlite:///{data / 'mrledger.db'}", master_key=TEST_KEY)
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    store.register_hospital("qd-002", "Qingdao Municipal Hospital")
    store.engine.dispose()
    return data


def pki(data: Path, *args: str, **env: str) -> Any:
    return runner.invoke(app, ["pki", *args], env={"MRL_DATA_DIR": str(data), **env})


def test_pki_init_creates_a_ca_and_a_key_per_hospital_0600(data_dir: Path) -> None:
    out = pki(data_dir, "init")
    assert out.exit_code == 0, out.output
    ca = data_dir / "pki"
    for secret in ("root.key.pem", "intermediate.key.pem"):
        assert _mode(ca / secret) == 0o600, secret
    keys = {h: list((ca / "hospitals" / h).glob("*.key.pem")) for h in ("gz-001", "qd-002")}
    for hospital, files in keys.items():
        assert len(files) == 1 and _mode(files[0]) == 0o600, hospital
        assert b"-----BEGIN PRIVATE KEY-----" in files[0].read_bytes()
        assert f"{hospital}: issued" in out.output
    assert f"--trust {ca / 'root.crt.pem'}" in out.output
    # the certificates chain to the dev root, name their hospital, and their keys sign
    trust = TrustFiles((ca / "root.crt.pem",), (), (ca / "intermediate.crt.pem",))
    now = datetime.now(UTC)
    current = SigningKeys(ca / "hospitals").current("gz-001", now)
    assert current is not None and current.signer is not None
    head = BatchHead("gz-001", 1, 1, bytes(32), now)
    verify_batch_signature(head, sign_batch_with(head, 31337, "0x" + "ab" * 20, current.signer), trust.store)
    # idempotent: the CA and the valid keys are kept
    again = pki(data_dir, "init")
    assert again.exit_code == 0 and "already" in again.output and "signs with" in again.output
    assert {h: list((ca / "hospitals" / h).glob("*.key.pem")) for h in keys} == keys


def test_pki_issue_rotates_and_refuses_bad_input(data_dir: Path) -> None:
    assert pki(data_dir, "issue", "gz-001").exit_code == 2  # no CA yet: usage error, nothing written
    assert not (data_dir / "pki").exists()
    assert pki(data_dir, "init").exit_code == 0
    keys = SigningKeys(data_dir / "pki" / "hospitals")
    before = keys.current("gz-001", datetime.now(UTC) + timedelta(minutes=10))
    out = pki(data_dir, "issue", "gz-001")
    assert out.exit_code == 0, out.output
    after = keys.current("gz-001", datetime.now(UTC) + timedelta(minutes=10))
    assert before is not None and after is not None and after.serial != before.serial  # the newest signs
    assert f"serial {after.serial}" in out.output
    assert len(keys.keys("gz-001")) == 2  # the old pair stays: its batches keep verifying
    for bad, code in (("sz-999", 1), ("../etc", 2), (".hidden", 2)):
        result = pki(data_dir, "issue", bad)
        assert result.exit_code == code, (bad, result.output)
    assert sorted(p.name for p in (data_dir / "pki" / "hospitals").iterdir()) == ["gz-001", "qd-002"]
    listed = pki(data_dir, "list", "--json")
    rows = json.loads(listed.stdout)["keys"]
    assert [r["current"] for r in rows if r["hospital_id"] == "gz-001"] == [False, True]


def test_pki_passphrase_encrypts_keys_and_is_never_printed(data_dir: Path) -> None:
    out = pki(data_dir, "init", MRL_SIGNING_KEY_PASSPHRASE=SECRET)
    assert out.exit_code == 0, out.output
    for key in (data_dir / "pki").rglob("*.key.pem"):
        assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"), key
    wrong = pki(data_dir, "list", MRL_SIGNING_KEY_PASSPHRASE="wrong")
    assert wrong.exit_code == 0 and "unusable" in wrong.output
    right = pki(data_dir, "list", MRL_SIGNING_KEY_PASSPHRASE=SECRET)
    assert right.output.count("signs now") == 2
    assert SECRET not in out.output + wrong.output + right.output
    issue = pki(data_dir, "issue", "qd-002", MRL_SIGNING_KEY_PASSPHRASE="wrong")  # the CA key does not open
    assert issue.exit_code == 2 and "passphrase" in issue.output


def test_pki_refuses_when_a_production_ca_is_configured(data_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(Pki("production").root.pem)
    out = pki(data_dir, "init", MRL_TRUST_ANCHORS=str(root))
    assert out.exit_code == 2 and "MRL_TRUST_ANCHORS" in out.output
    assert not (data_dir / "pki").exists()


# -- mrledger verify --trust ------------------------------------------------------------------------


def _trust_args(tmp_path: Path, trust: dict[str, list[str]]) -> list[str]:
    args = []
    for kind, option in (("roots", "--trust"), ("intermediates", "--intermediate"), ("crls", "--crl")):
        for i, text in enumerate(trust[kind]):
            path = tmp_path / f"{kind}-{i}.pem"
            path.write_text(text)
            args += [option, str(path)]
    return args


@pytest.mark.parametrize("path", SIGNATURE_VECTORS, ids=lambda p: p.stem)
def test_verify_trust_follows_the_signature_vectors(tmp_path: Path, path: Path) -> None:
    case = json.loads(path.read_text())
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(case["receipt"]))
    args = ["verify", str(receipt), "--json", *_trust_args(tmp_path, case["trust"])]
    if not case["require_signature"]:
        args.append("--allow-unsigned")
    out = runner.invoke(app, args)
    verdict = json.loads(out.stdout)
    assert verdict["signature"]["status"] == case["want_signature"]
    if case["want_error"] is None:
        assert out.exit_code == (0 if case["receipt"].get("anchor") else 3), out.output
    else:
        assert out.exit_code == 1 and verdict["failed_check"] == case["want_error"]


def test_verify_trust_prints_the_signer_and_exit_code_means_signed(tmp_path: Path) -> None:
    pki_ = Pki("cli verify")
    leaf = pki_.hospital("qd-municipal-01")
    base = Receipt.from_obj(json.loads((VECTORS / "receipt" / "ok_anchored.json").read_text())["receipt"])
    anchor = base.anchor
    assert isinstance(anchor, Anchor)
    signed = base.with_signature(sign_batch(base.batch, anchor.chain_id, anchor.contract, leaf.key, leaf.chain))
    assert verify_receipt(signed, trust=pki_.trust()).status == "valid"
    files = {"signed": signed.to_json(), "unsigned": base.to_json()}
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(content)
    (tmp_path / "root.pem").write_bytes(pki_.root.pem)
    (tmp_path / "other.pem").write_bytes(Pki("another CA").root.pem)
    (tmp_path / "intermediate.pem").write_bytes(pem(pki_.intermediate.cert))
    (tmp_path / "crl.pem").write_bytes(pki_.intermediate.crl([leaf.serial]))
    trust = ["--trust", str(tmp_path / "root.pem")]

    def run(name: str, *args: str) -> Any:
        return runner.invoke(app, ["verify", str(tmp_path / f"{name}.json"), *args])

    ok = run("signed", *trust)
    assert ok.exit_code == 0, ok.output
    assert "signed by hospital qd-municipal-01" in ok.output and f"certificate {leaf.serial:x}" in ok.output
    assert "signature present, not checked" in run("signed").output  # no --trust: valid, but says so
    untrusted = run("signed", "--trust", str(tmp_path / "other.pem"))
    assert untrusted.exit_code == 1 and "certificate-untrusted" in untrusted.output
    revoked = run("signed", *trust, "--intermediate", str(tmp_path / "intermediate.pem"), "--crl",
                  str(tmp_path / "crl.pem"))
    assert revoked.exit_code == 1 and "certificate-revoked" in revoked.output
    assert run("unsigned", *trust).exit_code == 1  # --trust: a signature is required
    assert run("unsigned", *trust, "--allow-unsigned").exit_code == 0
    for bad in (["--trust", str(tmp_path / "missing.pem")], ["--crl", str(tmp_path / "crl.pem")],
                ["--trust", str(tmp_path / "signed.json")]):
        result = run("signed", *bad)
        assert result.exit_code == 2, (bad, result.output)
