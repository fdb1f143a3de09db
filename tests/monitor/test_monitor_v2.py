"""The monitor on a v2 registry (issue 18/19): the chain holds one word per batch, ``SHA-256(0x04 || root || size
|| map root)``, so the monitor learns a batch's root and size from the node's published head only after checking
that head and its map root hash to the word — and, unlike on v1, a map root the node changed after anchoring is
caught without the auditor's token. A clean history stays silent and the witness chain is the one a v1 monitor
computes (the witness checkpoints verify the same way)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from sqlalchemy import Engine

from mrledger.anchoring import contract_v2 as reg2
from mrledger.ledger import hospital_key
from mrledger.ledger.witness import verify_witness_checkpoints
from mrledger.monitor.state import State
from tests.harness import chain_api_on
from tests.monitor.test_monitor import GZ, QD, World, kinds, make_world
from tests.store.test_repository import rec

pytestmark = [pytest.mark.anvil, pytest.mark.parametrize("engine", ["sqlite"], indirect=True)]


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    with chain_api_on(engine, 2) as api:
        assert api.ledger.chain is not None
        assert reg2.registry_version(api.ledger.chain.w3, api.ledger.chain.contract) == 2
        yield from make_world(api, tmp_path)


def test_a_clean_v2_history_is_silent_and_witnessed(world: World) -> None:
    key = Ed25519PrivateKey.generate()
    path = world.tmp / "witness.key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    monitor, found = world.monitor(witness_key=path, witness_out=world.tmp / "out",
                                   token=world.api.tokens["auditor"])
    assert monitor.run_once().problems == [] and found == []
    state = State(world.tmp / "monitor.db")
    try:
        row = state.anchor(hospital_key(GZ), 2)
        assert row is not None and row.status == "ok" and row.commitment is not None and row.chain
        assert (row.root, row.size) == (world.api.ledger.store.batch(GZ, 2).root, 2)
        assert state.map_seq(hospital_key(GZ)) == 2
    finally:
        state.close()
    doc = json.loads((world.tmp / "out" / f"{GZ}.json").read_text())
    assert doc["checkpoint"]["seq"] == 2
    assert world.api.ledger.chain is not None
    assert verify_witness_checkpoints([doc], hospital_id=GZ, seq=1, root=world.api.ledger.store.batch(GZ, 1).root,
                                      witnesses={"w": key.public_key().public_bytes_raw()}, k=1,
                                      chain_id=world.api.ledger.chain.chain_id, contract=world.contract) == ["w"]


def test_a_map_root_changed_after_anchoring_is_caught_without_a_token(world: World) -> None:
    world.sql("UPDATE batches SET map_root = :r WHERE hospital_id = :q AND seq = 2", r=b"\x07" * 32, q=QD)
    monitor, _ = world.monitor()  # no auditor token: the map itself is not re-derived
    result = monitor.run_once()
    assert kinds(result.problems) == {("root-mismatch", QD, 2)}
    assert "the chain anchored commitment" in result.problems[0].detail


def test_a_leaf_edited_in_sql_is_a_leaf_mismatch(world: World) -> None:
    world.sql("UPDATE record_versions SET leaf_hash = :h WHERE id = (SELECT record_version_id FROM batch_leaves "
              "WHERE hospital_id = :g AND seq = 1 AND leaf_index = 0)", h=b"\x05" * 32, g=GZ)
    monitor, _ = world.monitor()
    assert kinds(monitor.run_once().problems) == {("leaf-mismatch", GZ, 1)}


def test_a_word_anchored_with_a_rogue_key_is_a_root_mismatch(world: World) -> None:
    api = world.api
    chain = api.ledger.chain
    assert chain is not None and api.node is not None and chain.admin is not None
    monitor, _ = world.monitor()
    assert monitor.run_once().problems == []
    world.seal(GZ)  # batch 3, published by the node, not anchored yet
    rogue = Account.from_key(api.node.private_keys[5])
    reg2.add_submitter(chain.w3, chain.contract, chain.admin, hospital_key(GZ), rogue.address)
    reg2.anchor(chain.w3, chain.contract, rogue, hospital_key(GZ), 3, b"\xee" * 32)
    assert kinds(monitor.run_once().problems) == {("root-mismatch", GZ, 3)}


def test_corrections_and_withdrawals_re_derive_on_v2(world: World) -> None:
    monitor, found = world.monitor(token=world.api.tokens["auditor"], require_signatures=False)
    assert monitor.run_once().problems == []
    world.api.ledger.intake.submit(GZ, [rec(0, GZ, version=2, value=8.0),
                                        rec(1, GZ, version=2, status="entered-in-error")])
    world.api.ledger.store.seal(GZ, 100)
    world.api.anchor_all()
    assert monitor.run_once().problems == [] and found == []
