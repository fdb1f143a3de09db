"""The checks of one anchored batch against what the node publishes for it. Pure: the caller fetched both.

Each check answers a question an auditor asks of a transparency log, and each failure is a ``Finding`` with a
stable ``kind`` (the alert's name) and a human ``detail``:

=================  ==========================================================================================
``root-mismatch``  the node's head for this seq is not the anchored root/size (or names another hospital/seq)
``leaf-mismatch``  the published leaves do not re-derive the head's root (RFC 9162, ``ledger.merkle_root``)
``signature``      the head's signature is missing (when required), does not verify, does not chain to the
                   region's trust anchors, is revoked, or signs another deployment (the reason leads)
``signing-time``   the signed ``sealed_at`` does not fit the anchoring block's time (``check_signing_time``)
``status-map``     the batch's status-map root (issue 18) does not follow from the previous map and this batch's
                   leaves with the map changes the node publishes for them (``check_status_map``)
=================  ==========================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mrledger.ledger import EncodingError, SignatureError, TrustStore, merkle_root, verify_batch_signature
from mrledger.ledger.signing import MAX_SEALING_DELAY, SigningTimeError, check_signing_time
from mrledger.ledger.statusmap import EMPTY, StatusMap, StatusValue, committed_word, map_changes
from mrledger.monitor.sources import Published, PublishedMap
from mrledger.monitor.state import AnchorRow


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the monitor checks against: the chain and registry, whom signatures must chain to, and whether an
    unsigned batch is a problem."""

    chain_id: int
    contract: str
    trust: TrustStore | None = None
    require_signatures: bool = True
    max_sealing_delay: timedelta = MAX_SEALING_DELAY


def check_batch(hospital_id: str, seq: int, root: bytes, size: int, block_time: int, published: Published,
                deployment: Deployment) -> list[Finding]:
    """Everything wrong with anchored batch (``seq``, ``root``, ``size``) given what the node published for
    it; empty when it checks out. Order: the head, the leaves, then the signature (so a forged head is named
    for what it is before its signature is looked at)."""
    head, found = published.head, []
    if (head.hospital_id, head.seq) != (hospital_id, seq):
        return [Finding("root-mismatch", f"asked for {hospital_id} batch {seq}, the node answered "
                                         f"{head.hospital_id} batch {head.seq}")]
    if (head.root, head.size) != (root, size):
        found.append(Finding("root-mismatch", f"the chain anchored root {root.hex()} size {size}; the node "
                                              f"publishes root {head.root.hex()} size {head.size}"))
    leaves = published.leaves or []
    derived = merkle_root(leaves) if leaves else b""
    if len(leaves) != head.size or derived != head.root:
        found.append(Finding("leaf-mismatch", f"{len(leaves)} published leaves re-derive root "
                                              f"{derived.hex() or '-'}, the head says {head.root.hex()} "
                                              f"size {head.size}"))
    found.extend(check_signature(published, block_time, deployment))
    return found


def check_commitment(row: AnchorRow, published: Published) -> list[Finding]:
    """A v2 registry anchors one word per batch, ``SHA-256(0x04 || root || size || map root)``: the node's
    published head and map root must hash to it (the root it then names is the chain's, and ``check_batch``
    re-derives it from the leaves). Nothing to check for a v1 anchor, whose root and size are on chain."""
    if row.commitment is None:
        return []
    head = published.head
    if head.seq != row.seq:
        return [Finding("root-mismatch", f"asked for batch {row.seq}, the node answered batch {head.seq}")]
    word = committed_word(head.root, head.size, published.map_root)
    if word != row.commitment:
        return [Finding("root-mismatch", f"the chain anchored commitment {row.commitment.hex()}; the node publishes "
                                         f"root {head.root.hex()} size {head.size} map root "
                                         f"{(published.map_root or EMPTY).hex()}, which hash to {word.hex()}")]
    return []


def check_signature(published: Published, block_time: int, deployment: Deployment) -> list[Finding]:
    """The hospital's signature of the head, as ``verify_on_chain`` checks a receipt's: chain to the trust
    anchors, unrevoked (the CRLs given with ``--crl``), for this deployment, and sealed in time."""
    if deployment.trust is None:
        return []
    head, sig = published.head, published.signature
    if sig is None:
        return [Finding("signature", "signature-missing: the node publishes this batch unsigned")] \
            if deployment.require_signatures else []
    if sig.chain_id != deployment.chain_id or sig.contract.lower() != deployment.contract.lower():
        return [Finding("signature", f"signature-anchor-mismatch: signed for chain {sig.chain_id} registry "
                                     f"{sig.contract}, anchored on chain {deployment.chain_id} registry "
                                     f"{deployment.contract.lower()}")]
    try:
        verify_batch_signature(head, sig, deployment.trust)
    except SignatureError as exc:
        return [Finding("signature", str(exc))]  # "<reason>: <detail>"
    try:
        check_signing_time(head, sig, datetime.fromtimestamp(block_time, UTC), deployment.trust,
                           deployment.max_sealing_delay)
    except SigningTimeError as exc:
        return [Finding("signing-time", str(exc))]
    return []


def check_status_map(current: StatusMap, leaves: list[bytes], published: PublishedMap,
                     ) -> tuple[list[Finding], dict[bytes, StatusValue]] | None:
    """Re-derive a batch's status-map root: ``current`` (the map after the previous batch, as this monitor derived
    it) plus, per published leaf, the map change the node says it makes (docs/receipt.md §15). Applies the
    changes to ``current`` and returns the findings (``status-map``: a version changed or withdrawn without a
    leaf, or a leaf without its change, makes the roots differ) with the changes applied; None when the batch
    cannot be re-derived (a row the node has not keyed), and ``current`` is then left as it was."""
    if len(published.changes) != len(leaves):
        return [Finding("status-map", f"{len(published.changes)} map changes published for {len(leaves)} "
                                      "leaves")], {}
    if any(key is None for key, _, _ in published.changes):
        return None
    try:
        changes = map_changes(current, [(key, StatusValue(version, status, leaf))
                                        for (key, version, status), leaf in zip(published.changes, leaves,
                                                                                strict=True)])
        root = current.apply(changes)
    except EncodingError as exc:
        return [Finding("status-map", f"the published map changes do not apply: {exc}")], {}
    if published.root is not None and root != published.root:
        return [Finding("status-map", f"the map root re-derived from the previous map and this batch's leaves is "
                                      f"{root.hex()}; the node committed {published.root.hex()}")], changes
    return [], changes
