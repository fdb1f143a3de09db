"""`mrledger serve` end to end on Hardhat Network instead of its managed anvil (issue 20, item 4): a node pointed
at an external chain (``MRL_RPC_URL``) with a registry deployed there beforehand (``MRL_CONTRACT_ADDRESS``) and the
operator's own keys, as production runs it. A hospital registered over the API, results submitted, sealed,
signed and anchored, the receipt fetched and verified on chain by the CLI (``mrledger verify --rpc``) and by
the API — nothing in the path may rely on anvil (docs/anchoring.md, "EVM clients").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring.hardhat_node import HardhatNode
from mrledger.anchoring.node import free_port
from mrledger.ledger import hospital_key
from tests.node.test_serve import Node, _submit, _wait_receipts, http_client, record

pytestmark = pytest.mark.hardhat


def _key_file(path: Path, key: str) -> Path:
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def test_serve_on_hardhat_anchors_and_the_receipt_verifies_on_chain(tmp_path: Path,
                                                                     hardhat_rollback: HardhatNode) -> None:
    chain = hardhat_rollback
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    admin = Account.from_key(chain.private_keys[0])
    contract = reg.deploy_registry(w3, admin)  # deployed by the operator before the node ever starts
    node = Node(tmp_path / "data", free_port())
    node.env.update(MRL_RPC_URL=chain.rpc_url, MRL_CONTRACT_ADDRESS=contract,
                    MRL_ADMIN_KEY_FILE=str(_key_file(tmp_path / "admin.key", chain.private_keys[0])),
                    MRL_SUBMITTER_KEY_FILE=str(_key_file(tmp_path / "submitter.key", chain.private_keys[1])))
    try:
        info = node.start()
        assert (info["rpc_url"], info["contract"], info["chain_id"]) == (chain.rpc_url, contract, 31337)
        assert info["anvil_pid"] is None and not (node.data_dir / "anvil.pid").exists()  # no managed chain
        admin_token = (node.data_dir / "admin-token").read_text().strip()
        with http_client() as client:
            r = client.post(f"{node.api}/hospitals", json={"id": "gz-001", "name": "Guangzhou First"},
                            headers={"Authorization": f"Bearer {admin_token}"})
            assert r.status_code == 201, r.text
            out = node.cli("token", "create", "--role", "hospital:gz-001", "--label", "hardhat e2e")
            assert out.returncode == 0, out.stderr
            tokens = {"gz-001": out.stdout.strip()}
            accepted = {"gz-001": _submit(client, node, tokens, "gz-001", [record("gz-001", i) for i in range(6)])}
            receipts = _wait_receipts(client, node, tokens, accepted)
            receipt = receipts["gz-001", "LAB-00003"]
            answer = client.post(f"{node.api}/verify", json={"receipt": receipt}).json()
            assert answer["verdict"] == "authentic" and answer["signature"]["status"] == "valid", answer

        # The registry on Hardhat holds the batch, put there by the node's submitter key.
        hk = hospital_key("gz-001")
        assert reg.last_seq(w3, contract, hk) >= 1
        [event, *_] = reg.anchored_events(w3, contract, hospital_key=hk)
        assert event.submitter == Account.from_key(chain.private_keys[1]).address
        assert receipt["anchor"]["tx_hash"] in {e.tx_hash for e in reg.anchored_events(w3, contract)}

        path = tmp_path / "receipt.json"
        path.write_text(json.dumps(receipt))
        trust = ["--trust", *info["trust_anchors"], "--intermediate", *info["trust_intermediates"]]
        verified = node.cli("verify", str(path), "--rpc", chain.rpc_url, "--json", *trust)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        out_json = json.loads(verified.stdout)
        assert out_json["status"] == "valid" and out_json["signature"]["status"] == "valid", out_json
        # Forged wholesale (a one-leaf batch of its own: consistent offline), refuted by the root on Hardhat.
        forged = json.loads(json.dumps(receipt))
        forged["batch"].update(root=forged["leaf"]["hash"], size=1)
        forged.update(audit_path=[])
        forged["leaf"]["index"] = 0
        path.write_text(json.dumps(forged))
        refuted = node.cli("verify", str(path), "--rpc", chain.rpc_url, "--json")
        assert refuted.returncode == 1 and json.loads(refuted.stdout)["failed_check"] == "anchor-root", refuted.stdout
        assert node.stop() == 0
        for text in ("Traceback", "anvil_"):
            assert text not in node.log, text
    finally:
        node.cleanup()
