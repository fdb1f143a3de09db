"""Binding a node's status answer (``mrl-status-proof/1``) to the chain: the last step of "is this version still
current?" that must not trust the node (docs/receipt.md §17).

``ledger.status_check.check_status`` decides from the document; this module asks the registry whether the
document's batch is what the chain holds for (hospital, seq), and how long newer batches have been on chain
(service/status.py puts the two together).

What a v1 registry cannot bind: the map root. It stores (root, size) per batch, so the map root is the node's
word until the hospital anchors on a v2 registry, whose one-word commitment hashes it in (statusmap
``batch_commitment_v2``). ``StatusBinding.map_root_bound`` says which case a verdict stands on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.ledger.batch import hospital_key
from mrledger.ledger.status_check import StatusDocument


@dataclass(frozen=True, slots=True)
class StatusBinding:
    """What the chain says about a status document's batch."""

    on_chain: bool
    latest_seq: int
    map_root_bound: bool
    anchored_block: int | None
    detail: str
    #: How long ago (chain time) the document's batch was anchored: what "current as of" means.
    anchored_age: timedelta | None = None
    #: The latest block's timestamp when the binding was read: "now" on the chain, for every age.
    chain_time: int | None = None


def bind_status(w3: Web3, registry: str, doc: StatusDocument) -> StatusBinding:
    """Compare the document's batch with the registry's record of it (v1: root and size)."""
    key = hospital_key(doc.hospital_id)
    held = reg.batch_of(w3, registry, key, doc.batch.seq)
    latest = reg.last_seq(w3, registry, key)
    if held is None or held.root != doc.batch.root or held.size != doc.batch.size:
        return StatusBinding(False, latest, False, None, f"the registry holds another batch {doc.batch.seq} for "
                                                         f"{doc.hospital_id} than the node's (or none)")
    now = int(w3.eth.get_block("latest")["timestamp"])
    return StatusBinding(True, latest, False, held.anchored_block,
                         f"batch {doc.batch.seq} is on chain (block {held.anchored_block}); the map root is the "
                         "node's word on a v1 registry", _age(w3, held.anchored_block, now), now)


def newer_batch_age(w3: Web3, registry: str, doc: StatusDocument, binding: StatusBinding) -> timedelta | None:
    """How long the first batch after the document's has been on chain (None: there is none)."""
    if binding.latest_seq <= doc.batch.seq or binding.chain_time is None:
        return None
    nxt = reg.batch_of(w3, registry, hospital_key(doc.hospital_id), doc.batch.seq + 1)
    if nxt is None:
        return None
    return _age(w3, nxt.anchored_block, binding.chain_time)


def _age(w3: Web3, block: int, now: int) -> timedelta:
    """Chain time from ``block`` to ``now`` (a block timestamp)."""
    return timedelta(seconds=max(0, now - int(w3.eth.get_block(block)["timestamp"])))
