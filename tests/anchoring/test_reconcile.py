"""Reconciliation against a real anvil (on SQLite and PostgreSQL) and Hardhat Network (on SQLite): anchors the
chain loses after the database recorded them ``confirmed`` — a reorg deeper than ``MRL_CONFIRMATIONS``, a chain
gone back to older state — are found, sent again exactly once, and alarmed while they are missing
(anchoring/reconcile.py).

Before reconciliation existed each of these stalled the hospitals concerned forever, silently: the worker
never looked at a confirmed anchor again and the registry's gap-free seq rule refused every later batch.
"""

from __future__ import annotations

import pytest

from mrledger.anchoring import contract as reg
from mrledger.anchoring.verify import verify_on_chain
from mrledger.ledger import hospital_key
from mrledger.ledger.status import CONFIRMED
from mrledger.store.anchors import ANCHORS_LOST, Outbox
from tests.anchoring.chain import HOSPITALS, Env, drive, submit

pytestmark = pytest.mark.anvil


def _reorg_below(env: Env, hospital: str = "gz-001", seq: int = 1) -> int:
    """Replace every block from the one holding (hospital, seq)'s anchor up to the head with empty blocks;
    the depth of that reorg."""
    state = Outbox(env.store).state(hospital, seq)
    assert state is not None and state.block_number is not None
    depth = int(env.w3.eth.block_number) - state.block_number + 1
    env.reorg(depth)
    return depth


def _anchor_everything(env: Env, worker_steps: int = 4) -> None:
    env.seal_all()
    worker = env.worker(confirmations=1)
    drive(worker, env, worker_steps)
    env.assert_exactly_once_and_confirmed()


def test_reorg_deeper_than_the_confirmations_is_found_and_reanchored(env_any: Env) -> None:
    """MRL_CONFIRMATIONS=1; a reorg of 4+ blocks (replaced by empty blocks) drops batch 1 of every hospital the
    database keeps as confirmed; the next batch then stalls on the gap until reconciliation re-anchors."""
    env = env_any
    submit(env, 4)
    env.seal_all()
    worker = env.worker(confirmations=1)
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()
    assert env.store.receipt("gz-001", "R1").anchor is not None  # type: ignore[union-attr]
    env.mine(2)
    assert _reorg_below(env) >= 4  # the anchor's block and those above it, replaced by empty ones
    assert all(reg.last_seq(env.w3, env.contract, hospital_key(h)) == 0 for h in HOSPITALS)

    submit(env, 4, start=4)
    env.seal_all()  # batch 2 of each hospital: seq 2 cannot be anchored while the chain lacks seq 1
    worker.step()  # stalls on the gap, which asks for a reconciliation ...
    report = worker.step()  # ... that finds batch 1 lost and sends it again with batch 2
    assert report.lost == 3, report
    outbox = Outbox(env.store)
    alarms = outbox.alarms()
    assert {(a.kind, a.hospital_id, a.first_seq, a.last_seq) for a in alarms} == {
        (ANCHORS_LOST, h, 1, 1) for h in HOSPITALS}
    assert "reorg deeper than the 1 confirmation" in alarms[0].detail
    assert env.store.receipt("gz-001", "R1").anchor is None  # type: ignore[union-attr]  # never with a gone anchor

    drive(worker, env, 6)
    env.assert_exactly_once_and_confirmed()
    assert all(reg.last_seq(env.w3, env.contract, hospital_key(h)) == 2 for h in HOSPITALS)
    assert outbox.alarms() == [] and len(outbox.alarms(open_only=False)) == 3  # resolved once confirmed again
    receipt = env.store.receipt("gz-001", "R1")
    assert receipt is not None and verify_on_chain(receipt, env.w3).status == "valid"


def test_chain_gone_back_to_older_state_is_healed_without_new_batches(env: Env) -> None:
    """The chain goes back to an older state (a node restarted from an old state file, evm_revert here) and
    nothing new is sealed: no stall to notice, yet the lost anchors are found (the head went back) and sent."""
    submit(env, 2)
    _anchor_everything(env)
    snapshot = env.node.rpc("evm_snapshot")
    for start in (2, 4):
        submit(env, 2, start=start)
        _anchor_everything(env)
    assert reg.last_seq(env.w3, env.contract, hospital_key("qd-002")) == 3
    worker = env.worker(confirmations=1)
    worker.step()  # sees the head as it is now
    assert env.node.rpc("evm_revert", snapshot) is True
    assert reg.last_seq(env.w3, env.contract, hospital_key("qd-002")) == 1  # lastSeq went back 3 -> 1
    report = worker.step()
    assert report.lost == 6 and report.sent == 6, report
    drive(worker, env, 4)
    env.assert_exactly_once_and_confirmed()
    assert all(reg.last_seq(env.w3, env.contract, hospital_key(h)) == 3 for h in HOSPITALS)


def test_periodic_reconciliation_finds_a_silent_loss(env_any: Env) -> None:
    """No stall, no head going back (the reorg replaced blocks at the same height): the periodic round still
    finds what the chain lost."""
    env = env_any
    submit(env, 3)
    env.seal_all()
    worker = env.worker(confirmations=1, reconcile_every=0.0)
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()
    env.mine(3)
    _reorg_below(env)
    report = worker.step()
    assert report.lost == 3
    drive(worker, env, 4)
    env.assert_exactly_once_and_confirmed()
    assert Outbox(env.store).state("bj-003", 1).status == CONFIRMED  # type: ignore[union-attr]


def test_the_same_transaction_signed_again_after_the_chain_went_back(env: Env) -> None:
    """The chain goes back to exactly where it was before the anchoring transaction (same nonce, same base
    fee): re-signing the same batches yields the very same transaction hash as the one recorded before
    (found by tests/node/test_serve_faults.py: the worker then failed every step on anchor_txs' unique hash)."""
    submit(env, 2)
    env.seal_all()
    snapshot = env.node.rpc("evm_snapshot")
    worker = env.worker(confirmations=1)
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()
    first = Outbox(env.store).state("gz-001", 1)
    assert env.node.rpc("evm_revert", snapshot) is True
    report = worker.step()
    assert report.lost == 3 and report.sent == 3, report
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()
    again = Outbox(env.store).state("gz-001", 1)
    assert first is not None and again is not None and again.tx_hash == first.tx_hash  # byte-identical
