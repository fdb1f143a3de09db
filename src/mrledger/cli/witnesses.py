"""``mrledger verify --witnesses K``: require K of the region's witnesses to vouch for the receipt's batch.

Why in the verifier the doctor runs: a valid receipt proves its batch is anchored and signed, not that the node
shows everyone the same history. Monitors that check every batch from outside sign checkpoints (docs/monitor.md,
``mrl-witness/1``); a verifier configured with the witnesses' public keys accepts a receipt only when K of them
cover its batch, as Certificate Transparency clients require witness cosignatures (``ledger.witness``).
"""

from __future__ import annotations

from typing import Any

from mrledger.ledger import Verdict
from mrledger.ledger.witness import WitnessError, verify_witness_checkpoints
from mrledger.service.witnesses import (
    WitnessSetupError,
    fetch_checkpoints,
    is_url,
    load_checkpoints,
    load_witness_keys,
)

__all__ = ["EXIT_NOT_WITNESSED", "WitnessSetupError", "check", "fetch_checkpoints", "is_url", "load_checkpoints",
           "load_witness_keys"]

#: Exit code of a receipt that is valid but not vouched for by enough witnesses (or that witnesses disagree on).
EXIT_NOT_WITNESSED = 4


def check(verdict: Verdict, witnesses: dict[str, bytes], documents: list[Any], k: int) -> tuple[bool, str]:
    """(vouched for, what to print) for a valid receipt's batch. A receipt without an anchor section cannot be
    placed on a deployment, so it is not vouched for."""
    r = verdict.receipt
    if r is None or r.anchor is None:
        return False, "witnesses: the receipt names no anchor to check against"
    try:
        names = verify_witness_checkpoints(documents, hospital_id=r.batch.hospital_id, seq=r.batch.seq,
                                           root=r.batch.root, chain_id=r.anchor.chain_id,
                                           contract=r.anchor.contract, witnesses=witnesses, k=k)
    except WitnessError as exc:
        return False, f"witnesses: {exc}"
    return True, f"witnesses: {', '.join(names)} vouch for batch {r.batch.seq} ({len(names)} of {k} required)"
