"""Is a receipt's version still current, by a node's status document and the chain (docs/receipt.md §17).

The verdict stands on two checks that must both hold: the document against the receipt (``ledger.status_check``:
the key, the map proof, the versions) and the document's batch against the registry (``anchoring.status``). A
node that serves an old map to hide a correction is caught by the second: once the hospital's next batch has been
on chain for longer than ``grace``, the answer is ``stale``, never ``current``. Why a grace at all: a node answers
as of its latest *confirmed* batch, so a batch still gathering confirmations is not a lie.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from web3 import Web3

from mrledger.anchoring.status import StatusBinding, bind_status, newer_batch_age, status_registry
from mrledger.ledger.receipt import Receipt
from mrledger.ledger.status_check import StatusDocument, StatusVerdict, check_status

DEFAULT_GRACE = timedelta(minutes=10)


def verify_status(w3: Web3, receipt: Receipt, doc: StatusDocument, *,
                  grace: timedelta = DEFAULT_GRACE) -> tuple[StatusVerdict, StatusBinding | None]:
    """The receipt's status from the document and the chain. The document's anchor names the registry only
    if it matches the receipt's (a node cannot point the verifier at a registry of its own)."""
    verdict = check_status(receipt, doc)
    if verdict.kind in ("invalid", "unknown") or receipt.anchor is None:
        return verdict, None
    registry = status_registry(w3, receipt.anchor.contract, doc)
    if registry is None or (doc.anchor is not None and doc.anchor.chain_id != receipt.anchor.chain_id):
        return StatusVerdict("invalid", None, doc.batch.seq, "the status proof names another registry than the "
                                                              "receipt's (or its v2 successor)"), None
    successor = registry.lower() != receipt.anchor.contract.lower()
    binding = bind_status(w3, registry, doc, receipt.anchor.contract if successor else None)
    if not binding.on_chain:
        return StatusVerdict("invalid", None, doc.batch.seq, binding.detail), binding
    if binding.paused and verdict.kind == "current":
        return StatusVerdict("stale", None, doc.batch.seq, f"the status is as of batch {doc.batch.seq} in registry "
                                                           f"{registry}, which is paused (succeeded by an upgrade): "
                                                           "ask for the status in its successor"), binding
    age = newer_batch_age(w3, registry, doc, binding)
    if age is not None and age > grace:
        return StatusVerdict("stale", None, doc.batch.seq, f"the node answers as of batch {doc.batch.seq}, but batch "
                                                           f"{doc.batch.seq + 1} has been on chain for "
                                                           f"{int(age.total_seconds())} s: it hides a newer status"
                             ), binding
    if verdict.kind == "current" and binding.anchored_age is not None:
        later = ("the chain holds no later batch" if binding.latest_seq <= doc.batch.seq else
                 f"batch {binding.latest_seq} is on chain for less than {int(grace.total_seconds())} s")
        verdict = StatusVerdict("current", verdict.version, verdict.as_of, f"{verdict.detail}, anchored "
                                f"{_ago(binding.anchored_age)} ago; {later}")
    return verdict, binding


def _ago(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def binding_obj(binding: StatusBinding | None) -> dict[str, Any] | None:
    if binding is None:
        return None
    return {"on_chain": binding.on_chain, "latest_seq": binding.latest_seq, "map_root_bound": binding.map_root_bound,
            "anchored_block": binding.anchored_block, "detail": binding.detail, "registry": binding.registry,
            "anchored_age_s": None if binding.anchored_age is None else int(binding.anchored_age.total_seconds())}
