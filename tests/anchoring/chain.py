"""The chain environment of the anchoring tests: a real anvil with the registry deployed and three hospitals
registered, a store on the ``engine`` fixture's database (SQLite and PostgreSQL), and helpers to drive the
worker. The ``env`` fixture is registered for the whole directory by conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring.node import AnvilNode, free_port
from mrledger.anchoring.worker import AnchorWorker, StepReport, WorkerConfig
from mrledger.ledger import hospital_key
from mrledger.store import Store
from mrledger.store.anchors import CONFIRMED, Outbox
from tests.conftest import TEST_KEY
from tests.store.test_repository import rec

HOSPITALS = ("gz-001", "qd-002", "bj-003")


@dataclass
class Env:
    node: AnvilNode
    w3: Web3
    admin: LocalAccount
    hub: LocalAccount
    contract: str
    store: Store

    def worker(self, confirmations: int = 1, **kw: object) -> AnchorWorker:
        return AnchorWorker(self.store, self.w3, self.contract, self.hub,
                            WorkerConfig(confirmations=confirmations, **kw))  # type: ignore[arg-type]

    def mine(self, n: int = 1) -> None:
        for _ in range(n):
            self.node.rpc("evm_mine")

    def seal_all(self, max_size: int = 10) -> int:
        n = 0
        for h in HOSPITALS:
            while self.store.seal(h, max_size) is not None:
                n += 1
        return n

    def assert_exactly_once_and_confirmed(self) -> None:
        outbox = Outbox(self.store)
        events = reg.anchored_events(self.w3, self.contract)
        seen = [(e.hospital_key, e.seq) for e in events]
        assert len(seen) == len(set(seen)), "a batch was anchored twice"
        for h in HOSPITALS:
            for head in self.store.batches(h):
                state = outbox.state(h, head.seq)
                assert state is not None and state.status == CONFIRMED, (h, head.seq, state)
                assert (hospital_key(h), head.seq) in seen
                block = self.w3.eth.get_block(state.block_number)  # type: ignore[arg-type]
                assert "0x" + bytes(block["hash"]).hex() == state.block_hash
        assert len(seen) == sum(len(self.store.batches(h)) for h in HOSPITALS)


@pytest.fixture
def env(engine: Engine, tmp_path: Path) -> Iterator[Env]:
    node = AnvilNode(state_path=tmp_path / "anvil-state.json", port=free_port(), log_path=tmp_path / "anvil.log")
    with node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, hub = (Account.from_key(k) for k in node.private_keys[:2])
        contract = reg.deploy_registry(w3, admin)
        store = Store(engine, master_key=TEST_KEY)
        for h in HOSPITALS:
            store.register_hospital(h, f"Hospital {h}")
            reg.register_hospital(w3, contract, admin, hospital_key(h), bytes(32), [hub.address])
        yield Env(node, w3, admin, hub, contract, store)


def wait_until(done: Callable[[], bool], timeout: float = 60, tick: float = 0.1) -> None:
    """Poll ``done`` until it holds; fail with a clear message when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not done within {timeout} s"
        time.sleep(tick)


def submit(env: Env, n: int, start: int = 0) -> None:
    for h in HOSPITALS:
        env.store.submit(h, [rec(i, hospital=h) for i in range(start, start + n)])


def drive(worker: AnchorWorker, env: Env, steps: int = 12) -> list[StepReport]:
    reports = []
    for _ in range(steps):
        reports.append(worker.step())
        env.mine()
    return reports
