"""How this node reads the chain: ``DirectReader`` (the node every time) and ``CachedReader`` (cached final facts,
fresh reads for the rest), and the per-request context an event loop uses to read without waiting
(``cache_only``, ``fresh``, ``with_facts``).

Why a module of its own: what may be cached, and when the event loop may not wait on the network, is one rule
the whole node shares (chain.py builds on it: ``ChainContext``, ``registry_holds``); kept apart from the
"what the registry holds" logic, each stays readable.
"""


from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import BlockNotFound

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring._flight import LoopFlights, ThreadFlights
from mrledger.anchoring._lru import Lru
from mrledger.anchoring.contract import BatchRecord
from mrledger.anchoring.contract_v2 import CommitRecord
from mrledger.anchoring.errors import AnchoringError
from mrledger.anchoring.rpc_async import AsyncRpc, RpcError
from mrledger.ledger import hospital_key
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.receipt import HubPosition
from mrledger.ledger.statusmap import batch_commitment_v2

if TYPE_CHECKING:
    from mrledger.anchoring.health import ChainHealth
#: A block at least this deep below the head is treated as final by ``CachedReader``: its hash, and any
#: registry entry anchored in it, are cached. 12 blocks is the customary "safe" depth on Ethereum
#: (post-merge reorgs deeper than 1–2 blocks have not been observed; full finality is ~64 blocks).
FINAL_DEPTH = 12

log = logging.getLogger("mrledger.anchoring")


@dataclass(frozen=True, slots=True)
class BlockInfo:
    number: int
    hash: str  # 0x-prefixed, lower case
    timestamp: int


#: Set while a caller runs on an event loop and must not wait on the network (see ``cache_only``).
_CACHE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("mrl_cache_only", default=False)


@dataclass(frozen=True, slots=True)
class Need:
    """The chain facts a receipt's verification reads: the registry entry and the anchoring block. On a v2
    registry (``commitment`` set) the entry is the word the receipt claims, at the hub position it claims."""

    contract: str
    hospital_key: bytes
    seq: int
    block_number: int
    commitment: bytes | None = None
    hub: reg2.HubProof | None = None


class CacheMiss(AnchoringError):
    """Raised by ``CachedReader`` in cache-only mode when the answer needs a round trip to the node."""


#: Facts fetched for one request by ``CachedReader.fetch`` (see ``fresh``), by ("batch", key) / ("block", n).
_FRESH: contextvars.ContextVar[dict[tuple[Any, ...], Any] | None] = contextvars.ContextVar("mrl_fresh", default=None)


@contextmanager
def fresh(facts: dict[tuple[Any, ...], Any]) -> Iterator[None]:
    """Let ``CachedReader`` answer from ``facts`` — read from the node for this request, after it arrived —
    as well as from its caches (the event-loop path for shallow anchors, http/routes/verify.py)."""
    token = _FRESH.set(facts)
    try:
        yield
    finally:
        _FRESH.reset(token)


def in_cache_only() -> bool:
    """Whether the caller runs under ``cache_only`` (on an event loop: it must not wait on the network)."""
    return _CACHE_ONLY.get()


@contextmanager
def cache_only() -> Iterator[None]:
    """Answer from ``CachedReader``'s caches or raise ``CacheMiss``, never ask the node.

    Why: code on an event loop (``CachedReader.fetch``, which keeps what it read only when the cached head says
    it is final) must never block on the node. Nothing is half done on a miss: readers raise before any
    side effect."""
    token = _CACHE_ONLY.set(True)
    try:
        yield
    finally:
        _CACHE_ONLY.reset(token)


class ChainReader(Protocol):
    """The chain state a verification needs; implementations decide what may be cached."""

    def chain_id(self) -> int: ...

    def head(self) -> int: ...

    def block(self, number: int) -> BlockInfo | None: ...

    def batch(self, contract: str, hospital_key: bytes, seq: int) -> BatchRecord | None: ...

    def version(self, contract: str) -> int: ...

    def commit(self, contract: str, hospital_key: bytes, seq: int, near: int | None = None) -> CommitRecord | None:
        ...


#: topic0 of the v2 registry's ``BatchAnchored(bytes32 indexed hospitalKey, uint64 seq, bytes32 commitment)``.
V2_ANCHORED_TOPIC = "0x" + keccak(text="BatchAnchored(bytes32,uint64,bytes32)").hex()


def _v2_need(need: Need, batch: Any, anchor: Any) -> Need:
    """The word an mrl-receipt/2 claims, and where (raises ValueError/KeyError/TypeError on a malformed one: the
    verification proper then says what is wrong)."""
    root, size, map_root = bytes.fromhex(str(batch["root"])), int(batch["size"]), bytes.fromhex(str(anchor["map_root"]))
    hub = anchor["hub"]
    where = None if hub is None else reg2.HubProof(int(hub["id"]), int(hub["index"]),
                                                   tuple(bytes.fromhex(str(p)) for p in hub["path"]))
    if where is not None and not (0 < where.hub_id < 2**64 and 0 <= where.index < 4096 and len(where.path) <= 12
                                  and all(len(p) == 32 for p in where.path)):
        raise ValueError("hub position")
    return replace(need, commitment=batch_commitment_v2(root, size, map_root), hub=where)


def _fetch_block(w3: Web3, number: int) -> BlockInfo | None:
    try:
        block = w3.eth.get_block(number)
    except BlockNotFound:
        return None
    return BlockInfo(number, "0x" + bytes(block["hash"]).hex(), int(block["timestamp"]))


class DirectReader:
    """Asks the node every time: what a one-off verification (the CLI) wants."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def block(self, number: int) -> BlockInfo | None:
        return _fetch_block(self.w3, number)

    def batch(self, contract: str, hospital_key: bytes, seq: int) -> BatchRecord | None:
        return reg.batch_of(self.w3, contract, hospital_key, seq)

    def version(self, contract: str) -> int:
        return reg2.registry_version(self.w3, contract)

    def commit(self, contract: str, hospital_key: bytes, seq: int, near: int | None = None) -> CommitRecord | None:
        return reg2.locate(self.w3, contract, hospital_key, seq, near=near)


#: A registry entry of either ABI (both carry ``anchored_block``).
E = TypeVar("E", BatchRecord, CommitRecord)


class CachedReader:
    """A ``ChainReader`` for a long-running service: a verification of an old anchor costs no round trip.

    What is cached, and why it cannot serve a reorged-away anchor:

    * The chain id, forever: an endpoint's chain id does not change.
    * The head number, for ``max_age`` seconds (0.5 by default). Confirmations are therefore up to half
      a second stale — harmless, a confirmation count is stale by the time the doctor reads it anyway.
    * A block's hash and timestamp by number, and a registry entry (root, size, anchoring block) by
      (contract, hospital, seq) — but **only once the block is ``final_depth`` (default 12) or more below
      the head**. A reorg replaces a suffix of the chain; one shallower than ``final_depth`` cannot touch
      a cached block, so a cached hash at a number is the canonical hash at that number, and the registry
      (append-only, gap-free: an anchored (hospital, seq) is never overwritten) still holds the cached
      entry. Anchors shallower than that are asked every time, so a shallow reorg — the only kind that
      happens in practice — is seen by the very next verification. Absent batches are never cached (they
      will be anchored). A root mismatch is never hidden: the cache holds what the chain says, and every
      request still compares it with the receipt.
    * Tripwire for the assumption itself: each head refresh (once per ``max_age``, off the common path)
      re-reads the highest cached block. Block hashes chain, so if the chain below that block had changed,
      its hash would have too; on a mismatch every cache is dropped and a warning logged. Entries are only
      added at ``final_depth``, so entries fetched on both sides of a reorg would need a reorg deeper than
      ``final_depth`` — the case the tripwire catches.

    ``final_depth`` should be at least the deepest reorg the chain can plausibly suffer (and at least the
    configured confirmations, which are meant as the same promise). Thread-safe.
    """

    def __init__(self, w3: Web3, *, final_depth: int = FINAL_DEPTH, max_age: float = 0.5,
                 chain_id: int | None = None, blocks: int = 4096, batches: int = 65536,
                 clock: Callable[[], float] = time.monotonic, health: ChainHealth | None = None) -> None:
        if final_depth < 1:
            raise ValueError("final_depth must be >= 1")
        self.w3, self.final_depth, self.max_age, self.clock = w3, final_depth, max_age, clock
        #: Whether the node answers (anchoring/health.py): while it does not, the last head is served as it is
        #: (final anchors keep verifying from the caches, their confirmations a little low) and nothing waits.
        self.health = health
        self._chain_id = chain_id
        self._head: tuple[float, int] | None = None
        self._head_lock = threading.Lock()
        self._refresh = threading.Lock()
        self._blocks: Lru[int, BlockInfo] = Lru(blocks)
        self._batches: Lru[tuple[str, bytes, int], BatchRecord] = Lru(batches)
        self._commits: Lru[tuple[str, bytes, int], CommitRecord] = Lru(batches)
        self._versions: dict[str, int] = {}
        #: Reorgs detected by the tripwire (the caches were dropped); exported for tests and metrics.
        self.flushes = 0
        #: The latest background head refresh started by a ``cache_only`` caller (tests join it).
        self.refresher: threading.Thread | None = None
        #: Reads from the node that callers asking for the same facts meanwhile share (anchoring/_flight.py):
        #: worker threads' (``block``, ``batch``, ``commit``) and the event loop's (``fetch``).
        self.flights = ThreadFlights()
        self.loop_flights = LoopFlights()

    def chain_id(self) -> int:
        if self._chain_id is None:
            if _CACHE_ONLY.get():
                raise CacheMiss("the chain id is not known yet")
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def head(self, max_age: float | None = None) -> int:
        """The latest block number, at most ``max_age`` seconds old. One thread refreshes; while the cached
        number is only slightly stale the others keep using it rather than queueing behind the round trip,
        but a number far older than ``max_age`` (after an idle spell, say) is never served: then they wait
        for the refresh — otherwise a burst after idling reads "0 confirmations" for confirmed anchors.

        In ``cache_only`` mode a slightly stale number is served the same way and the refresh runs on a
        background thread. Why: raising ``CacheMiss`` there sent every request of the moment the head
        expired to a worker thread, all at once, behind one round trip — a 20–35 ms stall every
        ``max_age`` (0.5 s), which was the whole p99 of ``scripts/bench_api.py`` at 500 verifications/s."""
        age = self.max_age if max_age is None else max_age
        now = self.clock()
        with self._head_lock:
            cached = self._head
        if cached is not None and (now - cached[0] <= age or (self.health is not None and not self.health.up)):
            return cached[1]
        must_wait = cached is None or age == 0 or now - cached[0] > max(2.0, 4 * age)
        if _CACHE_ONLY.get():
            if must_wait:
                raise CacheMiss("the cached head is older than max_age")
            assert cached is not None
            if self._refresh.acquire(blocking=False):
                try:
                    self.refresher = threading.Thread(target=self._refresh_quietly, args=(now, cached, age),
                                                      name="chain-head", daemon=True)
                    self.refresher.start()
                except BaseException:
                    self._refresh.release()  # the thread that would have released it never ran
                    raise
            return cached[1]
        if not self._refresh.acquire(blocking=must_wait):
            assert cached is not None
            return cached[1]
        return self._refresh_head(now, cached, age)

    def _refresh_head(self, now: float, cached: tuple[float, int] | None, age: float) -> int:
        """Read the head from the node (the caller holds ``_refresh``; released here)."""
        try:
            with self._head_lock:
                fresh = self._head
            if fresh is not None and fresh is not cached and self.clock() - fresh[0] <= age:
                return fresh[1]  # another thread refreshed while this one waited
            number = int(self.w3.eth.block_number)
            self._tripwire(number)
            with self._head_lock:
                self._head = (now, number)
            return number
        finally:
            self._refresh.release()

    def _refresh_quietly(self, now: float, cached: tuple[float, int] | None, age: float) -> None:
        """The background refresh: a failure (node down) is logged; the next caller past the stale limit
        asks the node itself and gets the error."""
        try:
            self._refresh_head(now, cached, age)
        except Exception as exc:
            log.warning("chain head refresh failed (%s: %s)", type(exc).__name__, exc)

    def _tripwire(self, head: int) -> None:
        cached = [b for b in self._blocks.values() if b.number <= head]
        if not cached:
            return
        top = max(cached, key=lambda b: b.number)
        now = _fetch_block(self.w3, top.number)
        if now is None or now.hash != top.hash:
            log.warning("block %d changed (%s -> %s): a reorg deeper than %d blocks; dropping the chain caches",
                        top.number, top.hash, now.hash if now else None, self.final_depth)
            self.flush()

    def flush(self) -> None:
        self._blocks.clear()
        self._batches.clear()
        self._commits.clear()
        self._versions.clear()
        self.flushes += 1

    def _final(self, number: int) -> bool:
        return self.head() - number + 1 >= self.final_depth

    def block(self, number: int) -> BlockInfo | None:
        found = self._blocks.get(number)
        if found is not None:
            return found
        facts = _FRESH.get()
        if facts is not None and ("block", number) in facts:  # read for this request: as good as asking now
            found = cast(BlockInfo | None, facts["block", number])
        elif _CACHE_ONLY.get():
            raise CacheMiss(f"block {number} is not cached")
        else:
            found = self.flights.read(("block", number), lambda: _fetch_block(self.w3, number))
        if found is not None and self._final(number):
            self._blocks.put(number, found)
        return found

    def batch(self, contract: str, hospital_key: bytes, seq: int) -> BatchRecord | None:
        return self._entry("batch", self._batches, contract, hospital_key, seq,
                           lambda: reg.batch_of(self.w3, contract, hospital_key, seq))

    def version(self, contract: str) -> int:
        """The registry's ABI, kept per contract. On the event loop (``cache_only``) it is known without a round
        trip when this request's facts hold a ``batchOf`` answer of that contract: only a v1 registry answers
        ``batchOf`` (a v2 one has no such function, and the fetch fails)."""
        c = contract.lower()
        known = self._versions.get(c)
        if known is not None:
            return known
        facts = _FRESH.get()
        for kind, version in (("batch", 1), ("commit", 2)):  # only that registry answers that read
            if facts is not None and any(k[0] == kind and k[1][0] == c for k in facts):
                self._versions[c] = version
                return version
        if _CACHE_ONLY.get():
            raise CacheMiss("the registry's version is not known yet")
        version = reg2.registry_version(self.w3, contract)
        if len(self._versions) < 1024:
            self._versions[c] = version
        return version

    def commit(self, contract: str, hospital_key: bytes, seq: int, near: int | None = None) -> CommitRecord | None:
        """A v2 registry's entry: prefetched on the event loop (``fetch``) or found by its logs
        (``contract_v2.locate``, two or three round trips); cached once final, as ``batch`` is."""
        return self._entry("commit", self._commits, contract, hospital_key, seq,
                           lambda: reg2.locate(self.w3, contract, hospital_key, seq, near=near), near)

    def _entry(self, kind: str, cache: Lru[tuple[str, bytes, int], E], contract: str, hospital_key: bytes, seq: int,
               read: Callable[[], E | None], near: int | None = None) -> E | None:
        """A registry entry (``batch`` or ``commit``): from the cache, this request's facts, or the node (never in
        ``cache_only``; shared with the threads asking the same meanwhile). Cached with its anchoring block once
        final, so that the tripwire watches every block a cached entry rests on."""
        key = (contract.lower(), bytes(hospital_key), seq)
        found = cache.get(key)
        if found is not None:
            return found
        facts = _FRESH.get()
        if facts is not None and (kind, key) in facts:
            found = cast(E | None, facts[kind, key])
        elif _CACHE_ONLY.get():
            raise CacheMiss(f"batch {seq} is not cached")
        else:
            found = self.flights.read((kind, key, near), read)
        if found is not None and self._final(found.anchored_block) and self.block(found.anchored_block):
            cache.put(key, found)
        return found

    @cached_property
    def rpc(self) -> AsyncRpc | None:
        """The event-loop client for this reader's node (None: not a plain http:// endpoint)."""
        endpoint = getattr(self.w3.provider, "endpoint_uri", None)
        return AsyncRpc.for_url(str(endpoint)) if endpoint else None

    def missing(self, receipt: Any) -> Need | None:
        """What verifying the receipt document ``receipt`` (parsed JSON, not yet validated) would have to ask
        the node for: its registry entry and anchoring block, unless both are cached. None also for anything
        that does not look like an anchored receipt (the verification proper reports what is wrong)."""
        try:
            anchor, batch = receipt["anchor"], receipt["batch"]
            need = Need(str(anchor["contract"]), hospital_key(str(batch["hospital_id"])), int(batch["seq"]),
                        int(anchor["block_number"]))
            v2 = "map_root" in anchor
            if not (0 < need.seq < 2**64 and 0 <= need.block_number < 2**63):
                return None  # not a registry entry or block there can be: the verification proper refuses it
            # The cache first: this runs on the event loop for every request, and a v2 word costs a hash to compute.
            entries = self._commits if v2 else self._batches
            if (entries.get((need.contract.lower(), need.hospital_key, need.seq)) is not None
                    and self._blocks.get(need.block_number) is not None):
                return None
            return _v2_need(need, batch, anchor) if v2 else need
        except (TypeError, KeyError, ValueError, MrLedgerError):
            return None

    async def fetch(self, need: Need) -> dict[tuple[Any, ...], Any]:
        """Read ``need`` from the node on the event loop (one round trip), for ``fresh``. Facts that are final
        by the cached head go into the caches as ``batch``/``block`` would put them; the others serve this
        request only, so a shallow anchor is read from the node again for every verification that arrives after
        the last read of it (requests arriving during one share it: anchoring/_flight.py)."""
        rpc = self.rpc
        if rpc is None:
            raise CacheMiss("no event-loop client for this endpoint")
        if self.health is not None and not self.health.up:
            raise CacheMiss("the node does not answer")  # the thread path then refuses at once (ChainDown)
        return dict(await self.loop_flights.read(need, lambda: self._read(rpc, need)))

    async def _read(self, rpc: AsyncRpc, need: Need) -> dict[tuple[Any, ...], Any]:
        """``fetch``'s one round trip, and what of it is final kept in the caches."""
        key = (need.contract.lower(), bytes(need.hospital_key), need.seq)
        facts: dict[tuple[Any, ...], Any]
        if need.commitment is not None:
            facts = await self._fetch_v2(rpc, need, key)
        else:
            stored, block = await rpc.batch_and_block(need.contract, need.hospital_key, need.seq, need.block_number)
            info = None if block is None else BlockInfo(need.block_number, block[0], block[1])
            facts = {("batch", key): stored, ("block", need.block_number): info}
        # Read through ``block``/``batch``/``commit``, which keep what is final by the one rule of a read from the
        # node.
        with fresh(facts), cache_only(), contextlib.suppress(CacheMiss):  # a miss: no fresh head, keep nothing
            self.block(need.block_number)
            if need.commitment is None:
                self.batch(need.contract, need.hospital_key, need.seq)
            elif ("commit", key) in facts:
                self.commit(need.contract, need.hospital_key, need.seq)
        return facts

    async def _fetch_v2(self, rpc: AsyncRpc, need: Need, key: tuple[str, bytes, int]) -> dict[tuple[Any, ...], Any]:
        """One round trip: whether the registry holds the claimed word at the claimed place (``isAnchored``), the
        block, and the hospital's ``BatchAnchored`` logs in it (the block and transaction of the word: a v2
        registry stores no block per batch). A word the registry does not hold there yields no ``commit``
        fact: the worker thread then searches the logs (``commit``: moved by a reorg, or never anchored)."""
        assert need.commitment is not None
        where = need.hub or reg2.DIRECT
        data = reg2.registry(self.w3, need.contract).encode_abi(
            "isAnchored", [need.hospital_key, need.seq, need.commitment, where.as_arg()])
        number = hex(need.block_number)
        held, block, logs = await rpc.batch([
            ("eth_call", [{"to": need.contract, "data": data}, "latest"]),
            ("eth_getBlockByNumber", [number, False]),
            ("eth_getLogs", [{"address": need.contract, "fromBlock": number, "toBlock": number,
                              "topics": [V2_ANCHORED_TOPIC, "0x" + need.hospital_key.hex()]}])])
        try:
            info = None if block is None else BlockInfo(need.block_number, str(block["hash"]).lower(),
                                                        int(block["timestamp"], 16))
            facts: dict[tuple[Any, ...], Any] = {("block", need.block_number): info}
            if info is None or int(str(held), 16) != 1:
                return facts
            word = (need.seq.to_bytes(32, "big") + need.commitment).hex()
            tx = next((str(x["transactionHash"]) for x in logs if str(x["data"])[2:].lower() == word), None)
        except (ValueError, KeyError, TypeError) as exc:
            raise RpcError(f"unexpected answer from the node: {exc}") from exc
        if tx is not None:
            hub = None if need.hub is None else HubPosition(need.hub.hub_id, need.hub.index, need.hub.path)
            facts["commit", key] = CommitRecord(need.commitment, need.block_number, tx, hub)
        return facts


T = TypeVar("T")


def with_facts(facts: dict[tuple[Any, ...], Any], call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` with ``facts`` (from ``ChainContext.prefetch``) answering the node's reader: the thread
    the verification runs on gets what the event loop read for it (contextvars do not cross threads by
    themselves in every runner, so the facts are set on the thread that reads them)."""
    with fresh(facts):
        return call(*args)
