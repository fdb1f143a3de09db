"""The database against the chain: does the registry hold every batch this node sealed, and nothing else?

Why a service and not a route: an auditor's HTTP call (``GET /v1/audit/hospitals/{hid}/consistency``), the
``mrledger audit chain`` command and a monitor all need the same answer, and the database is never trusted to
check itself: every batch is compared with the registry's ``batchOf`` (read from the node, never from a
cache) and every ``BatchAnchored`` event of the hospital with the database, so neither side can drop or
rewrite a batch unnoticed. Costs one ``eth_call`` per batch plus one log query: for audits, not polling.

No FastAPI here: failures are typed (``ChainNotConfiguredError``, ``ChainUnavailableError``,
``UnknownHospitalError``) and the HTTP layer maps them to problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.chain import ChainContext, DirectReader, Holding, registry_holds
from mrledger.anchoring.contract import BatchRecord
from mrledger.anchoring.contract_v2 import CommitRecord
from mrledger.anchoring.errors import AnchoringError
from mrledger.anchoring.registries import commitment
from mrledger.ledger import hospital_key
from mrledger.ledger.status import ON_CHAIN, BatchStatus
from mrledger.service.outcome import ChainUnavailableError
from mrledger.store import Store, UnknownHospitalError
from mrledger.store.anchor_rows import batch_status
from mrledger.store.anchors import Outbox


class ChainNotConfiguredError(AnchoringError):
    """This node has no chain to compare its database with."""


@dataclass(frozen=True, slots=True)
class MissingOnChain:
    """A database batch the registry does not hold; an ``alarm`` when the database believes it anchored."""

    seq: int
    anchor_status: BatchStatus
    alarm: bool


@dataclass(frozen=True, slots=True)
class MissingInDb:
    """A batch the registry holds (a ``BatchAnchored`` event) that the database does not: its root and size on
    a v1 registry, its commitment on a v2 one."""

    seq: int
    root: bytes | None
    size: int | None
    block_number: int
    tx_hash: str
    commitment: bytes | None = None


@dataclass(frozen=True, slots=True)
class RootMismatch:
    """The registry holds another root or size than the database for this seq (seen by ``source``)."""

    seq: int
    source: Literal["batchOf", "BatchAnchored"]
    db_root: bytes
    chain_root: bytes | None
    db_size: int
    chain_size: int | None
    #: A v2 registry: the commitment the database's batch makes, and the one the chain holds.
    db_commitment: bytes | None = None
    chain_commitment: bytes | None = None


@dataclass(frozen=True, slots=True)
class ChainConsistency:
    hospital_id: str
    chain_id: int
    contract: str
    db_batches: int
    chain_batches: int
    last_seq_chain: int
    last_seq_db: int
    missing_on_chain: tuple[MissingOnChain, ...]
    missing_in_db: tuple[MissingInDb, ...]
    root_mismatches: tuple[RootMismatch, ...]

    @property
    def consistent(self) -> bool:
        """No root mismatch, nothing on chain missing here, no alarming gap, and the chain's lastSeq is not
        ahead of the database (sealed or submitted batches not on chain yet are simply not anchored yet)."""
        return (not self.root_mismatches and not self.missing_in_db
                and not any(m.alarm for m in self.missing_on_chain) and self.last_seq_chain <= self.last_seq_db)

    def to_obj(self) -> dict[str, Any]:
        """The JSON shape of the API's ``Consistency`` and of ``mrledger audit chain --json``: roots in hex."""
        return {
            "hospital_id": self.hospital_id, "consistent": self.consistent, "chain_id": self.chain_id,
            "contract": self.contract, "db_batches": self.db_batches, "chain_batches": self.chain_batches,
            "last_seq_chain": self.last_seq_chain, "last_seq_db": self.last_seq_db,
            "missing_on_chain": [{"seq": m.seq, "anchor_status": m.anchor_status, "alarm": m.alarm}
                                 for m in self.missing_on_chain],
            "missing_in_db": [_drop_none({"seq": m.seq, "root": _hex(m.root), "size": m.size,
                                          "block_number": m.block_number, "tx_hash": m.tx_hash,
                                          "commitment": _hex(m.commitment)}) for m in self.missing_in_db],
            "root_mismatches": [_drop_none({"seq": m.seq, "source": m.source, "db_root": m.db_root.hex(),
                                            "chain_root": _hex(m.chain_root), "db_size": m.db_size,
                                            "chain_size": m.chain_size, "db_commitment": _hex(m.db_commitment),
                                            "chain_commitment": _hex(m.chain_commitment)})
                                for m in self.root_mismatches],
        }


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    """v1 entries keep their exact shape; v2 ones add commitments and have no chain root or size."""
    return {k: v for k, v in obj.items() if v is not None}


def chain_consistency(store: Store, chain: ChainContext | None, hospital_id: str) -> ChainConsistency:
    """Compare ``hospital_id``'s batches in ``store`` with the registry of ``chain``.

    A ledger upgraded in place from a v1 registry (anchoring/deploy.py ``upgrade_in_place``) holds batches in
    both: each batch is compared with the registry its anchor names (batches not anchored yet, with the
    current one), and the events of the predecessor count as well as the current registry's.

    Raises ChainNotConfiguredError (no chain), UnknownHospitalError (no such hospital here) or
    ChainUnavailableError (the node does not answer, the call reverts: no verdict without the chain)."""
    if chain is None:
        raise ChainNotConfiguredError("this node has no chain to compare the database with")
    if hospital_id not in dict(store.hospitals()):
        raise UnknownHospitalError(f"unknown hospital {hospital_id!r}")
    outbox = Outbox(store)
    heads = {h.seq: h for h in store.batches(hospital_id)}
    key = hospital_key(hospital_id)
    deployment = outbox.deployment(chain.chain_id)
    from_block = deployment.deployed_block if deployment and deployment.contract == chain.contract else 0
    try:
        direct = DirectReader(chain.w3)  # an audit reads the chain as it is now, never a cache
        version = direct.version(chain.contract)
        before = reg2.predecessor(chain.w3, chain.contract) if version == 2 else None
        on_chain: dict[int, Holding] = {}
        commitments: dict[int, bytes] = {}
        states = {seq: outbox.state(hospital_id, seq) for seq in heads}
        for seq, head in heads.items():
            state = states[seq]
            where = state.contract if state is not None and state.contract else chain.contract
            map_root = store.map_root(hospital_id, seq)
            near = state.block_number if state is not None else None
            on_chain[seq] = registry_holds(direct, where, head, map_root, near)
            commitments[seq] = commitment(head, map_root)
        events: list[Any] = (reg.anchored_events(chain.w3, before, hospital_key=key) if before else [])
        events += (reg2.anchored_events if version == 2 else reg.anchored_events)(
            chain.w3, chain.contract, from_block=from_block, hospital_key=key)
        last_chain = reg.last_seq(chain.w3, chain.contract, key)  # the same ABI on both registries
    except Exception as exc:  # connection refused, timeouts, reverts: all mean "cannot check now"
        raise ChainUnavailableError(type(exc).__name__) from exc
    missing_on_chain: list[MissingOnChain] = []
    mismatches: dict[int, RootMismatch] = {}
    missing_in_db: list[MissingInDb] = []
    for seq, head in heads.items():
        holding = on_chain[seq]
        record = holding.entry
        if record is None:
            status = batch_status(states[seq])
            missing_on_chain.append(MissingOnChain(seq, status, alarm=status in ON_CHAIN))
        elif holding.holds:
            continue
        elif isinstance(record, CommitRecord):
            mismatches[seq] = RootMismatch(seq, "batchOf", head.root, None, head.size, None, commitments[seq],
                                           record.commitment)
        else:
            mismatches[seq] = RootMismatch(seq, "batchOf", head.root, record.root, head.size, record.size)
    for e in events:
        held = heads.get(e.seq)
        if isinstance(e, reg2.AnchoredEventV2):
            if held is None:
                missing_in_db.append(MissingInDb(e.seq, None, None, e.block_number, e.tx_hash, e.commitment))
            elif e.seq not in mismatches and e.commitment != commitments[e.seq]:
                mismatches[e.seq] = RootMismatch(e.seq, "BatchAnchored", held.root, None, held.size, None,
                                                 commitments[e.seq], e.commitment)
        elif held is None:
            missing_in_db.append(MissingInDb(e.seq, e.root, e.size, e.block_number, e.tx_hash))
        elif e.seq not in mismatches and not Holding.of(BatchRecord(e.root, e.size, e.block_number), held).holds:
            mismatches[e.seq] = RootMismatch(e.seq, "BatchAnchored", held.root, e.root, held.size, e.size)
    return ChainConsistency(hospital_id, chain.chain_id, chain.contract, db_batches=len(heads),
                            chain_batches=len(events), last_seq_chain=last_chain, last_seq_db=max(heads, default=0),
                            missing_on_chain=tuple(missing_on_chain), missing_in_db=tuple(missing_in_db),
                            root_mismatches=tuple(sorted(mismatches.values(), key=lambda m: m.seq)))


__all__ = ["ChainConsistency", "ChainNotConfiguredError", "MissingInDb", "MissingOnChain", "RootMismatch",
           "chain_consistency"]
