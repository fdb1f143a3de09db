"""Binding a node's status answer (``mrl-status-proof/1``) to the chain: the last step of "is this version still
current?" that must not trust the node (docs/receipt.md §17).

``ledger.status_check.check_status`` decides from the document; this module asks the registry whether the
document's batch is what the chain holds for (hospital, seq), and how long newer batches have been on chain
(service/status.py puts the two together).

What a v1 registry cannot bind: the map root. It stores (root, size) per batch, so the map root is the node's
word there; a v2 registry's one-word commitment hashes it in (statusmap ``batch_commitment_v2``), so on v2 the
map root is the chain's. ``StatusBinding.map_root_bound`` says which case a verdict stands on.

Across an in-place upgrade (anchoring/deploy.py ``upgrade_in_place``) a receipt names the v1 registry and the
document a batch on its v2 successor. Naming the receipt's registry as ``predecessor`` is not enough — anyone
can deploy a contract that says so, and register the hospital in it. What a registry of someone else's making
cannot show is the v1 registry's administration: the successor is accepted only when the transaction that
registered the hospital there (its ``HospitalRegistered`` log, in the block ``hospitalOf`` names) was sent, to
that registry, by an account holding v1's admin role (``hasRole``, readable while paused) — the account that
registers hospitals, as an upgrade does. Submitter keys are not the test: they rotate, a region's hub key may
never have been v1's, and a node's hot key is exactly what a verifier should not have to trust for this.
A document bound to a *paused* v1 registry is never
``current``: a paused v1 registry is one that was succeeded, and the verifier holding only the old address
cannot see the successor's later batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.chain import DirectReader, registry_holds
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
    #: The registry the batch is bound in (the receipt's, or its v2 successor).
    registry: str | None = None
    #: The registry is paused (a v1 registry succeeded by an upgrade): later batches may be elsewhere.
    paused: bool = False


def status_registry(w3: Web3, receipt_registry: str, doc: StatusDocument) -> str | None:
    """The registry to bind ``doc`` in: the receipt's, or the document's if it is a v2 registry that names the
    receipt's as its predecessor on chain. None: the document names any other registry."""
    if doc.anchor is None or doc.anchor.contract.lower() == receipt_registry.lower():
        return receipt_registry
    if reg2.registry_version(w3, doc.anchor.contract) != 2:
        return None
    before = reg2.predecessor(w3, doc.anchor.contract)
    return doc.anchor.contract if before is not None and before.lower() == receipt_registry.lower() else None


def bind_status(w3: Web3, registry: str, doc: StatusDocument, predecessor: str | None = None) -> StatusBinding:
    """Compare the document's batch with the registry's record of it (v1: root and size; v2: the commitment,
    which binds the map root too). ``predecessor``: the receipt's registry when ``registry`` is its successor —
    then the hospital must have been registered there by the predecessor's admin."""
    key = hospital_key(doc.hospital_id)
    reader = DirectReader(w3)
    version = reader.version(registry)
    near = None if doc.anchor is None else doc.anchor.block_number
    holding = registry_holds(reader, registry, doc.batch, doc.map_root, near)
    latest = reg.last_seq(w3, registry, key)  # the same ABI on both registries
    held = holding.entry
    if held is None or not holding.holds:
        what = "commitment (batch root, size, map root)" if version == 2 else "batch"
        return StatusBinding(False, latest, False, None, f"the registry holds another {what} {doc.batch.seq} for "
                                                         f"{doc.hospital_id} than the node's (or none)")
    if predecessor is not None and not _registered_by_admin(w3, predecessor, registry, key):
        return StatusBinding(False, latest, False, None, f"{doc.hospital_id} was not registered in {registry} by "
                                                         f"an admin of {predecessor}: not its successor")
    now = int(w3.eth.get_block("latest")["timestamp"])
    paused = version == 1 and reg.is_paused(w3, registry)
    bound = ("its commitment binds the map root" if version == 2
             else "the map root is the node's word on a v1 registry")
    return StatusBinding(True, latest, version == 2, held.anchored_block,
                         f"batch {doc.batch.seq} is on chain (block {held.anchored_block}); {bound}",
                         _age(w3, held.anchored_block, now), now, registry, paused)


def _registered_by_admin(w3: Web3, predecessor: str, registry: str, key: bytes) -> bool:
    """The transaction that registered the hospital in the successor went to it from an admin of the
    predecessor."""
    info = reg2.hospital_of(w3, registry, key)
    if not info.registered:
        return False
    logs = reg2.registry(w3, registry).events.HospitalRegistered.get_logs(
        from_block=info.registered_block, to_block=info.registered_block, argument_filters={"hospitalKey": key})
    if len(logs) != 1:
        return False
    tx = w3.eth.get_transaction(logs[0]["transactionHash"])
    to, sender = tx.get("to"), tx.get("from")
    return (to is not None and sender is not None and str(to).lower() == registry.lower()
            and reg.is_admin(w3, predecessor, str(sender)))


def newer_batch_age(w3: Web3, registry: str, doc: StatusDocument, binding: StatusBinding) -> timedelta | None:
    """How long the first batch after the document's has been on chain (None: there is none)."""
    if binding.latest_seq <= doc.batch.seq or binding.chain_time is None:
        return None
    key = hospital_key(doc.hospital_id)
    if reg2.registry_version(w3, registry) == 2:
        found = reg2.locate(w3, registry, key, doc.batch.seq + 1)
        block = None if found is None else found.anchored_block
    else:
        nxt = reg.batch_of(w3, registry, key, doc.batch.seq + 1)
        block = None if nxt is None else nxt.anchored_block
    return None if block is None else _age(w3, block, binding.chain_time)


def _age(w3: Web3, block: int, now: int) -> timedelta:
    """Chain time from ``block`` to ``now`` (a block timestamp)."""
    return timedelta(seconds=max(0, now - int(w3.eth.get_block(block)["timestamp"])))
