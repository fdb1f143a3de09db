"""The anchoring worker on a v2 registry (one commitment word per batch, hubs; issue 18), against a real anvil
node and Hardhat Network, on SQLite and PostgreSQL: every due batch of every hospital goes out in one hub
transaction (a single batch alone, as one word), receipts become ``mrl-receipt/2`` with the map root and the hub
position, and verify on chain — with the registry's own verifier too; a batch already on chain and a reorg end,
as on v1, with every batch anchored exactly once (the crash after broadcast runs on both registries in
test_worker.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.errors import AnchorConflict
from mrledger.anchoring.registries import commitment
from mrledger.anchoring.verify import verify_on_chain
from mrledger.ledger import RECEIPT_FORMAT_V2, Receipt, hospital_key, verify_receipt
from mrledger.ledger.statusmap import EMPTY
from mrledger.store.anchors import Outbox
from tests.anchoring.chain import HOSPITALS, Env, drive, submit
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]


def test_hub_anchoring_confirms_and_receipts_verify_on_chain(env2: Env) -> None:
    env = env2
    submit(env, 25)
    assert env.seal_all() == 9
    worker = env.worker(confirmations=3)
    assert worker.step().sent == 9  # one anchorHub transaction: three hospitals, three batches each
    drive(worker, env)
    env.assert_exactly_once_and_confirmed()
    assert reg2.hub_of(env.w3, env.contract, 1) is not None and reg2.hub_of(env.w3, env.contract, 2) is None

    receipt = env.store.receipt("qd-002", "R7")
    assert receipt is not None and receipt.anchor is not None
    assert receipt.format == RECEIPT_FORMAT_V2 and receipt.anchor.registry_version == 2
    hub = receipt.anchor.hub
    assert hub is not None and hub.hub_id == 1 and 0 <= hub.index < 9 and len(hub.path) == 4
    map_root = env.store.map_root("qd-002", receipt.batch.seq)
    assert map_root is not None and receipt.anchor.map_root == map_root != EMPTY
    # The stored word is the batch's (root, size, map root); nothing is stored per batch for a hub item.
    assert reg2.commitment_of(env.w3, env.contract, hospital_key("qd-002"), receipt.batch.seq) is None
    assert reg2.is_anchored(env.w3, env.contract, hospital_key("qd-002"), receipt.batch.seq,
                            commitment(receipt.batch, map_root), reg2.HubProof(hub.hub_id, hub.index, hub.path))

    text = receipt.to_json()
    assert Receipt.from_json(text) == receipt  # the /2 form round-trips
    assert verify_receipt(text).status == "valid"
    for onchain_proof in (True, False):
        verdict = verify_on_chain(text, env.w3, onchain_proof=onchain_proof)
        assert verdict.status == "valid", verdict.to_obj()
        assert verdict.extra["confirmations"] >= 3 and verdict.extra["tx_hash"] == receipt.anchor.tx_hash

    # Another map root: the commitment differs, so the registry does not hold this batch as the receipt says.
    other_map = json.loads(text)
    other_map["anchor"]["map_root"] = "ab" * 32
    assert verify_on_chain(other_map, env.w3).failed == "anchor-root"
    # The same receipt in the v1 spelling (no map root) cannot be checked against a v2 word: refused.
    as_v1 = json.loads(text)
    as_v1["format"] = "mrl-receipt/1"
    del as_v1["anchor"]["map_root"], as_v1["anchor"]["hub"]
    assert verify_on_chain(as_v1, env.w3).failed == "anchor-root"
    tampered = json.loads(text)
    tampered["record"]["content"]["observations"][0]["value"] = 99.9
    assert verify_on_chain(tampered, env.w3).failed == "leaf-hash"


def test_a_single_due_batch_is_one_word_and_later_batches_follow(env2: Env) -> None:
    env = env2
    env.store.submit("gz-001", [rec(i, hospital="gz-001") for i in range(3)])  # one hospital only
    assert env.store.seal("gz-001", 10) is not None
    worker = env.worker()
    assert worker.step().sent == 1
    drive(worker, env, 3)
    receipt = env.store.receipt("gz-001", "R0")
    assert receipt is not None and receipt.anchor is not None and receipt.anchor.hub is None
    head = env.store.batch("gz-001", 1)
    assert reg2.commitment_of(env.w3, env.contract, hospital_key("gz-001"), 1) == commitment(
        head, env.store.map_root("gz-001", 1))
    assert verify_on_chain(receipt, env.w3).status == "valid"
    submit(env, 4, start=10)
    env.seal_all()
    drive(worker, env, 4)
    env.assert_exactly_once_and_confirmed()
    assert [b.seq for b in env.store.batches("gz-001")] == [1, 2]


def test_a_batch_already_on_chain_is_found_by_its_logs_not_resent(env2: Env) -> None:
    env = env2
    submit(env, 3)
    env.seal_all()
    head = env.store.batch("gz-001", 1)
    reg2.anchor(env.w3, env.contract, env.hub, hospital_key("gz-001"), 1,
                commitment(head, env.store.map_root("gz-001", 1)))
    worker = env.worker()
    report = worker.step()
    assert report.included == 1 and report.sent == 2
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()


def test_another_commitment_on_chain_stops_anchoring(env2: Env) -> None:
    """The registry holds a word for (hospital, 1) that is not this ledger's batch: never overwritten, never
    recorded as this batch's anchor — the worker stops for an operator (AnchorConflict)."""
    env = env2
    submit(env, 3)
    env.seal_all()
    reg2.anchor(env.w3, env.contract, env.hub, hospital_key("gz-001"), 1, b"\x11" * 32)
    with pytest.raises(AnchorConflict, match="commitment 1111"):
        env.worker().step()
    assert Outbox(env.store).state("gz-001", 1) is None


def test_reorg_of_a_hub_is_detected_and_reanchored(env2: Env) -> None:
    env = env2
    submit(env, 4)
    env.seal_all()
    worker = env.worker(confirmations=4)
    assert worker.step().sent == 3
    env.wait_mined()
    assert worker.step().included == 3
    old = Outbox(env.store).state("gz-001", 1)
    assert old is not None and old.hub_id == 1
    env.reorg(1)  # the block holding the hub is replaced by an empty one
    assert worker.step().reorged == 3
    drive(worker, env, 8)
    env.assert_exactly_once_and_confirmed()
    for h in HOSPITALS:
        receipt = env.store.receipt(h, "R1")
        assert receipt is not None and verify_on_chain(receipt, env.w3).status == "valid"
