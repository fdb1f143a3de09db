"""What the anchoring worker and reconciliation need of a registry, for both ABIs (``contract.py`` for v1,
``contract_v2.py`` for v2): build the transaction for the due batches, read what a mined transaction
anchored, and find where the chain holds one batch.

Why an adapter rather than branches in the worker: the state machine (write-ahead outbox, one transaction in
flight, replacement, reorg handling, reconciliation) is the same whatever the registry stores per batch; only
"what is anchored for (hospital, seq), and is it this batch" differs. A v1 registry stores (root, size) and
its block; a v2 registry stores one commitment word binding (root, size, map root), maybe inside a hub, and
says where only through its logs (``contract_v2.locate``). Each adapter answers in the same terms (``Placed``),
so the worker compares a batch with the chain the same way for both.

The commitment of a batch sealed without a status map (a store without the master key, or before migration
0013) binds ``statusmap.EMPTY`` as its map root: the v2 word must bind some map root, and a verifier reading a
receipt then sees the empty map, under which every result is absent — never a false "current".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.contract import BatchRecord
from mrledger.ledger import BatchHead, HubPosition, hospital_key
from mrledger.ledger.statusmap import committed_word


@dataclass(frozen=True, slots=True)
class Placed:
    """Where the chain holds (hospital, seq), and whether what it holds is the batch asked about."""

    tx_hash: str | None  # None: a v1 registry read (batchOf) names no transaction
    block_number: int
    holds: bool
    what: str  # the chain's entry, for an AnchorConflict message
    hub: HubPosition | None = None


#: The map root a batch commits, by (hospital, seq): ``Store.map_root``.
MapRoots = Callable[[str, int], bytes | None]


def commitment(head: BatchHead, map_root: bytes | None) -> bytes:
    """The v2 word of a batch (``statusmap.committed_word``)."""
    return committed_word(head.root, head.size, map_root)


class RegistryAdapter(Protocol):
    version: int

    def build_tx(self, heads: Sequence[BatchHead], sender: str, *, nonce: int,
                 fees: dict[str, int]) -> dict[str, Any]: ...

    def mined(self, receipt: Any, heads: Sequence[BatchHead]) -> dict[tuple[str, int], Placed]: ...

    def locate(self, head: BatchHead, near: int | None = None) -> Placed | None: ...

    def locate_many(self, heads: Sequence[BatchHead]) -> dict[tuple[str, int], Placed | None]: ...


class V1Registry:
    """``MrLedgerRegistry``: (root, size, block) per batch, ``anchorMany`` for several."""

    version = 1

    def __init__(self, w3: Web3, contract: str) -> None:
        self.w3, self.contract = w3, contract

    def build_tx(self, heads: Sequence[BatchHead], sender: str, *, nonce: int,
                 fees: dict[str, int]) -> dict[str, Any]:
        items = [reg.AnchorItem(hospital_key(h.hospital_id), h.seq, h.root, h.size) for h in heads]
        return reg.build_anchor_tx(self.w3, self.contract, sender, items, nonce=nonce, fees=fees)

    def mined(self, receipt: Any, heads: Sequence[BatchHead]) -> dict[tuple[str, int], Placed]:
        events = {(e.hospital_key, e.seq): e for e in reg.anchored_in(self.w3, self.contract, receipt)}
        out = {}
        for h in heads:
            e = events.get((hospital_key(h.hospital_id), h.seq))
            if e is not None:
                out[h.hospital_id, h.seq] = Placed(e.tx_hash, e.block_number, _same(h, e.root, e.size),
                                                   _v1(e.root, e.size))
        return out

    def locate(self, head: BatchHead, near: int | None = None) -> Placed | None:
        stored = reg.batch_of(self.w3, self.contract, hospital_key(head.hospital_id), head.seq)
        return None if stored is None else self.placed(stored, head)

    def locate_many(self, heads: Sequence[BatchHead]) -> dict[tuple[str, int], Placed | None]:
        """One JSON-RPC batch for all of them (``contract.read_many``)."""
        view = reg.read_many(self.w3, self.contract, batches=[(hospital_key(h.hospital_id), h.seq) for h in heads])
        out: dict[tuple[str, int], Placed | None] = {}
        for h in heads:
            stored = view.batches.get((hospital_key(h.hospital_id), h.seq))
            out[h.hospital_id, h.seq] = None if stored is None else self.placed(stored, h)
        return out

    @staticmethod
    def placed(stored: BatchRecord, head: BatchHead) -> Placed:
        return Placed(None, stored.anchored_block, _same(head, stored.root, stored.size),
                      _v1(stored.root, stored.size))


class V2Registry:
    """``MrLedgerRegistryV2``: one commitment word per batch, ``anchorHub`` for several (any hospitals)."""

    version = 2

    def __init__(self, w3: Web3, contract: str, map_roots: MapRoots, *, from_block: int = 0) -> None:
        self.w3, self.contract, self.map_roots, self.from_block = w3, contract, map_roots, from_block

    def commitment(self, head: BatchHead) -> bytes:
        return commitment(head, self.map_roots(head.hospital_id, head.seq))

    def build_tx(self, heads: Sequence[BatchHead], sender: str, *, nonce: int,
                 fees: dict[str, int]) -> dict[str, Any]:
        items = [reg2.HubItem(hospital_key(h.hospital_id), h.seq, self.commitment(h)) for h in heads]
        return reg2.build_anchor_tx(self.w3, self.contract, sender, items, nonce=nonce, fees=fees)

    def mined(self, receipt: Any, heads: Sequence[BatchHead]) -> dict[tuple[str, int], Placed]:
        records = reg2.anchored_in(self.w3, self.contract, receipt)
        out = {}
        for h in heads:
            rec = records.get((hospital_key(h.hospital_id), h.seq))
            if rec is not None:
                out[h.hospital_id, h.seq] = self._placed(rec, h)
        return out

    def locate(self, head: BatchHead, near: int | None = None) -> Placed | None:
        rec = reg2.locate(self.w3, self.contract, hospital_key(head.hospital_id), head.seq,
                          from_block=self.from_block, near=near)
        return None if rec is None else self._placed(rec, head)

    def locate_many(self, heads: Sequence[BatchHead]) -> dict[tuple[str, int], Placed | None]:
        """A log search per batch: only reconciliation's rare "moved" case asks for several."""
        return {(h.hospital_id, h.seq): self.locate(h) for h in heads}

    def _placed(self, rec: reg2.CommitRecord, head: BatchHead) -> Placed:
        return Placed(rec.tx_hash, rec.anchored_block, rec.commitment == self.commitment(head),
                      f"commitment {rec.commitment.hex()}", rec.hub)


def _same(head: BatchHead, root: bytes, size: int) -> bool:
    return root == head.root and size == head.size


def _v1(root: bytes, size: int) -> str:
    return f"root {root.hex()} size {size}"


def adapter_for(w3: Web3, contract: str, map_roots: MapRoots, *, from_block: int = 0) -> RegistryAdapter:
    """The adapter for the registry at ``contract``, by the ABI it answers (``contract_v2.registry_version``)."""
    if reg2.registry_version(w3, contract) == 2:
        return V2Registry(w3, contract, map_roots, from_block=from_block)
    return V1Registry(w3, contract)


__all__ = ["MapRoots", "Placed", "RegistryAdapter", "V1Registry", "V2Registry", "adapter_for", "commitment"]
