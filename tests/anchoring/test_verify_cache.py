"""The chain caches behind fast verification, against a real anvil and Hardhat Network: they save the round
trips they promise to save, and they never hide a reorg (shallow: seen by the very next verification; deeper
than the final depth: caught by the head-refresh tripwire) nor a root, size or block hash that differs from the
chain's.

Anchors are made the way the node makes them (store → seal → worker), on SQLite: the caches sit above the
database, so running them on PostgreSQL as well would prove nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring import readers as averify
from mrledger.anchoring.chain import CachedReader, ChainContext, DirectReader, registry_holds
from mrledger.anchoring.verify import ONCHAIN_CHECKS, verify_on_chain
from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
from mrledger.ledger import hospital_key
from mrledger.service.ledger import build_services
from mrledger.store import Store, make_engine, migrate
from mrledger.store.anchors import Outbox
from tests.anchoring.chain import Env, EvmNode
from tests.conftest import TEST_KEY
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil
DEPTH = 4  # final depth used by these tests (small, so that "deep" takes few blocks)


class Clock:
    """A monotonic clock the test advances, to expire the head cache on demand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


class Chain(Env):
    """The worker tests' environment (one hospital here), plus anchoring a few results in one go."""

    def anchor(self, n: int = 3, start: int = 0) -> list[dict[str, Any]]:
        """Submit, seal and anchor ``n`` results of gz-001; their receipts (anchor confirmed at depth 1). The head
        before is a ``checkpoint``: the tests reorg the anchor away."""
        self.checkpoint()
        self.store.submit("gz-001", [rec(i) for i in range(start, start + n)])
        self.store.seal("gz-001", 100)
        worker = AnchorWorker(self.store, self.w3, self.contract, self.hub, WorkerConfig(confirmations=1))
        for _ in range(10):
            worker.step()
            receipts = [self.store.receipt("gz-001", f"R{i}") for i in range(start, start + n)]
            if all(r is not None and r.anchor is not None for r in receipts):
                return [json.loads(r.to_json()) for r in receipts if r is not None]
        raise AssertionError("not anchored")


@pytest.fixture
def chain(evm: EvmNode, tmp_path: Path) -> Iterator[Chain]:
    yield from _chain(evm, tmp_path, 1)


@pytest.fixture
def chain2(evm: EvmNode, tmp_path: Path) -> Iterator[Chain]:
    """``chain`` on a v2 registry."""
    yield from _chain(evm, tmp_path, 2)


def _chain(evm: EvmNode, tmp_path: Path, version: int) -> Iterator[Chain]:
    w3 = Web3(Web3.HTTPProvider(evm.rpc_url))
    admin, hub = (Account.from_key(k) for k in evm.private_keys[:2])
    abi = reg2 if version == 2 else reg
    contract = abi.deploy_registry(w3, admin)
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    migrate(engine)
    store = Store(engine, master_key=TEST_KEY)
    store.register_hospital("gz-001", "Hospital gz-001")
    abi.register_hospital(w3, contract, admin, hospital_key("gz-001"), bytes(32), [hub.address])
    yield Chain(evm, w3, admin, hub, contract, store, version)
    engine.dispose()


class Counting:
    """Wraps a reader's network access (registry reads and block fetches) to count round trips."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batch_of = self.blocks = 0
        real_batch_of, real_fetch = reg.batch_of, averify._fetch_block

        def batch_of(*args: Any) -> Any:
            self.batch_of += 1
            return real_batch_of(*args)

        def fetch(*args: Any) -> Any:
            self.blocks += 1
            return real_fetch(*args)

        monkeypatch.setattr(reg, "batch_of", batch_of)
        monkeypatch.setattr(averify, "_fetch_block", fetch)


def test_registry_object_is_built_once_per_client(chain: Chain) -> None:
    first = reg.registry(chain.w3, chain.contract)
    assert reg.registry(chain.w3, chain.contract) is first
    other = Web3(Web3.HTTPProvider(chain.node.rpc_url))
    assert reg.registry(other, chain.contract) is not first  # never another client's contract object
    assert reg.registry(other, chain.contract).w3 is other


def test_final_anchor_is_served_from_cache(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    [receipt, *_] = chain.anchor()
    chain.mine(DEPTH)
    reader = CachedReader(chain.w3, final_depth=DEPTH)
    first = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert first.status == "valid", first.to_obj()
    counting = Counting(monkeypatch)
    for _ in range(5):
        again = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
        assert again.status == "valid" and again.extra["confirmations"] == first.extra["confirmations"]
    assert (counting.batch_of, counting.blocks) == (0, 0)


def test_shallow_anchor_is_asked_every_time_and_a_reorg_is_seen_at_once(chain: Chain) -> None:
    [receipt, *_] = chain.anchor()
    reader = CachedReader(chain.w3, final_depth=DEPTH)  # default max_age: the head number stays cached
    before = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert before.status == "valid" and before.extra["confirmations"] < DEPTH
    chain.reorg(1)  # the anchoring block is replaced by an empty one
    after = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    # Not on chain any more: "unanchored" (a reorg is the chain's doing, not the receipt's), at once.
    assert after.status == "unanchored" and after.failed == "anchor-root", after.to_obj()
    uncached = verify_on_chain(receipt, chain.w3)  # what an uncached check says
    assert (uncached.status, uncached.failed) == (after.status, after.failed)


def test_reorg_deeper_than_final_depth_trips_the_wire(chain: Chain) -> None:
    [receipt, *_] = chain.anchor()
    chain.mine(DEPTH)
    clock = Clock()
    reader = CachedReader(chain.w3, final_depth=DEPTH, clock=clock)
    assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"
    anchored = receipt["anchor"]["block_number"]
    chain.reorg(int(chain.w3.eth.block_number) - anchored + 1)  # the anchor is gone
    clock.tick()  # the next head refresh re-reads the highest cached block and finds it changed
    after = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert reader.flushes == 1
    assert after.status == "unanchored" and after.failed == "anchor-root", after.to_obj()


def test_cache_never_hides_a_mismatch(chain: Chain) -> None:
    receipts = chain.anchor(4)
    chain.mine(DEPTH)
    reader = CachedReader(chain.w3, final_depth=DEPTH)
    receipt = receipts[1]
    assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"

    # Forged wholesale (consistent one-leaf "batch"): passes offline, the cached on-chain root refutes it.
    forged = json.loads(json.dumps(receipt))
    forged["batch"].update(root=forged["leaf"]["hash"], size=1)
    forged.update(audit_path=[], leaf={"index": 0, "hash": forged["leaf"]["hash"]})
    assert verify_on_chain(forged, chain.w3, reader=reader, onchain_proof=False).failed == "anchor-root"
    # A block hash other than the canonical one, or the right hash at the wrong number: the registry holds
    # this root, so the result stands, but the mismatch is reported and the registry's block is the one named.
    wrong_block = json.loads(json.dumps(receipt))
    wrong_block["anchor"]["block_hash"] = "0x" + "ab" * 32
    moved = json.loads(json.dumps(receipt))
    moved["anchor"]["block_number"] -= 1
    for doc in (wrong_block, moved):
        out = verify_on_chain(doc, chain.w3, reader=reader, onchain_proof=False)
        assert out.status == "valid" and out.extra["block_number"] == receipt["anchor"]["block_number"]
        assert "no longer the receipt's block" in out.checks[-1].detail and out.extra["tx_hash"] is None
    # A batch never anchored is not cached as "absent" and is reported as such.
    unknown = json.loads(json.dumps(receipt))
    unknown["batch"]["seq"] = 99
    out = verify_on_chain(unknown, chain.w3, reader=reader, onchain_proof=False)
    assert (out.status, out.failed) == ("unanchored", "anchor-root")
    # Local and contract proof checks agree on every case.
    for doc in (receipt, forged, wrong_block, moved, unknown):
        local = verify_on_chain(doc, chain.w3, reader=reader, onchain_proof=False)
        assert (local.status, local.failed) == ((v := verify_on_chain(doc, chain.w3)).status, v.failed)


def test_readers_agree_on_confirmations(chain: Chain) -> None:
    [receipt, *_] = chain.anchor()
    chain.mine(2)
    cached = verify_on_chain(receipt, chain.w3, reader=CachedReader(chain.w3, final_depth=DEPTH))
    direct = verify_on_chain(receipt, chain.w3, reader=DirectReader(chain.w3))
    assert cached.to_obj() == direct.to_obj()
    assert [c.name for c in cached.checks][-4:] == list(ONCHAIN_CHECKS)


def test_service_verdict_follows_a_shallow_reorg(chain: Chain) -> None:
    """Through the API's Verifier, with the node's ChainContext: authentic, then pending after a reorg
    removed the anchoring block (by receipt and by record: this ledger sealed that root, so the bytes are
    genuine and the anchor is the chain's doing), without waiting for any cache to expire."""
    receipts = chain.anchor(2)
    context = ChainContext(chain.w3, chain.contract, int(chain.w3.eth.chain_id))
    ledger = build_services(chain.store, context)
    assert ledger.verification.verifier.by_receipt(receipts[0]).verdict == "authentic"
    held = rec(0).to_obj()
    assert ledger.verification.verifier.by_record("gz-001", "R0", None, held).verdict == "authentic"
    chain.reorg(1)
    assert ledger.verification.verifier.by_receipt(receipts[0]).verdict == "pending"
    assert ledger.verification.verifier.by_record("gz-001", "R0", None, held).verdict == "pending"


def test_final_depth_must_be_positive(chain: Chain) -> None:
    with pytest.raises(ValueError, match="final_depth"):
        CachedReader(chain.w3, final_depth=0)



def test_anchor_re_included_at_the_same_height_is_seen(chain: Chain) -> None:
    """The nastiest shallow reorg: the anchoring transaction is mined again at the same height, so the
    registry still holds the same root, size and block number — only the block hash tells. A hash cached
    by number at this depth would hide it."""
    [receipt, *_] = chain.anchor()
    reader = CachedReader(chain.w3, final_depth=DEPTH)
    assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"
    # The signed bytes as the worker kept them (Hardhat Network has no eth_getRawTransactionByHash).
    [raw] = [t.raw_tx for t in Outbox(chain.store).txs(chain.hub.address, "mined")
             if t.tx_hash == receipt["anchor"]["tx_hash"]]
    chain.reorg(1, [("0x" + raw.hex(), 0)])  # replace the last block by one carrying the same anchor
    stored = reg.batch_of(chain.w3, chain.contract, hospital_key("gz-001"), receipt["batch"]["seq"])
    assert stored is not None and stored.anchored_block == receipt["anchor"]["block_number"]
    after = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert after.status == "valid" and "no longer the receipt's block" in after.checks[-1].detail, after.to_obj()


def test_a_long_stale_head_is_never_served_while_another_thread_refreshes(chain: Chain) -> None:
    """Slightly stale: served at once while another thread refreshes. Long stale (an idle spell): waits for
    the refresh, so a burst after idling does not read '0 confirmations' for confirmed anchors."""
    import threading

    clock = Clock()
    reader = CachedReader(chain.w3, clock=clock, max_age=0.5)
    before = reader.head()
    chain.mine(3)
    reader._refresh.acquire()  # another thread is in the middle of a refresh
    clock.tick(1.0)  # stale, but only a little: the old number, without waiting
    assert reader.head() == before
    clock.tick(10.0)  # long stale: wait for the refresh to finish, then read the new head
    threading.Timer(0.3, reader._refresh.release).start()
    assert reader.head() == before + 3


def test_cache_only_answers_from_the_caches_or_raises_before_asking(chain: Chain,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's event-loop path: a final anchor verifies with no round trip; anything that would need one
    (a shallow anchor, a stale head) raises CacheMiss without touching the node, and the normal path then
    answers as before."""
    [receipt, *_] = chain.anchor()
    clock = Clock()
    reader = CachedReader(chain.w3, final_depth=DEPTH, clock=clock)
    with averify.cache_only(), pytest.raises(averify.CacheMiss):
        verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)  # nothing cached yet
    shallow = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert shallow.status == "valid"
    counting = Counting(monkeypatch)
    with averify.cache_only(), pytest.raises(averify.CacheMiss):  # shallow: never cached
        verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert (counting.batch_of, counting.blocks) == (0, 0)
    chain.mine(DEPTH)
    clock.tick(1.0)
    verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)  # now final: cached
    before = (counting.batch_of, counting.blocks)
    with averify.cache_only():
        final = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert final.status == "valid" and final.extra["confirmations"] >= DEPTH
    assert (counting.batch_of, counting.blocks) == before
    seen = reader.head()
    chain.mine(2)
    clock.tick(1.0)  # the head is now older than max_age, but not by much: served, refreshed in the background
    with averify.cache_only():
        assert reader.head() == seen
    assert reader.refresher is not None
    reader.refresher.join(10)
    with averify.cache_only():
        assert reader.head() == seen + 2  # the refreshed number, still without a round trip here
    clock.tick(10.0)  # long stale: never served, and an event loop must not wait for the node
    with averify.cache_only(), pytest.raises(averify.CacheMiss):
        reader.head()
    assert not averify._CACHE_ONLY.get()  # the mode ends with the block


def test_registry_holds_a_head_only_with_its_root_and_size(chain: Chain) -> None:
    """The one "registry holds this batch head" rule (anchoring/chain.py) that the verifier, both audits, the
    worker and the reconciler use: the root *and* the size must be the registry's, through either reader; a
    seq the registry has not anchored is no entry at all (not anchored yet, or removed by a reorg)."""
    chain.anchor()
    head = chain.store.batch("gz-001", 1)
    for reader in (DirectReader(chain.w3), CachedReader(chain.w3, final_depth=DEPTH)):
        held = registry_holds(reader, chain.contract, head)
        assert held.holds and held.entry is not None and (held.entry.root, held.entry.size) == (head.root, head.size)
        for other in (replace(head, size=head.size + 1), replace(head, root=bytes(32))):
            differs = registry_holds(reader, chain.contract, other)
            assert not differs.holds and differs.entry == held.entry  # what the registry holds, to report
        absent = registry_holds(reader, chain.contract, replace(head, seq=2))
        assert absent.entry is None and not absent.holds
    context = ChainContext(chain.w3, chain.contract, int(chain.w3.eth.chain_id))
    assert context.holds(head).holds and not context.holds(replace(head, size=1)).holds
