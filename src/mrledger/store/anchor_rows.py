"""What the anchoring outbox hands out (``store/anchors.py``): a batch's anchoring state, the transactions that
carry it, the alarms, the deployment — frozen values built from the rows, so no caller holds an ORM instance
outside the transaction that read it. Apart from ``Outbox`` because every layer above reads these (the worker,
reconciliation, receipts, the API's status answers) while only the worker writes through ``Outbox``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from mrledger.ledger import BatchHead, HubPosition
from mrledger.ledger.status import PENDING, SEALED, AnchorStatus, BatchStatus
from mrledger.store.models import Anchor, AnchorAlarm, AnchorTx, Batch


def batch_status(state: AnchorState | None) -> BatchStatus:
    """A batch's status from its outbox row: none means ``sealed`` (nothing sent yet)."""
    return SEALED if state is None else state.status


def version_status(batch_seq: int | None, state: AnchorState | None) -> AnchorStatus:
    """A result version's status: ``pending`` until it is sealed into a batch, then its batch's."""
    return PENDING if batch_seq is None else batch_status(state)


@dataclass(frozen=True, slots=True)
class NewTx:
    chain_id: int
    contract: str
    signer: str
    nonce: int
    tx_hash: str
    raw_tx: bytes
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


@dataclass(frozen=True, slots=True)
class TxInfo:
    id: int
    signer: str
    nonce: int
    tx_hash: str
    raw_tx: bytes
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AnchorState:
    head: BatchHead
    status: BatchStatus  # never ``sealed``: a sealed batch has no anchors row
    tx_id: int | None
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    chain_id: int | None
    contract: str | None
    submitted_at: datetime | None
    confirmed_at: datetime | None
    #: Null or 1: v1 registry; 2: v2 (hub columns set when the batch was anchored in a hub).
    registry_version: int | None = None
    hub_id: int | None = None
    hub_index: int | None = None
    hub_path: bytes | None = None


@dataclass(frozen=True, slots=True)
class Found:
    """Where the chain holds a batch's anchor."""

    hospital_id: str
    seq: int
    tx_hash: str
    block_number: int
    block_hash: str
    #: A v2 registry's hub holding the batch's commitment (None: stored alone, or a v1 registry).
    hub: HubPosition | None = None


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    id: int
    kind: str
    hospital_id: str
    first_seq: int
    last_seq: int
    detail: str
    raised_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    chain_id: int
    contract: str
    deployed_block: int
    admin: str
    registry_version: int = 1


def tx_info(row: AnchorTx) -> TxInfo:
    return TxInfo(row.id, row.signer, row.nonce, row.tx_hash, row.raw_tx, row.max_fee_per_gas,
                  row.max_priority_fee_per_gas, row.status, row.created_at)


def anchor_state(a: Anchor, b: Batch) -> AnchorState:
    head = BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at)
    return AnchorState(head, cast(BatchStatus, a.status), a.tx_id, a.tx_hash, a.block_number, a.block_hash,
                       a.chain_id, a.contract, a.submitted_at, a.confirmed_at, a.registry_version, a.hub_id,
                       a.hub_index, a.hub_path)


def alarm_info(a: AnchorAlarm) -> AlarmInfo:
    return AlarmInfo(a.id, a.kind, a.hospital_id, a.first_seq, a.last_seq, a.detail, a.raised_at, a.resolved_at)


def aware(value: datetime | str | None) -> datetime | None:
    """An aggregate over a UTC column comes back untyped (naive, or a string on SQLite)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
