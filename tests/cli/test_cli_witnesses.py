"""``mrledger verify --witnesses K --witness KEY.pem --checkpoint FILE|DIR`` (issue 19): a valid receipt is accepted
only when K trusted witnesses vouch for its batch; too few, or two that signed different histories, exit 4; a
receipt that fails on its own keeps its own exit code; unusable inputs are usage errors."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from mrledger.cli.main import app
from mrledger.ledger.witness import chain_hash, sign_checkpoint
from tests.cli.test_cli import receipt_file

runner = CliRunner()


def _receipt(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = receipt_file(tmp_path, "ok_anchored")
    return path, json.loads(path.read_text())


def _witness(tmp_path: Path, name: str) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / f"{name}.pem"
    pem.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return pem, key


def _checkpoint(receipt: dict[str, Any], key: Ed25519PrivateKey, *, root: str | None = None,
                seq_offset: int = 0) -> dict[str, Any]:
    batch, anchor = receipt["batch"], receipt["anchor"]
    seq = batch["seq"] + seq_offset
    root = root or batch["root"]
    return sign_checkpoint({
        "format": "mrl-witness/1", "chain_id": anchor["chain_id"], "contract": anchor["contract"],
        "hospital_id": batch["hospital_id"], "from_seq": 1, "seq": seq, "root": root, "size": batch["size"],
        "commitment": chain_hash(bytes(32), seq, bytes.fromhex(root), batch["size"]).hex(),
        "block": anchor["block_number"], "time": "2026-12-03T09:00:00Z"}, key)


def _verify(path: Path, *args: str) -> Any:
    return runner.invoke(app, ["verify", str(path), *args])


def test_k_of_n_witnesses_vouch(tmp_path: Path) -> None:
    path, receipt = _receipt(tmp_path)
    (a, ka), (b, kb), (c, _) = (_witness(tmp_path, n) for n in ("alpha", "beta", "gamma"))
    docs = tmp_path / "checkpoints"
    docs.mkdir()
    (docs / "alpha.json").write_text(json.dumps(_checkpoint(receipt, ka)))
    (docs / "beta.json").write_text(json.dumps(_checkpoint(receipt, kb, seq_offset=3)))  # further on: covers it
    keys = ["--witness", str(a), "--witness", str(b), "--witness", str(c), "--checkpoint", str(docs)]
    ok = _verify(path, "--witnesses", "2", *keys)
    assert ok.exit_code == 0, ok.output
    assert "alpha, beta vouch for batch" in ok.output
    # Three required, two vouch: valid on its own, not witnessed.
    short = _verify(path, "--witnesses", "3", *keys, "--json")
    assert short.exit_code == 4, short.output
    out = json.loads(short.output)
    assert out["status"] == "valid" and out["witnessed"] is False and "witness-quorum" in out["witnesses"]
    # Without --witnesses the same receipt is simply valid.
    assert _verify(path, *keys).exit_code == 0


def test_documents_of_unknown_keys_count_for_nothing(tmp_path: Path) -> None:
    path, receipt = _receipt(tmp_path)
    (a, _), (_, stranger) = _witness(tmp_path, "alpha"), _witness(tmp_path, "stranger")
    doc = tmp_path / "stranger.json"
    doc.write_text(json.dumps(_checkpoint(receipt, stranger)))
    got = _verify(path, "--witnesses", "1", "--witness", str(a), "--checkpoint", str(doc))
    assert got.exit_code == 4 and "0 of the 1 required witnesses" in got.output, got.output


def test_two_witnesses_with_different_histories_are_a_split_view(tmp_path: Path) -> None:
    path, receipt = _receipt(tmp_path)
    (a, ka), (b, kb) = _witness(tmp_path, "alpha"), _witness(tmp_path, "beta")
    docs = [tmp_path / "a.json", tmp_path / "b.json"]
    docs[0].write_text(json.dumps(_checkpoint(receipt, ka)))
    docs[1].write_text(json.dumps(_checkpoint(receipt, kb, root="ab" * 32)))
    got = _verify(path, "--witnesses", "1", "--witness", str(a), "--witness", str(b),
                  "--checkpoint", str(docs[0]), "--checkpoint", str(docs[1]))
    assert got.exit_code == 4 and "witness-conflict" in got.output, got.output


def test_a_failing_receipt_keeps_its_own_exit_code(tmp_path: Path) -> None:
    bad = receipt_file(tmp_path, "value_altered")
    a, _ = _witness(tmp_path, "alpha")
    assert _verify(bad, "--witnesses", "1", "--witness", str(a)).exit_code == 1


def test_unusable_witness_inputs_are_usage_errors(tmp_path: Path) -> None:
    path, _ = _receipt(tmp_path)
    a, _ = _witness(tmp_path, "alpha")
    not_a_key = tmp_path / "nokey.pem"
    not_a_key.write_text("not a key")
    assert _verify(path, "--witnesses", "1", "--witness", str(not_a_key)).exit_code == 2
    assert _verify(path, "--witnesses", "2", "--witness", str(a)).exit_code == 2  # more required than keys
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert _verify(path, "--witnesses", "1", "--witness", str(a), "--checkpoint", str(broken)).exit_code == 2


def test_checkpoints_fetched_from_witnesses_over_http(tmp_path: Path) -> None:
    """A witness publishes its ``--witness-out`` directory over HTTP; ``--checkpoint URL/`` asks it for the
    receipt's hospital. A witness that is down, or has no checkpoint for the hospital, counts for nothing."""
    path, receipt = _receipt(tmp_path)
    (a, ka), (b, kb) = _witness(tmp_path, "alpha"), _witness(tmp_path, "beta")
    hospital = receipt["batch"]["hospital_id"]
    for name, key in (("alpha", ka), ("beta", kb)):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{hospital}.json").write_text(json.dumps(_checkpoint(receipt, key)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        keys = ["--witness", str(a), "--witness", str(b)]
        ok = _verify(path, "--witnesses", "2", *keys, "--checkpoint", f"{base}/alpha/", "--checkpoint",
                     f"{base}/beta/{hospital}.json")
        assert ok.exit_code == 0, ok.output
        assert "alpha, beta vouch for batch" in ok.output
        gone = _verify(path, "--witnesses", "2", *keys, "--checkpoint", f"{base}/alpha/", "--checkpoint",
                       f"{base}/nowhere/")
        assert gone.exit_code == 4, gone.output
        assert "HTTP 404" in gone.output
    finally:
        server.shutdown()
        server.server_close()
    down = _verify(path, "--witnesses", "1", *keys, "--checkpoint", f"{base}/alpha/")
    assert down.exit_code == 4 and "ConnectError" in down.output, down.output
