"""The CLI against a real anvil: `chain deploy` records the registry, `verify --rpc` checks on chain."""

from __future__ import annotations

import json
import sqlite3
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


def test_audit_chain_compares_the_database_with_the_registry(tmp_path: Path) -> None:
    """`mrledger audit chain` runs the API's database-vs-chain audit (service/audit.py) with no server: consistent
    after anchoring, a batch sealed but not sent is no alarm, a rewritten database root is caught (exit 1),
    and an unknown hospital or an unreachable chain is a usage error that prints no verdict."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {"MRL_DATABASE_URL": db, "MRL_DATA_DIR": str(tmp_path), "MRL_RPC_URL": ""}
    with AnvilNode() as node:
        out = runner.invoke(app, ["chain", "deploy", "--rpc", node.rpc_url, "--db", db],
                            env={"MRL_ADMIN_KEY": node.private_keys[0]})
        assert out.exit_code == 0, out.output
        contract = json.loads(out.stdout)["contract"]
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, hub = Account.from_key(node.private_keys[0]), Account.from_key(node.private_keys[1])
        store = Store.open(db, master_key=TEST_KEY)
        store.register_hospital("gz-001", "Guangzhou")
        ensure_hospital_on_chain(w3, contract, admin, "gz-001", "Guangzhou", [hub.address])
        store.submit("gz-001", [rec(i) for i in range(3)])
        store.seal("gz-001", 10)
        worker = AnchorWorker(store, w3, contract, hub)
        for _ in range(3):
            worker.step()
        store.submit("gz-001", [rec(i) for i in range(3, 5)])
        store.seal("gz-001", 10)  # batch 2: sealed, not sent — not anchored yet is no inconsistency

        ok = runner.invoke(app, ["audit", "chain", "gz-001", "--rpc", node.rpc_url, "--json"], env=env)
        assert ok.exit_code == 0, ok.output
        found = json.loads(ok.stdout)
        assert found["consistent"] is True and found["contract"] == contract and found["db_batches"] == 2
        assert found["chain_batches"] == 1 and found["last_seq_chain"] == 1 and found["root_mismatches"] == []
        assert found["missing_on_chain"] == [{"seq": 2, "anchor_status": "sealed", "alarm": False}]

        with sqlite3.connect(tmp_path / "ledger.db") as conn:  # someone rewrites the anchored batch's root
            conn.execute("UPDATE batches SET root = ? WHERE hospital_id = 'gz-001' AND seq = 1", (b"\x11" * 32,))
        bad = runner.invoke(app, ["audit", "chain", "gz-001", "--rpc", node.rpc_url, "--json"], env=env)
        assert bad.exit_code == 1, bad.output
        found = json.loads(bad.stdout)
        assert found["consistent"] is False
        assert [(m["seq"], m["source"], m["db_root"]) for m in found["root_mismatches"]] == [(1, "batchOf", "11" * 32)]
        text = runner.invoke(app, ["audit", "chain", "gz-001", "--rpc", node.rpc_url], env=env)
        assert text.exit_code == 1 and "inconsistent" in text.output and "11" * 32 in text.output

        unknown = runner.invoke(app, ["audit", "chain", "xx-404", "--rpc", node.rpc_url], env=env)
        assert unknown.exit_code == 2 and "unknown hospital" in unknown.output and "consistent" not in unknown.output
        rpc_url = node.rpc_url
    down = runner.invoke(app, ["audit", "chain", "gz-001", "--rpc", rpc_url], env=env)
    assert down.exit_code == 2 and "cannot reach the chain" in down.output
