"""The chain this node anchors on: ``ChainContext`` (web3 client, registry, accounts, the node's ``CachedReader``)
and the one rule for what "the registry holds this batch" means (``registry_holds``, ``Holding``).

Why one module: every consumer of chain state (receipt verification, held-record verification, the
database-vs-chain audit, the KPI audit) must see the same view of the chain and the same rule, on either registry
(v1: root and size; v2: one commitment word binding them with the status-map root). How the chain is read —
the node every time (``DirectReader``, the CLI) or cached final facts (``CachedReader``, the API) — is
anchoring/readers.py, re-exported here.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3._utils.rpc_abi import RPC

from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.contract import BatchRecord
from mrledger.anchoring.contract_v2 import CommitRecord
from mrledger.anchoring.deploy import ensure_hospital_on_chain
from mrledger.anchoring.rpc_async import RpcError
from mrledger.ledger import hospital_key
from mrledger.ledger.statusmap import committed_word
from mrledger.store.locks import file_lock

if TYPE_CHECKING:
    from mrledger.anchoring.health import ChainHealth

from mrledger.anchoring.readers import (
    FINAL_DEPTH,
    BlockInfo,
    CachedReader,
    CacheMiss,
    ChainReader,
    DirectReader,
    Need,
    cache_only,
    fresh,
    in_cache_only,
    with_facts,
)


class Head(Protocol):
    """What the registry is asked about: a batch head (``mrledger.ledger.BatchHead``, or anything with its
    identity, root and size, such as an event stream's batch or a ``BatchAnchored`` event)."""

    @property
    def hospital_id(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def root(self) -> bytes: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Holding:
    """What the registry holds for a batch head's (hospital, seq), and whether it is that head.

    ``entry`` None: the registry holds nothing there (not anchored yet, or a reorg removed the anchor);
    ``holds`` False with an entry: the registry holds another root or size (v1), or another commitment (v2) —
    the database's batch, or the receipt's, is not the one anchored. Each caller words its own verdict; the
    rule is written once here."""

    entry: BatchRecord | CommitRecord | None
    holds: bool

    @classmethod
    def of(cls, entry: BatchRecord | CommitRecord | None, head: Head, map_root: bytes | None = None) -> Holding:
        """Compare a registry entry already read (a batch of them, or an event) with ``head`` (and, on a v2
        registry, the map root its commitment binds: ``EMPTY`` for a batch sealed without a map)."""
        if isinstance(entry, CommitRecord):
            return cls(entry, entry.commitment == committed_word(head.root, head.size, map_root))
        return cls(entry, entry is not None and entry.root == head.root and entry.size == head.size)

    @property
    def what(self) -> str:
        """The registry's entry in words, for a message."""
        e = self.entry
        if e is None:
            return "nothing"
        if isinstance(e, CommitRecord):
            return f"commitment {e.commitment.hex()}"
        return f"root {e.root.hex()} size {e.size}"


def registry_holds(reader: ChainReader, contract: str, head: Head, map_root: bytes | None = None,
                   near: int | None = None) -> Holding:
    """Whether registry ``contract`` holds ``head``. A v1 registry: the root *and* size stored for (hospital,
    seq) equal the head's (a root alone does not say how many leaves it covers, and a proof is checked against
    the size too). A v2 registry: the commitment anchored for (hospital, seq) is the head's with ``map_root``
    (``near``: the block the caller expects it in, looked at first). ``reader`` decides how fresh the answer is
    (``DirectReader`` for audits, the node's ``CachedReader`` for verifications, which caches final entries
    only)."""
    key = hospital_key(head.hospital_id)
    if reader.version(contract) == 2:
        return Holding.of(reader.commit(contract, key, head.seq, near), head, map_root)
    return Holding.of(reader.batch(contract, key, head.seq), head)


@dataclass
class ChainContext:
    """The chain this node anchors on: a web3 client, the registry, and the accounts it may use.

    ``reader`` is the node's cached view of the chain (``CachedReader``): head number,
    final blocks and final registry entries, shared by every verification so that checking an old
    anchor costs no round trip. ``final_depth`` is the depth from which it caches (see its docstring for
    why that cannot hide a reorg); set it to at least the chain's plausible reorg depth and at least the
    configured confirmations.
    """

    w3: Web3
    contract: str
    chain_id: int
    submitter: LocalAccount | None = None
    admin: LocalAccount | None = None
    rpc_url: str = ""
    final_depth: int = FINAL_DEPTH
    #: Locked (flock) around admin-key transactions when more than one process holds the admin key:
    #: ``mrledger serve``'s API and its sealer process (node/background.py) share one nonce sequence.
    admin_lock_file: Path | None = None
    #: Whether the node answers, probed off the request path (anchoring/health.py); None: not watched.
    health: ChainHealth | None = None
    reader: CachedReader = field(init=False, repr=False)
    _admin_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _predecessors: frozenset[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # web3 asks eth_chainId before every eth_call (validation middleware) and verify_on_chain asks it once
        # more: five round trips of a receipt check's nine. An endpoint's chain id never changes, so let the
        # provider cache exactly that request (nothing block-dependent is cached this way).
        provider = self.w3.provider
        if hasattr(provider, "cache_allowed_requests") and not provider.cache_allowed_requests:
            provider.cacheable_requests = {RPC.eth_chainId}
            provider.cache_allowed_requests = True
        self.reader = CachedReader(self.w3, final_depth=self.final_depth, chain_id=self.chain_id, health=self.health)

    def register_hospital(self, hospital_id: str, name: str, submitters: Sequence[str] = ()) -> bool:
        """Put a hospital on the registry (idempotent) with the admin key. Serialised: the API's request
        threads and the sealer share one admin nonce, and two concurrent sends would race for it — within
        this process by a thread lock, across serve's two processes by ``admin_lock_file``."""
        if self.admin is None:
            return False
        accounts = list(submitters) or ([self.submitter.address] if self.submitter else [])
        other_processes = (file_lock(self.admin_lock_file, wait=True) if self.admin_lock_file
                           else contextlib.nullcontext())
        with self._admin_lock, other_processes:
            # Under the lock the registry is read again: a registration the other process just made is seen.
            return ensure_hospital_on_chain(self.w3, self.contract, self.admin, hospital_id, name, accounts)

    def head(self, max_age: float = 0.5) -> int:
        """The latest block number, cached for ``max_age`` seconds: confirmations are reported on every
        verification, and asking the node each time would dominate the verification latency."""
        return self.reader.head(max_age)

    def batch_of(self, contract: str, hospital_key: bytes, seq: int) -> BatchRecord | None:
        """The registry's entry for (hospital, seq), cached once its block is final (``reader``)."""
        return self.reader.batch(contract, hospital_key, seq)

    async def prefetch(self, receipt: Any) -> dict[tuple[Any, ...], Any]:
        """The chain facts verifying the receipt document ``receipt`` needs and the caches lack (its registry
        entry and anchoring block: a shallow anchor), read on the event loop in one round trip
        (``CachedReader.fetch``), for ``with_facts``. Why: the verification then runs on a worker thread that does
        not wait on the node for them, and a shallow anchor is still read fresh for every request. {} when all
        is cached, the receipt names another registry (refused without a read), or the node cannot be asked
        from the loop — the verification then asks it itself, on its thread."""
        reader = self.reader
        if reader.rpc is None:
            return {}
        need = reader.missing(receipt)
        if need is None or (need.contract.lower() != self.contract.lower()
                            and need.contract.lower() not in (self._predecessors or ())):
            return {}
        try:
            return await reader.fetch(need)
        except (OSError, TimeoutError, CacheMiss, RpcError):
            return {}

    def predecessors(self) -> frozenset[str]:
        """The registries this node's registry succeeded in place (lower case; empty for a v1 registry or a v2
        one deployed fresh), as the chain says (``predecessor()``), asked once."""
        if self._predecessors is None:
            if in_cache_only():
                raise CacheMiss("the registry's predecessor is read on a worker thread")
            before = reg2.predecessor(self.w3, self.contract) if self.reader.version(self.contract) == 2 else None
            self._predecessors = frozenset({before.lower()} if before else ())
        return self._predecessors

    def holds(self, head: Head, contract: str | None = None, map_root: bytes | None = None,
              near: int | None = None) -> Holding:
        """``registry_holds`` through the node's cached reader, on this node's registry by default."""
        return registry_holds(self.reader, contract or self.contract, head, map_root, near)

    def block(self, number: int) -> BlockInfo | None:
        """Hash and timestamp of a block, cached once final; None if there is no such block (yet)."""
        return self.reader.block(number)


#: The readers (anchoring/readers.py) stay importable from here: they are this module's interface too.
__all__ = ["FINAL_DEPTH", "BlockInfo", "CacheMiss", "CachedReader", "ChainContext", "ChainReader", "DirectReader",
           "Head", "Holding", "Need", "cache_only", "fresh", "in_cache_only", "registry_holds", "with_facts"]
