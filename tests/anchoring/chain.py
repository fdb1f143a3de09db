"""The chain environment of the anchoring tests: a real EVM node — anvil, and Hardhat Network — with the registry
deployed and three hospitals registered, a store on the ``engine`` fixture's database (SQLite and PostgreSQL),
and helpers to drive the worker and to reorganise the chain the same way on both clients. The ``env`` fixture
is registered for the whole directory by conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.hardhat_node import HardhatNode
from mrledger.anchoring.node import AnvilNode, free_port
from mrledger.anchoring.worker import AnchorWorker, StepReport, WorkerConfig
from mrledger.ledger import hospital_key
from mrledger.ledger.status import CONFIRMED, SUBMITTED
from mrledger.store import Store
from mrledger.store.anchors import Outbox
from tests.conftest import EVM_CLIENTS, TEST_KEY
from tests.store.test_repository import rec

HOSPITALS = ("gz-001", "qd-002", "bj-003")
EvmNode = AnvilNode | HardhatNode


@pytest.fixture(params=EVM_CLIENTS)
def evm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EvmNode]:
    """The node of one test: its own anvil, on a state file (so a test can restart it on the same chain), or the
    shared Hardhat Network node, rolled back after the test (tests/conftest.py, ``hardhat_rollback``)."""
    if request.param == "hardhat":
        node: HardhatNode = request.getfixturevalue("hardhat_rollback")
        yield node
        return
    with AnvilNode(state_path=tmp_path / "anvil-state.json", port=free_port(),
                   log_path=tmp_path / "anvil.log") as anvil:
        yield anvil


def checkpoint(node: EvmNode) -> None:
    """Mark the head as a point a later ``reorg`` may fork from. anvil can reorg from any block
    (``anvil_reorg``); Hardhat Network only back to a snapshot taken beforehand (anchoring/hardhat_node.py)."""
    if isinstance(node, HardhatNode):
        node.checkpoint()


def reorg(node: EvmNode, depth: int, txs: Sequence[tuple[str, int]] = ()) -> None:
    """Replace the last ``depth`` blocks by as many new ones holding ``txs`` ((raw transaction, block offset)
    pairs): ``anvil_reorg`` on anvil, snapshot/revert and re-mining on Hardhat (from a ``checkpoint``)."""
    if isinstance(node, HardhatNode):
        node.reorg(depth, txs)
    else:
        node.rpc("anvil_reorg", depth, [[raw, offset] for raw, offset in txs])


@dataclass
class Env:
    node: EvmNode
    w3: Web3
    admin: LocalAccount
    hub: LocalAccount
    contract: str
    store: Store
    version: int = 1

    def worker(self, confirmations: int = 1, **kw: object) -> AnchorWorker:
        return AnchorWorker(self.store, self.w3, self.contract, self.hub,
                            WorkerConfig(confirmations=confirmations, **kw))  # type: ignore[arg-type]

    def mine(self, n: int = 1) -> None:
        for _ in range(n):
            self.node.rpc("evm_mine")

    def settled(self) -> bool:
        """Mine a block (confirmations need blocks after an anchor), then: is nothing left unconfirmed? For
        ``wait_until`` while a worker runs in another thread."""
        self.mine()
        return Outbox(self.store).unconfirmed() == 0

    def checkpoint(self) -> None:
        checkpoint(self.node)

    def reorg(self, depth: int, txs: Sequence[tuple[str, int]] = ()) -> None:
        reorg(self.node, depth, txs)

    def wait_mined(self, timeout: float = 30) -> None:
        """Wait until the node has a receipt for every transaction the outbox holds as submitted. Why: anvil
        answers ``eth_sendRawTransaction`` before its automine has indexed the receipt (measured: 80 of 300
        receipts absent when read at once), so a test that asserts what the *next* step finds must not race it."""
        for tx_hash in {st.tx_hash for st in Outbox(self.store).states(SUBMITTED) if st.tx_hash}:
            self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)  # type: ignore[arg-type]

    def seal_all(self, max_size: int = 10) -> int:
        n = 0
        for h in HOSPITALS:
            while self.store.seal(h, max_size) is not None:
                n += 1
        return n

    def assert_exactly_once_and_confirmed(self) -> None:
        outbox = Outbox(self.store)
        events = (reg2 if self.version == 2 else reg).anchored_events(self.w3, self.contract)
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


def make_env(engine: Engine, evm: EvmNode, version: int = 1) -> Env:
    """The registry (of ABI ``version``) deployed and the hospitals registered; the head is then a
    ``checkpoint``, so a test can reorg away everything it anchored on either client."""
    w3 = Web3(Web3.HTTPProvider(evm.rpc_url))
    admin, hub = (Account.from_key(k) for k in evm.private_keys[:2])
    abi = reg2 if version == 2 else reg
    contract = abi.deploy_registry(w3, admin)
    store = Store(engine, master_key=TEST_KEY)
    for h in HOSPITALS:
        store.register_hospital(h, f"Hospital {h}")
        abi.register_hospital(w3, contract, admin, hospital_key(h), bytes(32), [hub.address])
    checkpoint(evm)
    return Env(evm, w3, admin, hub, contract, store, version)


@pytest.fixture
def env(engine: Engine, evm: EvmNode) -> Env:
    """A v1 registry (``make_env``)."""
    return make_env(engine, evm)


@pytest.fixture
def env2(engine: Engine, evm: EvmNode) -> Env:
    """A v2 registry: one commitment word per batch, hubs (``make_env``)."""
    return make_env(engine, evm, 2)


@pytest.fixture(params=[1, 2], ids=["registry-v1", "registry-v2"])
def env_any(request: pytest.FixtureRequest, engine: Engine, evm: EvmNode) -> Env:
    """Each registry in turn, for the scenarios whose outcome must not depend on what a registry stores."""
    return make_env(engine, evm, request.param)


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
