"""The CLI against a real anvil: `chain deploy` records the registry, `verify --rpc` checks on chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner
from web3 import Web3

from mrledger.anchoring.deploy import ensure_hospital_on_chain
from mrledger.anchoring.node import AnvilNode
from mrledger.anchoring.worker import AnchorWorker
from mrledger.cli.main import app
from mrledger.store import Store
from mrledger.store.anchors import Outbox
from tests.conftest import TEST_KEY
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil
runner = CliRunner()


def test_deploy_anchor_and_verify_on_chain(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with AnvilNode() as node:
        # no key → usage error, nothing deployed
        bad = runner.invoke(app, ["chain", "deploy", "--rpc", node.rpc_url, "--db", db], env={"MRL_ADMIN_KEY": ""})
        assert bad.exit_code == 2 and "admin key" in bad.output
        out = runner.invoke(app, ["chain", "deploy", "--rpc", node.rpc_url, "--db", db],
                            env={"MRL_ADMIN_KEY": node.private_keys[0]})
        assert out.exit_code == 0, out.output
        deployed = json.loads(out.stdout)
        store = Store.open(db, master_key=TEST_KEY)
        recorded = Outbox(store).deployment()
        assert recorded is not None and recorded.contract == deployed["contract"] and recorded.chain_id == 31337

        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, hub = Account.from_key(node.private_keys[0]), Account.from_key(node.private_keys[1])
        store.register_hospital("gz-001", "Guangzhou")
        assert ensure_hospital_on_chain(w3, recorded.contract, admin, "gz-001", "Guangzhou", [hub.address])
        assert not ensure_hospital_on_chain(w3, recorded.contract, admin, "gz-001", "Guangzhou", [hub.address])
        store.submit("gz-001", [rec(i) for i in range(5)])
        store.seal("gz-001", 10)
        worker = AnchorWorker(store, w3, recorded.contract, hub)
        for _ in range(3):
            worker.step()
        receipt = store.receipt("gz-001", "R2")
        assert receipt is not None and receipt.anchor is not None
        path = tmp_path / "receipt.json"
        path.write_text(receipt.to_json())

        ok = runner.invoke(app, ["verify", str(path), "--rpc", node.rpc_url, "--json"])
        assert ok.exit_code == 0, ok.output
        verdict = json.loads(ok.stdout)
        assert verdict["status"] == "valid" and verdict["confirmations"] >= 1
        assert [c["name"] for c in verdict["checks"]][-4:] == ["chain-id", "anchor-root", "on-chain-proof",
                                                                "anchor-block"]

        forged = json.loads(receipt.to_json())
        forged.update(audit_path=[], leaf={"index": 0, "hash": forged["leaf"]["hash"]})
        forged["batch"].update(size=1, root=forged["leaf"]["hash"])
        path.write_text(json.dumps(forged))
        assert runner.invoke(app, ["verify", str(path)]).exit_code == 0  # offline it looks fine …
        on_chain = runner.invoke(app, ["verify", str(path), "--rpc", node.rpc_url])
        assert on_chain.exit_code == 1 and "anchor-root" in on_chain.output  # … the chain says otherwise
        rpc_url = node.rpc_url
    down = runner.invoke(app, ["verify", str(path), "--rpc", rpc_url])
    assert down.exit_code == 2 and "cannot check the chain" in down.output
