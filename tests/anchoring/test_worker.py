"""The anchoring worker against a real anvil node (on SQLite and PostgreSQL) and Hardhat Network (on SQLite):
anchor and confirm, crash after broadcast (kill -9), node outage (anvil only), reorg, stuck transaction
replacement, paused registry.

Every scenario ends with the same invariant: each sealed batch is on chain exactly once (one
BatchAnchored event per (hospital, seq)) and confirmed in the database with the canonical block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint, RPCResponse

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.verify import verify_on_chain
from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
from mrledger.ledger import hospital_key, verify_receipt
from mrledger.ledger.status import SUBMITTED
from mrledger.store.anchors import Outbox
from mrledger.store.locks import LockHeld, exclusive
from tests.anchoring.chain import HOSPITALS, Env, drive, submit, wait_until
from tests.conftest import db_url

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]


def test_anchor_confirm_and_verify_on_chain(env: Env) -> None:
    submit(env, 25)
    assert env.seal_all() == 9
    worker = env.worker(confirmations=3)
    first = worker.step()
    assert first.sent == 9  # one anchorMany transaction carries every due batch
    reports = drive(worker, env)
    assert sum(r.confirmed for r in reports) == 9
    env.assert_exactly_once_and_confirmed()

    receipt = env.store.receipt("qd-002", "R7")
    assert receipt is not None and receipt.anchor is not None
    assert receipt.anchor.contract == env.contract and receipt.anchor.chain_id == 31337
    assert verify_receipt(receipt.to_json()).status == "valid"
    verdict = verify_on_chain(receipt.to_json(), env.w3)
    assert verdict.status == "valid", verdict.to_obj()
    assert verdict.extra["confirmations"] >= 3

    tampered = json.loads(receipt.to_json())
    tampered["record"]["content"]["observations"][0]["value"] = 99.9
    assert verify_on_chain(tampered, env.w3).failed == "leaf-hash"
    # A receipt forged wholesale (record, leaf and path consistent, root its own) passes offline but
    # not on chain: the registry holds another root for that batch.
    forged = json.loads(receipt.to_json())
    forged["batch"]["root"] = forged["leaf"]["hash"]
    forged["audit_path"] = []
    forged["batch"]["size"] = 1
    forged["leaf"]["index"] = 0
    assert verify_receipt(forged).status == "valid"
    assert verify_on_chain(forged, env.w3).failed == "anchor-root"


def test_later_batches_follow_in_order(env: Env) -> None:
    submit(env, 5)
    env.seal_all()
    worker = env.worker()
    drive(worker, env, 4)
    submit(env, 5, start=5)
    env.seal_all()
    drive(worker, env, 4)
    env.assert_exactly_once_and_confirmed()
    assert [b.seq for b in env.store.batches("gz-001")] == [1, 2]


def test_kill_9_after_broadcast_then_restart_anchors_exactly_once(env_any: Env, engine: Engine) -> None:
    """On both registries: on v2 the restarted worker finds the hub's batches by their logs (the registry keeps no
    block per batch) and rebuilds their hub positions from the chain, not from the transaction the crash forgot."""
    env = env_any
    submit(env, 12)
    env.seal_all()
    cmd = [sys.executable, "-m", "mrledger.anchoring", "--db", db_url(engine), "--rpc", env.node.rpc_url,
           "--contract", env.contract, "--interval", "0.05"]
    proc_env = {**os.environ, "MRL_SUBMITTER_KEY": env.node.private_keys[1],
                "MRL_FAULT_INJECT": "crash-after-broadcast", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=proc_env, cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    # The transaction reached the chain, the database only knows it was submitted.
    outbox = Outbox(env.store)
    assert {s.status for h in HOSPITALS for s in [outbox.state(h, 1)] if s} == {SUBMITTED}
    assert len((reg2 if env.version == 2 else reg).anchored_events(env.w3, env.contract)) == 6
    nonce_before = env.w3.eth.get_transaction_count(env.hub.address)

    del proc_env["MRL_FAULT_INJECT"]
    restarted = subprocess.Popen(cmd, env=proc_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: outbox.unconfirmed() == 0)
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    env.assert_exactly_once_and_confirmed()
    assert env.w3.eth.get_transaction_count(env.hub.address) == nonce_before  # nothing was sent again
    receipt = env.store.receipt("bj-003", "R3")
    assert receipt is not None and receipt.anchor is not None
    assert (receipt.anchor.hub is not None) == (env.version == 2)
    assert verify_on_chain(receipt, env.w3).status == "valid"


def test_root_already_on_chain_is_recorded_not_resent(env: Env) -> None:
    submit(env, 3)
    env.seal_all()
    head = env.store.batch("gz-001", 1)
    reg.anchor(env.w3, env.contract, env.hub, hospital_key("gz-001"), 1, head.root, head.size)
    worker = env.worker()
    report = worker.step()
    assert report.included == 1 and report.sent == 2  # the other two hospitals
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()


class ReceiptLag(HTTPProvider):
    """The real node, whose receipts can be held back (``lag``), as a node under load answers for a moment after
    it mined a transaction; counts the registry's log reads."""

    lag = False
    log_reads = 0

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_getLogs":
            self.log_reads += 1
        if self.lag and method == "eth_getTransactionReceipt":
            return {"jsonrpc": "2.0", "id": 0, "result": None}
        return super().make_request(method, params)


def test_a_mined_transaction_whose_receipt_lags_is_waited_for_not_searched_for(env_any: Env) -> None:
    """Issue 20: late in a city replay the sealer spent a third of its time reading the registry's logs for
    batches its transaction's receipt named one step later. A transaction the node knows is left to its receipt;
    only one the node does not know (a replacement or a resend mined in its place) is looked up."""
    env = env_any
    submit(env, 2)
    env.seal_all()
    provider = ReceiptLag(env.node.rpc_url)
    worker = AnchorWorker(env.store, Web3(provider), env.contract, env.hub, WorkerConfig(confirmations=1))
    assert worker.step().sent == 3  # and mined at once (automine)
    provider.lag = True
    report = worker.step()
    assert (report.included, report.sent, report.rebroadcast, report.released) == (0, 0, 0, 0)
    assert provider.log_reads == 0
    outbox = Outbox(env.store)
    assert {outbox.state(h, 1).status for h in HOSPITALS} == {SUBMITTED}  # type: ignore[union-attr]
    provider.lag = False
    env.wait_mined()
    assert worker.step().included == 3  # from the receipt
    assert provider.log_reads == 0
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()


@pytest.mark.anvil_only("the node is stopped and started again on the same chain: Hardhat Network keeps no state "
                        "across a restart (anvil has --dump-state/--load-state)")
def test_node_outage_is_waited_out(env: Env) -> None:
    submit(env, 10)
    env.seal_all()
    worker = env.worker(confirmations=2)
    worker.step()
    env.node.stop()  # state is dumped; batches are submitted but not confirmed
    submit(env, 10, start=10)
    env.seal_all()
    with pytest.raises(Exception):  # noqa: B017 - a connection error of the HTTP stack
        worker.step()
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), kwargs={"interval": 0.05, "max_backoff": 0.5})
    runner.start()
    time.sleep(1.0)  # the worker retries against the dead node meanwhile
    env.node.start()  # same port, same state file
    try:
        wait_until(env.settled, timeout=180)  # the restarted node and the backlog, on a loaded 2-core CI machine
    finally:
        stop.set()
        runner.join(timeout=30)
    env.assert_exactly_once_and_confirmed()


def test_reorg_of_an_included_batch_is_detected_and_reanchored(env: Env) -> None:
    submit(env, 4)
    env.seal_all()
    worker = env.worker(confirmations=4)
    assert worker.step().sent == 3  # and mined (automine)
    env.wait_mined()
    report = worker.step()
    assert report.included == 3
    included = {h: Outbox(env.store).state(h, 1) for h in HOSPITALS}
    old_block = included["gz-001"].block_hash  # type: ignore[union-attr]
    # Replace the last block (the one holding the anchor) with an empty one.
    env.reorg(1)
    report = worker.step()
    assert report.reorged == 3
    reports = drive(worker, env, 8)
    assert sum(r.rebroadcast for r in reports) + sum(r.included for r in reports) >= 1
    env.assert_exactly_once_and_confirmed()
    assert Outbox(env.store).state("gz-001", 1).block_hash != old_block  # type: ignore[union-attr]
    receipt = env.store.receipt("gz-001", "R1")
    assert receipt is not None and verify_on_chain(receipt, env.w3).status == "valid"


def test_stuck_transaction_is_replaced_with_a_higher_fee(env: Env) -> None:
    submit(env, 2)
    env.seal_all()
    env.node.rpc("evm_setAutomine", False)
    worker = env.worker(replace_after=timedelta(0))
    assert worker.step().sent == 3
    first = Outbox(env.store).txs(env.hub.address)[0]
    report = worker.step()
    assert report.replaced == 1
    pending = Outbox(env.store).txs(env.hub.address)
    assert len(pending) == 1 and pending[0].nonce == first.nonce
    assert pending[0].max_priority_fee_per_gas > first.max_priority_fee_per_gas
    env.node.rpc("evm_setAutomine", True)
    env.mine()
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()
    mined = Outbox(env.store).txs(env.hub.address, "mined")
    assert [t.tx_hash for t in mined] == [pending[0].tx_hash]


def test_paused_registry_holds_batches_until_unpaused(env: Env) -> None:
    submit(env, 2)
    env.seal_all()
    reg.pause(env.w3, env.contract, env.admin)
    worker = env.worker()
    with pytest.raises(reg.ContractRevert) as info:
        worker.step()
    assert info.value.name == "EnforcedPause"
    assert len(Outbox(env.store).sealed(10)) == 3  # nothing recorded as submitted
    reg.unpause(env.w3, env.contract, env.admin)
    drive(worker, env, 3)
    env.assert_exactly_once_and_confirmed()


def test_a_transaction_that_reverts_once_mined_is_sent_again(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated fine, reverted when mined: the registry was paused between the simulation and the broadcast.
    anvil answers the broadcast with the hash (the receipt has status 0); Hardhat Network mines the
    transaction and answers with an error. On both the step goes on and the batches are sent again once the
    registry takes them (docs/anchoring.md, "EVM clients")."""
    submit(env, 2)
    env.seal_all()
    build = reg.build_anchor_tx

    def build_then_pause(*args: object, **kwargs: object) -> object:
        tx = build(*args, **kwargs)  # type: ignore[arg-type]
        reg.pause(env.w3, env.contract, env.admin)
        monkeypatch.setattr(reg, "build_anchor_tx", build)  # once
        return tx

    monkeypatch.setattr(reg, "build_anchor_tx", build_then_pause)
    worker = env.worker()
    assert worker.step().sent == 3  # broadcast, and mined: no error on either client
    [reverted] = Outbox(env.store).txs(env.hub.address)
    # anvil may mine it a moment after answering the broadcast (one run in four asked too early: TransactionNotFound)
    mined = env.w3.eth.wait_for_transaction_receipt(reverted.tx_hash, timeout=10)  # type: ignore[arg-type]
    assert mined["status"] == 0
    reg.unpause(env.w3, env.contract, env.admin)
    reports = drive(worker, env, 4)
    assert sum(r.released for r in reports) == 3 and sum(r.sent for r in reports) == 3
    env.assert_exactly_once_and_confirmed()


def test_one_worker_per_key(env: Env) -> None:
    name = f"anchoring-worker:{env.hub.address}"
    with exclusive(env.store.engine, name), pytest.raises(LockHeld), exclusive(env.store.engine, name):
        pass
    with exclusive(env.store.engine, name):  # released again
        pass


def test_a_cadence_holds_a_few_batches_for_the_next_transaction(env: Env) -> None:
    """``send_every`` (MRL_ANCHOR_EVERY): after a transaction, batches sealed within the cadence wait for the next
    one, which carries them all — unless ``max_items`` are due, which go at once."""
    clock = [1000.0]
    worker = env.worker(send_every=5.0, max_items=6)
    worker.monotonic = lambda: clock[0]
    submit(env, 5)
    env.seal_all()
    assert worker.step().sent == 3  # nothing sent before: the first goes at once
    drive(worker, env, 3)
    submit(env, 5, start=5)
    env.seal_all()
    clock[0] += 4.0
    assert [worker.step().sent for _ in range(3)] == [0, 0, 0]  # within the cadence: held
    clock[0] += 1.0
    assert worker.step().sent == 3  # the cadence has passed: one transaction carries all three
    drive(worker, env, 3)
    submit(env, 30, start=10)
    env.seal_all()  # three batches a hospital: nine due, more than max_items
    assert worker.step().sent == 6  # at once, though within the cadence
    clock[0] += 5.0
    drive(worker, env, 6)
    env.assert_exactly_once_and_confirmed()
