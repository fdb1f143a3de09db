"""`mrledger chain upgrade`: a ledger moves from its v1 registry to a v2 one in place, on a real anvil (issue 18).

What must hold across the move: the upgrade refuses while a batch is sealed but not confirmed (its signature and
its transaction name the old registry); v1 is paused and stays readable, so every receipt issued before keeps
verifying there; each hospital continues its sequence on v2 (carried over by the contract, read from v1, not
from the admin); new receipts are mrl-receipt/2; the database-vs-chain audit spans both registries; and an old
v1 receipt's status is answered from v2 — accepted because v2 names v1 as its predecessor on chain — while a
status bound to the paused v1 registry is never "current".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.chain import ChainContext
from mrledger.anchoring.deploy import ensure_hospital_on_chain
from mrledger.anchoring.node import AnvilNode
from mrledger.anchoring.worker import AnchorWorker
from mrledger.cli.main import app
from mrledger.ledger import Anchor, BatchHead, hospital_key
from mrledger.ledger.status_check import StatusDocument, check_status, receipt_status_key
from mrledger.ledger.statusmap import StatusMap, StatusValue, batch_commitment_v2
from mrledger.service.ledger import build_services
from mrledger.service.status import verify_status
from mrledger.store import Store
from mrledger.store.anchors import Outbox
from tests.conftest import TEST_KEY
from tests.harness import status_doc
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil
runner = CliRunner()
H = "gz-001"


def anchor(store: Store, w3: Web3, contract: str, hub: object) -> None:
    worker = AnchorWorker(store, w3, contract, hub)  # type: ignore[arg-type]
    for _ in range(6):
        worker.step()
        if Outbox(store).unconfirmed() == 0:
            return
    raise AssertionError("anchoring did not settle")


def test_upgrade_in_place_keeps_old_receipts_and_continues_the_sequence(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {"MRL_ADMIN_KEY": "", "MRL_DATA_DIR": str(tmp_path)}
    with AnvilNode() as node:
        env["MRL_ADMIN_KEY"] = node.private_keys[0]
        out = runner.invoke(app, ["chain", "deploy", "--rpc", node.rpc_url, "--db", db, "--registry-version", "1"],
                            env=env)
        assert out.exit_code == 0, out.output
        v1 = json.loads(out.stdout)["contract"]
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, hub = Account.from_key(node.private_keys[0]), Account.from_key(node.private_keys[1])
        store = Store.open(db, master_key=TEST_KEY)
        store.register_hospital(H, "Guangzhou")
        ensure_hospital_on_chain(w3, v1, admin, H, "Guangzhou", [hub.address])
        for start in (0, 3):
            store.submit(H, [rec(i) for i in range(start, start + 3)])
            store.seal(H, 10)
        anchor(store, w3, v1, hub)
        old = store.receipt(H, "R1")
        assert old is not None and old.format == "mrl-receipt/1" and old.anchor is not None
        before = status_doc(store, old)

        # Refused while a batch is sealed for v1 but not confirmed there; nothing changes on chain.
        store.submit(H, [rec(9)])
        store.seal(H, 10)
        refused = runner.invoke(app, ["chain", "upgrade", "--rpc", node.rpc_url, "--db", db], env=env)
        assert refused.exit_code == 2 and "not confirmed" in refused.output
        assert not reg.is_paused(w3, v1)
        anchor(store, w3, v1, hub)

        out = runner.invoke(app, ["chain", "upgrade", "--rpc", node.rpc_url, "--db", db], env=env)
        assert out.exit_code == 0, out.output
        v2 = json.loads(out.stdout)["contract"]
        assert reg.is_paused(w3, v1) and reg2.predecessor(w3, v2) == Web3.to_checksum_address(v1)
        assert Outbox(store).deployment() is not None and Outbox(store).deployment().contract == v2  # type: ignore[union-attr]
        again = runner.invoke(app, ["chain", "upgrade", "--rpc", node.rpc_url, "--db", db], env=env)
        assert again.exit_code == 2 and "already v2" in again.output

        # The node's next start registers the hospital on v2: its sequence continues after v1's three batches.
        assert ensure_hospital_on_chain(w3, v2, admin, H, "Guangzhou", [hub.address])
        assert reg2.last_seq(w3, v2, hospital_key(H)) == 3
        store.submit(H, [rec(1, version=2, value=6.2)])  # R1 corrected, in batch 4 on v2
        store.seal(H, 10)
        anchor(store, w3, v2, hub)

        new = store.receipt(H, "R1", 2)
        assert new is not None and new.format == "mrl-receipt/2" and new.anchor is not None
        assert new.anchor.contract == v2 and new.batch.seq == 4
        paths = {}
        for name, r in (("old", old), ("new", new)):
            paths[name] = tmp_path / f"{name}.json"
            paths[name].write_text(r.to_json())
            ok = runner.invoke(app, ["verify", str(paths[name]), "--rpc", node.rpc_url, "--json"])
            assert ok.exit_code == 0 and json.loads(ok.stdout)["status"] == "valid", ok.output
        assert store.receipt(H, "R1", 1) == old  # the old receipt is issued unchanged, naming v1

        audit = runner.invoke(app, ["audit", "chain", H, "--rpc", node.rpc_url, "--json"],
                              env={**env, "MRL_DATABASE_URL": db, "MRL_RPC_URL": ""})
        assert audit.exit_code == 0, audit.output
        found = json.loads(audit.stdout)
        assert found["consistent"] and found["db_batches"] == found["chain_batches"] == 4
        assert found["last_seq_chain"] == 4

        # The old paper receipt's status, from v2: superseded, bound to the chain (map root included).
        verdict, binding = verify_status(w3, old, status_doc(store, old))
        assert (verdict.kind, verdict.version) == ("superseded", 2)
        assert binding is not None and binding.map_root_bound and binding.registry == v2
        # The answer the node gave before the upgrade is bound to the paused v1: never "current" now.
        assert verify_status(w3, old, before)[0].kind == "stale"
        # A registry of someone else's making that names v1 as its predecessor, holds the hospital (its deployer
        # registered it) and a made-up map in which R1 is still current: not the successor (no v1 submitter of
        # the hospital anchored there), so the made-up answer is invalid, never "current".
        rogue = Account.from_key(node.private_keys[7])
        fake = reg2.deploy_registry(w3, rogue, predecessor=v1)
        reg2.register_hospital(w3, fake, rogue, hospital_key(H), bytes(32), [rogue.address])
        key = receipt_status_key(old)
        assert key is not None
        lie = StatusMap({key: StatusValue(1, "current", old.leaf_hash)})
        head = BatchHead(H, 4, 1, b"\x33" * 32, old.batch.sealed_at)
        sent = reg2.anchor(w3, fake, rogue, hospital_key(H), 4, batch_commitment_v2(head.root, 1, lie.root))
        block = w3.eth.get_block(sent.block_number)
        forged = StatusDocument(H, key, head, lie.root, lie.prove(key), Anchor(
            31337, fake, sent.tx_hash, sent.block_number, "0x" + bytes(block["hash"]).hex(), map_root=lie.root))
        assert check_status(old, forged).kind == "current"  # consistent in itself
        verdict, binding = verify_status(w3, old, forged)
        assert verdict.kind == "invalid" and binding is not None
        assert "not its successor" in binding.detail and "admin" in binding.detail
        # The node, now on v2, still vouches for receipts anchored in the v1 registry its registry succeeded
        # (named on chain by predecessor()); a registry that is neither stays "unknown".
        node = build_services(store, ChainContext(w3, v2, 31337))
        for r, fmt in ((old, "mrl-receipt/1"), (new, "mrl-receipt/2")):
            outcome = node.verification.verifier.by_receipt(r.to_obj())
            assert (outcome.verdict, r.format) == ("authentic", fmt), outcome
        elsewhere = json.loads(old.to_json())
        elsewhere["anchor"]["contract"] = "0x" + "12" * 20
        assert node.verification.verifier.by_receipt(elsewhere).verdict == "unknown"
        # v1 takes no anchor any more: a v1 transaction for batch 5 reverts.
        with pytest.raises(Exception, match="EnforcedPause"):
            reg.anchor(w3, v1, hub, hospital_key(H), 4, b"\x22" * 32, 1)
