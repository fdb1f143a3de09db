"""The anchoring outbox: per-batch anchoring state and the signed transactions that carry it.

The anchoring worker (``anchoring/worker.py``) drives the state machine; this module only persists it,
each transition one transaction, so that after a crash the database says exactly what may have reached
the chain. States of a batch: no ``anchors`` row = SEALED → ``submitted`` → ``included`` → ``confirmed``;
a reorg moves ``included`` back to ``submitted``, a lost transaction moves ``submitted`` back to SEALED, and
an anchor the chain itself lost (a reorg deeper than the confirmations, a chain reset) moves ``included`` or
``confirmed`` back to SEALED with an alarm (``anchor_alarms``) that stays open until it is confirmed again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from mrledger.ledger import BatchHead, HubPosition
from mrledger.ledger.status import CONFIRMED, INCLUDED, ON_CHAIN, SUBMITTED
from mrledger.store.anchor_rows import (
    AlarmInfo,
    AnchorState,
    DeploymentInfo,
    Found,
    NewTx,
    TxInfo,
    alarm_info,
    anchor_state,
    aware,
    tx_info,
)
from mrledger.store.models import Anchor, AnchorAlarm, AnchorTodo, AnchorTx, Batch, Deployment, Hospital
from mrledger.store.repository import Store

TX_PENDING, TX_MINED, TX_REPLACED, TX_LOST = "pending", "mined", "replaced", "lost"
#: A mined anchoring transaction that the chain no longer holds (found by reconciliation, not by a step).
TX_REORGED = "reorged"
#: An anchor not confirmed yet: few rows, found by ``anchors``' status index (``IN``, not ``<>``, so it is used).
_OPEN = Anchor.status.in_((SUBMITTED, INCLUDED))
#: Alarm kinds: anchors the chain lost (re-sent), anchors it holds in another block than recorded (re-read).
ANCHORS_LOST, ANCHORS_MOVED = "anchors-lost", "anchors-moved"
#: An anchor with its batch: what every ``AnchorState`` is built from (``anchor_rows.anchor_state``).
_SAME_BATCH = (Batch.hospital_id == Anchor.hospital_id) & (Batch.seq == Anchor.seq)


def tops_query(hospitals: Collection[str] | None = None) -> Select[Anchor, Batch]:
    """``Outbox.anchored_tops``' statement: each hospital's highest anchor on chain, found from the top of its
    primary key (a backward scan that stops at the first included or confirmed anchor) rather than by grouping
    every anchor the ledger ever recorded, which reconciliation did every 10 s (issue 20)."""
    top = (select(func.max(Anchor.seq)).where(Anchor.hospital_id == Hospital.id, Anchor.status.in_(ON_CHAIN))
           .correlate(Hospital).scalar_subquery())
    tops = select(Hospital.id.label("h"), top.label("q"))
    if hospitals is not None:
        tops = tops.where(Hospital.id.in_(list(hospitals)))
    t = tops.subquery()
    return (select(Anchor, Batch).join(t, (Anchor.hospital_id == t.c.h) & (Anchor.seq == t.c.q))
            .join(Batch, _SAME_BATCH).order_by(Anchor.hospital_id))


def above_query(block: int, hospitals: Collection[str] | None = None) -> Select[Anchor, Batch]:
    """``Outbox.anchored_above``' statement: anchors on chain in blocks above ``block``, by the block index."""
    q = (select(Anchor, Batch).join(Batch, _SAME_BATCH)
         .where(Anchor.block_number > block, Anchor.status.in_(ON_CHAIN))
         .order_by(Anchor.hospital_id, Anchor.seq))
    return q if hospitals is None else q.where(Anchor.hospital_id.in_(list(hospitals)))


def _insert_tx(s: Session, tx: NewTx, now: datetime) -> AnchorTx:
    """The row of a transaction about to be broadcast. Signatures are deterministic (RFC 6979), so after the
    chain went back (a reorg, older state) the same batches at the same nonce and fees sign to the very same
    bytes as a transaction recorded before: that row is taken up again rather than inserted twice."""
    row = s.scalar(select(AnchorTx).where(AnchorTx.tx_hash == tx.tx_hash))
    if row is not None:
        row.status, row.created_at = TX_PENDING, now
        return row
    row = AnchorTx(chain_id=tx.chain_id, contract=tx.contract, signer=tx.signer, nonce=tx.nonce,
                   tx_hash=tx.tx_hash, raw_tx=tx.raw_tx, max_fee_per_gas=tx.max_fee_per_gas,
                   max_priority_fee_per_gas=tx.max_priority_fee_per_gas, status=TX_PENDING, created_at=now)
    s.add(row)
    s.flush()
    return row


class Outbox:
    """Persistence of the anchoring state machine, on the store's database."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- deployments --------------------------------------------------------------------------------

    def record_deployment(self, chain_id: int, contract: str, deployed_block: int, admin: str, now: datetime,
                          registry_version: int = 1) -> None:
        with self._store.unit_of_work() as s:
            if s.get(Deployment, (chain_id, contract)) is None:
                s.add(Deployment(chain_id=chain_id, contract=contract, deployed_block=deployed_block, admin=admin,
                                 created_at=now, registry_version=registry_version))

    def deployment(self, chain_id: int | None = None) -> DeploymentInfo | None:
        """The most recent deployment (on ``chain_id`` if given)."""
        with self._store.read() as s:
            q = select(Deployment).order_by(Deployment.created_at.desc()).limit(1)
            if chain_id is not None:
                q = q.where(Deployment.chain_id == chain_id)
            d = s.scalar(q)
            return None if d is None else DeploymentInfo(d.chain_id, d.contract, d.deployed_block, d.admin,
                                                         d.registry_version)

    # -- reading ------------------------------------------------------------------------------------

    def sealed(self, limit: int, hospitals: Collection[str] | None = None) -> list[BatchHead]:
        """Batches with no anchoring state yet, in (hospital, seq) order — the order the chain needs. Read from
        ``anchor_todo`` (migration 0017), which holds just those: the worker asks several times a second, and an
        anti-join of every batch against every anchor grew with the ledger's age."""
        with self._store.read() as s:
            q = (select(Batch).join(AnchorTodo, (AnchorTodo.hospital_id == Batch.hospital_id)
                                    & (AnchorTodo.seq == Batch.seq))
                 .order_by(AnchorTodo.hospital_id, AnchorTodo.seq).limit(limit))
            if hospitals is not None:
                q = q.where(AnchorTodo.hospital_id.in_(list(hospitals)))
            return [BatchHead(b.hospital_id, b.seq, b.size, b.root, b.sealed_at) for b in s.scalars(q)]

    def unconfirmed(self) -> int:
        """Batches whose anchor is not confirmed yet (sealed, submitted or included): 0 means settled."""
        todo = select(func.count()).select_from(AnchorTodo).scalar_subquery()
        sent = select(func.count()).select_from(Anchor).where(_OPEN).scalar_subquery()
        with self._store.read() as s:  # one statement, one snapshot: a batch moving between the two is counted
            return int(s.scalar(select(todo + sent)) or 0)

    def states(self, status: str) -> list[AnchorState]:
        with self._store.read() as s:
            rows = s.execute(select(Anchor, Batch).join(Batch, _SAME_BATCH)
                             .where(Anchor.status == status).order_by(Anchor.hospital_id, Anchor.seq)).all()
            return [anchor_state(a, b) for a, b in rows]

    def anchored_tops(self, hospitals: Collection[str] | None = None) -> list[AnchorState]:
        """Per hospital, the highest batch the chain should hold (``included`` or ``confirmed``): what
        reconciliation compares with the registry's ``lastSeq`` every round (``tops_query``)."""
        with self._store.read() as s:
            return [anchor_state(a, b) for a, b in s.execute(tops_query(hospitals)).all()]

    def anchored_above(self, block: int, hospitals: Collection[str] | None = None) -> list[AnchorState]:
        """Anchors recorded on chain (``included`` / ``confirmed``) in blocks above ``block``: found by the
        block index (migration 0017), as reconciliation asks every round for the few mined since the last."""
        with self._store.read() as s:
            return [anchor_state(a, b) for a, b in s.execute(above_query(block, hospitals)).all()]

    def oldest_unconfirmed(self) -> datetime | None:
        """When the oldest batch whose anchor is not confirmed was sealed (None: all confirmed): from the few
        batches not anchored (``anchor_todo``) and not confirmed (by the status index), never every batch — the
        health check and the metrics ask it."""
        sealed = select(func.min(Batch.sealed_at)).join(
            AnchorTodo, (AnchorTodo.hospital_id == Batch.hospital_id) & (AnchorTodo.seq == Batch.seq))
        sent = select(func.min(Batch.sealed_at)).join(Anchor, _SAME_BATCH).where(_OPEN)
        with self._store.read() as s:  # one statement, one snapshot (as ``unconfirmed``)
            row = s.execute(select(sealed.scalar_subquery(), sent.scalar_subquery())).one()
            found = [v for v in (aware(row[0]), aware(row[1])) if v is not None]
            return min(found) if found else None

    def alarms(self, *, open_only: bool = True, limit: int = 100) -> list[AlarmInfo]:
        """Alarms, newest first (only the open ones by default)."""
        with self._store.read() as s:
            q = select(AnchorAlarm).order_by(AnchorAlarm.id.desc()).limit(limit)
            if open_only:
                q = q.where(AnchorAlarm.resolved_at.is_(None))
            return [alarm_info(a) for a in s.scalars(q)]

    def alarm_counts(self) -> tuple[int, int]:
        """(open alarms, alarms ever raised)."""
        with self._store.read() as s:
            total = int(s.scalar(select(func.count()).select_from(AnchorAlarm)) or 0)
            open_ = int(s.scalar(select(func.count()).select_from(AnchorAlarm)
                                 .where(AnchorAlarm.resolved_at.is_(None))) or 0)
            return open_, total

    def lost_anchor(self, hospital_id: str, seq: int) -> AlarmInfo | None:
        """The open alarm saying the chain lost (or moved) the anchor of (hospital, seq), if any: the
        database's knowledge that a receipt's anchor is gone and the batch is being anchored again."""
        with self._store.read() as s:
            a = s.scalar(select(AnchorAlarm).where(AnchorAlarm.hospital_id == hospital_id,
                                                   AnchorAlarm.first_seq <= seq, AnchorAlarm.last_seq >= seq,
                                                   AnchorAlarm.resolved_at.is_(None))
                         .order_by(AnchorAlarm.id.desc()).limit(1))
            return None if a is None else alarm_info(a)

    def state(self, hospital_id: str, seq: int) -> AnchorState | None:
        with self._store.read() as s:
            row = s.execute(select(Anchor, Batch).join(Batch, _SAME_BATCH)
                            .where(Anchor.hospital_id == hospital_id, Anchor.seq == seq)).first()
            return None if row is None else anchor_state(row[0], row[1])

    def latest_confirmed(self, hospital_id: str) -> AnchorState | None:
        """The hospital's highest batch whose anchor is confirmed: what a status answer is given as of."""
        with self._store.read() as s:
            row = s.execute(select(Anchor, Batch).join(Batch, _SAME_BATCH)
                            .where(Anchor.hospital_id == hospital_id, Anchor.status == CONFIRMED)
                            .order_by(Anchor.seq.desc()).limit(1)).first()
            return None if row is None else anchor_state(row[0], row[1])

    def txs(self, signer: str, status: str = TX_PENDING) -> list[TxInfo]:
        with self._store.read() as s:
            q = select(AnchorTx).where(AnchorTx.signer == signer, AnchorTx.status == status).order_by(
                AnchorTx.nonce, AnchorTx.id)
            return [tx_info(t) for t in s.scalars(q)]

    def tx(self, tx_id: int) -> TxInfo:
        with self._store.read() as s:
            row = s.get(AnchorTx, tx_id)
            assert row is not None
            return tx_info(row)

    def batches_of_tx(self, tx_id: int) -> list[tuple[str, int]]:
        with self._store.read() as s:
            return [(h, q) for h, q in s.execute(select(Anchor.hospital_id, Anchor.seq).where(Anchor.tx_id == tx_id))]

    # -- transitions --------------------------------------------------------------------------------

    def record_submission(self, tx: NewTx, batches: Sequence[tuple[str, int]], now: datetime) -> int:
        """SEALED → submitted, for all ``batches`` at once, with the signed transaction carrying them.
        Called before the transaction is broadcast."""
        with self._store.unit_of_work() as s:
            row = _insert_tx(s, tx, now)
            s.add_all(Anchor(hospital_id=h, seq=q, status=SUBMITTED, chain_id=tx.chain_id, contract=tx.contract,
                             tx_id=row.id, tx_hash=tx.tx_hash, submitted_at=now, updated_at=now) for h, q in batches)
            return row.id

    def record_replacement(self, old_id: int, tx: NewTx, now: datetime) -> int:
        """Same nonce, higher fee: the new transaction takes over the old one's batches. Either may still
        be mined; the worker learns which from the chain, not from this table."""
        with self._store.unit_of_work() as s:
            row = _insert_tx(s, tx, now)
            s.execute(update(AnchorTx).where(AnchorTx.id == old_id).values(status=TX_REPLACED))
            s.execute(update(Anchor).where(Anchor.tx_id == old_id, Anchor.status == SUBMITTED)
                      .values(tx_id=row.id, tx_hash=tx.tx_hash, updated_at=now))
            return row.id

    def mark_included(self, hospital_id: str, seq: int, *, chain_id: int, contract: str, tx_hash: str,
                      block_number: int, block_hash: str, now: datetime, hub: HubPosition | None = None,
                      registry_version: int = 1) -> None:
        """submitted (or SEALED, when the chain already holds the root after a crash) → included."""
        self.mark_included_many([Found(hospital_id, seq, tx_hash, block_number, block_hash, hub)], chain_id=chain_id,
                                contract=contract, now=now, registry_version=registry_version)

    def mark_included_many(self, found: Sequence[Found], *, chain_id: int, contract: str, now: datetime,
                           registry_version: int = 1) -> None:
        """``mark_included`` for many batches in one transaction. Why: under full ingest on SQLite every write
        transaction of the worker waits for the writer lock behind a submission; one per batch (and another
        per confirmation) let anchoring fall 100 batches and 40 s behind (scripts/chaos.py --steady-only)."""
        with self._store.unit_of_work() as s:
            mined: dict[str, AnchorTx | None] = {}
            for f in found:
                a = s.get(Anchor, (f.hospital_id, f.seq))
                if a is None:
                    a = Anchor(hospital_id=f.hospital_id, seq=f.seq, submitted_at=now)
                    s.add(a)
                a.status, a.chain_id, a.contract, a.tx_hash = INCLUDED, chain_id, contract, f.tx_hash
                a.block_number, a.block_hash, a.updated_at = f.block_number, f.block_hash, now
                a.registry_version = None if registry_version == 1 else registry_version
                a.hub_id = None if f.hub is None else f.hub.hub_id
                a.hub_index = None if f.hub is None else f.hub.index
                a.hub_path = None if f.hub is None else b"".join(f.hub.path)
                if f.tx_hash not in mined:
                    row = mined[f.tx_hash] = s.scalar(select(AnchorTx).where(AnchorTx.tx_hash == f.tx_hash))
                    if row is not None:
                        row.status = TX_MINED
                        s.execute(update(AnchorTx).where(AnchorTx.signer == row.signer, AnchorTx.nonce == row.nonce,
                                                         AnchorTx.id != row.id, AnchorTx.status == TX_PENDING)
                                  .values(status=TX_REPLACED))
                row = mined[f.tx_hash]
                if row is not None:
                    a.tx_id = row.id

    def mark_confirmed(self, hospital_id: str, seq: int, now: datetime) -> None:
        self.mark_confirmed_many([(hospital_id, seq)], now)

    def mark_confirmed_many(self, keys: Sequence[tuple[str, int]], now: datetime) -> None:
        """included → confirmed for many batches in one transaction (see ``mark_included_many``)."""
        if not keys:
            return
        with self._store.unit_of_work() as s:
            for hospital_id, seq in keys:
                s.execute(update(Anchor).where(Anchor.hospital_id == hospital_id, Anchor.seq == seq,
                                               Anchor.status == INCLUDED)
                          .values(status=CONFIRMED, confirmed_at=now, updated_at=now))

    def mark_reorged(self, hospital_id: str, seq: int, now: datetime) -> None:
        """included → submitted: the block that held the anchor is no longer canonical."""
        with self._store.unit_of_work() as s:
            a = s.get(Anchor, (hospital_id, seq))
            if a is None or a.status != INCLUDED:
                return
            a.status, a.block_number, a.block_hash, a.updated_at = SUBMITTED, None, None, now
            if a.tx_id is not None:
                s.execute(update(AnchorTx).where(AnchorTx.id == a.tx_id).values(status=TX_PENDING))

    def release(self, tx_id: int) -> list[tuple[str, int]]:
        """A transaction that can no longer be mined (its nonce was used by nothing of ours): its
        still-submitted batches go back to SEALED and will be sent again."""
        with self._store.unit_of_work() as s:
            batches = [(h, q) for h, q in s.execute(
                select(Anchor.hospital_id, Anchor.seq).where(Anchor.tx_id == tx_id, Anchor.status == SUBMITTED))]
            s.execute(delete(Anchor).where(Anchor.tx_id == tx_id, Anchor.status == SUBMITTED))
            s.execute(update(AnchorTx).where(AnchorTx.id == tx_id).values(status=TX_LOST))
            return batches

    def mark_lost(self, hospital_id: str, above_seq: int, detail: str, now: datetime) -> list[int]:
        """The chain no longer holds the anchors of ``hospital_id`` above ``above_seq`` (its ``lastSeq``):
        those recorded ``included`` or ``confirmed`` go back to SEALED — receipts stop carrying them and the
        worker sends them again — their transactions become ``reorged``, and an ``anchors-lost`` alarm is
        raised, all in one transaction. Returns the seqs moved back."""
        with self._store.unit_of_work() as s:
            rows = list(s.scalars(select(Anchor).where(Anchor.hospital_id == hospital_id, Anchor.seq > above_seq,
                                                       Anchor.status.in_(ON_CHAIN)).order_by(Anchor.seq)))
            if not rows:
                return []
            seqs = [a.seq for a in rows]
            tx_ids = {a.tx_id for a in rows if a.tx_id is not None}
            if tx_ids:
                s.execute(update(AnchorTx).where(AnchorTx.id.in_(tx_ids), AnchorTx.status == TX_MINED)
                          .values(status=TX_REORGED))
            s.execute(delete(Anchor).where(Anchor.hospital_id == hospital_id, Anchor.seq.in_(seqs)))
            s.add(AnchorAlarm(kind=ANCHORS_LOST, hospital_id=hospital_id, first_seq=seqs[0], last_seq=seqs[-1],
                              detail=detail, raised_at=now))
            return seqs

    def mark_moved(self, hospital_id: str, seqs: Sequence[int], detail: str, now: datetime) -> list[int]:
        """The registry holds these batches' roots, but not in the blocks recorded (the chain re-included
        their transaction elsewhere): back to ``submitted``, so the next step reads the block from the chain
        again; receipts stop carrying the stale block meanwhile. An ``anchors-moved`` alarm until confirmed."""
        with self._store.unit_of_work() as s:
            rows = list(s.scalars(select(Anchor).where(Anchor.hospital_id == hospital_id, Anchor.seq.in_(list(seqs)),
                                                       Anchor.status.in_(ON_CHAIN)).order_by(Anchor.seq)))
            for a in rows:
                a.status, a.block_number, a.block_hash, a.confirmed_at, a.updated_at = SUBMITTED, None, None, None, now
            if rows:
                s.add(AnchorAlarm(kind=ANCHORS_MOVED, hospital_id=hospital_id, first_seq=rows[0].seq,
                                  last_seq=rows[-1].seq, detail=detail, raised_at=now))
            return [a.seq for a in rows]

    def resolve_alarms(self, now: datetime) -> list[AlarmInfo]:
        """Close every open alarm whose batches are all confirmed again; the alarms closed. Reads first: the
        worker calls this after every confirmation, and a write transaction would queue for the writer lock."""
        closed: list[AlarmInfo] = []
        with self._store.read() as s:
            if s.scalar(select(AnchorAlarm.id).where(AnchorAlarm.resolved_at.is_(None)).limit(1)) is None:
                return closed
        with self._store.unit_of_work() as s:
            for a in s.scalars(select(AnchorAlarm).where(AnchorAlarm.resolved_at.is_(None))):
                confirmed = s.scalar(select(func.count()).select_from(Anchor).where(
                    Anchor.hospital_id == a.hospital_id, Anchor.seq >= a.first_seq, Anchor.seq <= a.last_seq,
                    Anchor.status == CONFIRMED))
                if int(confirmed or 0) == a.last_seq - a.first_seq + 1:
                    a.resolved_at = now
                    closed.append(alarm_info(a))
        return closed

    def set_tx_status(self, tx_id: int, status: str) -> None:
        with self._store.unit_of_work() as s:
            s.execute(update(AnchorTx).where(AnchorTx.id == tx_id).values(status=status))
