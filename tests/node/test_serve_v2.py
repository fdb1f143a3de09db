"""`mrledger serve` on a v2 registry (``MRL_REGISTRY_VERSION=2``, issue 18) on its managed anvil, end to end: two
hospitals registered over the API, results submitted, sealed, signed and anchored in hub transactions, the
receipts (mrl-receipt/2) verified by the API and by the CLI on chain, and a corrected result's old receipt read as
superseded with the map root bound on chain (``verify --status``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from web3 import Web3

from mrledger.anchoring import contract_v2 as reg2
from tests.node.test_serve import Node, _submit, _wait_receipts, http_client, node, record  # noqa: F401 - fixture

pytestmark = pytest.mark.anvil


def test_serve_on_a_v2_registry_anchors_in_hubs_and_binds_the_status(node: Node, tmp_path: Path) -> None:  # noqa: F811
    node.env["MRL_REGISTRY_VERSION"] = "2"
    info = node.start()
    w3 = Web3(Web3.HTTPProvider(info["rpc_url"]))
    assert reg2.registry_version(w3, info["contract"]) == 2
    admin_token = (node.data_dir / "admin-token").read_text().strip()
    tokens = {}
    with http_client() as client:
        for h in ("gz-001", "qd-002"):
            r = client.post(f"{node.api}/hospitals", json={"id": h, "name": h},
                            headers={"Authorization": f"Bearer {admin_token}"})
            assert r.status_code == 201, r.text
            out = node.cli("token", "create", "--role", f"hospital:{h}", "--label", "v2 e2e")
            assert out.returncode == 0, out.stderr
            tokens[h] = out.stdout.strip()
        accepted = {h: _submit(client, node, tokens, h, [record(h, i) for i in range(4)]) for h in tokens}
        receipts = _wait_receipts(client, node, tokens, accepted)
        receipt = receipts["qd-002", "LAB-00002"]
        assert receipt["format"] == "mrl-receipt/2" and len(receipt["anchor"]["map_root"]) == 64
        answer = client.post(f"{node.api}/verify", json={"receipt": receipt}).json()
        assert answer["verdict"] == "authentic" and answer["signature"]["status"] == "valid", answer
        tampered = json.loads(json.dumps(receipt))
        tampered["anchor"]["map_root"] = "00" * 32
        assert client.post(f"{node.api}/verify", json={"receipt": tampered}).json()["verdict"] == "tampered"

        path = tmp_path / "old.json"
        path.write_text(json.dumps(receipt))
        trust = ["--trust", *info["trust_anchors"], "--intermediate", *info["trust_intermediates"]]
        verified = node.cli("verify", str(path), "--rpc", info["rpc_url"], "--json", *trust,
                            "--status", node.api.removesuffix("/v1"))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        out = json.loads(verified.stdout)
        assert out["status"] == "valid" and out["current"]["status"] == "current", out
        assert out["current"]["chain"]["map_root_bound"] is True

        corrected = record("qd-002", 2)
        corrected.update(version=2, supersedes=1, status="corrected")
        corrected["content"]["observations"][0]["value"] = 9.9
        _submit(client, node, tokens, "qd-002", [corrected])
        headers = {"Authorization": f"Bearer {tokens['qd-002']}"}
        for _ in range(300):
            got = client.get(f"{node.api}/hospitals/qd-002/results/LAB-00002/receipt", params={"version": 2},
                             headers=headers)
            if got.status_code == 200 and got.json().get("anchor"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the correction was not anchored")
    superseded = node.cli("verify", str(path), "--rpc", info["rpc_url"], "--status", node.api.removesuffix("/v1"))
    assert superseded.returncode == 5, superseded.stdout + superseded.stderr
    assert "superseded by version 2" in superseded.stdout and "map root bound on chain" in superseded.stdout
