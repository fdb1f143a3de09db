"""Reconciliation: the registry against the database, for every hospital, whatever the depth.

Why: confirmations are a promise about receipts, not a licence to stop watching. A reorg deeper than
``MRL_CONFIRMATIONS``, a chain node restarted from an older state file, or a chain reset removes anchors the
database records as ``confirmed``. The step-by-step state machine (``mrledger.anchoring.worker``) never looks at a
confirmed anchor again, and the registry's gap-free seq rule then stalls every later batch of those
hospitals, silently. This pass finds such anchors and puts them back into the state machine.

One round reads, in JSON-RPC batches pinned to one head block (``contract.read_many``):

* ``lastSeq`` of every hospital with an anchor recorded on chain. The registry is append-only and gap-free,
  so it holds (hospital, seq) exactly when seq <= lastSeq: every anchor recorded above it is **lost** and
  goes back to SEALED, to be anchored again (``Outbox.mark_lost``, with an ``anchors-lost`` alarm).
* The hash of the block at the checkpoint (the head seen by the previous round) and of every block recorded
  for an anchor above it. Block hashes chain: if the checkpoint block is unchanged, so is every block below
  it, and every anchor recorded at or below it is still where the database says. An anchor above it whose
  block changed while the registry still holds its root has **moved** (its transaction was mined again
  elsewhere): back to ``submitted``, so the next step reads its block again (``anchors-moved`` alarm).
* When the checkpoint block itself changed (a reorg deeper than the time between two rounds) or there is no
  checkpoint yet (start-up): the blocks of every anchor recorded in the last ``deep_scan`` blocks.

In the steady state a round costs one ``eth_call`` per hospital and a few block reads, so it runs every
``every`` seconds and at once when the worker sees a sign of trouble (a stalled hospital, a seq revert, a
head that went backwards, a nonce gap: ``request``).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring.errors import AnchorConflict
from mrledger.anchoring.registries import RegistryAdapter
from mrledger.ledger import hospital_key
from mrledger.store.anchor_rows import AlarmInfo, AnchorState
from mrledger.store.anchors import Outbox

log = logging.getLogger("mrledger.anchoring")

#: Blocks scanned anchor by anchor when no checkpoint vouches for them (start-up, a reorg deeper than a
#: round): ~33 hours of Ethereum, far deeper than any reorg seen there. Lost anchors are found at any depth
#: regardless (``lastSeq``); this bounds only the search for anchors re-mined in another block.
DEEP_SCAN = 10_000


@dataclass
class Findings:
    """What a round found and repaired: seqs per hospital."""

    reason: str
    lost: dict[str, list[int]] = field(default_factory=dict)
    moved: dict[str, list[int]] = field(default_factory=dict)
    resolved: list[AlarmInfo] = field(default_factory=list)
    checked: int = 0


def _span(seqs: list[int]) -> str:
    return str(seqs[0]) if seqs[0] == seqs[-1] else f"{seqs[0]}-{seqs[-1]}"


class Reconciler:
    """Runs reconciliation rounds for one worker (see the module docstring). Not thread-safe: the worker's
    thread calls it between steps."""

    def __init__(self, outbox: Outbox, w3: Web3, contract: str, *, hospitals: Collection[str] | None = None,
                 every: float = 10.0, deep_scan: int = DEEP_SCAN, confirmations: int = 1,
                 now: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic,
                 registry: Callable[[], RegistryAdapter]) -> None:
        self.outbox, self.w3, self.contract, self.hospitals = outbox, w3, contract, hospitals
        #: The worker's registry adapter (v1 or v2 ABI; ``lastSeq`` and block hashes read the same on both).
        self._registry = registry
        self.every, self.deep_scan, self.confirmations = every, deep_scan, confirmations
        self._now, self._mono = now, monotonic
        self._checkpoint: tuple[int, str] | None = None
        self._asked: str | None = "start-up"
        self._next = 0.0
        #: Rounds run and anchors found lost or moved since start (for logs and tests).
        self.rounds = 0

    def request(self, reason: str) -> None:
        """Run a round at the next step (a sign of trouble: ``reason`` goes into the log)."""
        if self._asked is None:
            self._asked = reason

    def due(self) -> bool:
        return self._asked is not None or self._mono() >= self._next

    def run(self) -> Findings:
        found = Findings(self._asked or "periodic")
        self._asked, self._next = None, self._mono() + self.every
        self.rounds += 1
        tops = {t.head.hospital_id: t for t in self.outbox.anchored_tops(self.hospitals)}
        keys = {h: hospital_key(h) for h in tops}
        cp = self._checkpoint
        candidates = self.outbox.anchored_above(cp[0], self.hospitals) if cp else []
        blocks = {a.block_number for a in candidates if a.block_number is not None} | ({cp[0]} if cp else set())
        view = reg.read_many(self.w3, self.contract, hospitals=list(keys.values()), blocks=sorted(blocks))
        hashes = dict(view.block_hashes)
        if cp is None or hashes.get(cp[0]) != cp[1]:
            if cp is not None:
                log.warning("block %d changed since the last reconciliation (%s -> %s): a reorg deeper than one "
                            "round; checking every anchor of the last %d blocks", cp[0], cp[1], hashes.get(cp[0]),
                            self.deep_scan)
            candidates = self.outbox.anchored_above(max(-1, view.head - self.deep_scan), self.hospitals)
            missing = sorted({a.block_number for a in candidates if a.block_number is not None} - set(hashes))
            if missing:
                hashes.update(reg.read_many(self.w3, self.contract, blocks=missing).block_hashes)
        found.checked = len(candidates)
        now = self._now()
        for h, top in tops.items():
            last = view.last_seq[keys[h]]
            if top.head.seq <= last:
                continue
            detail = (f"the registry holds {h} up to seq {last} at block {view.head}, the database recorded seq "
                      f"{_span([last + 1, top.head.seq])} on chain: a reorg deeper than the {self.confirmations} "
                      "confirmation(s), or a chain that went back (restored state, reset)")
            seqs = self.outbox.mark_lost(h, last, detail, now)
            if seqs:
                found.lost[h] = seqs
                log.error("anchors lost: %s; batches %s of %s will be anchored again (reconciliation: %s)", detail,
                          _span(seqs), h, found.reason)
        changed: dict[str, list[AnchorState]] = defaultdict(list)
        for a in candidates:
            h = a.head.hospital_id
            if a.head.seq <= view.last_seq.get(keys.get(h, hospital_key(h)), -1) \
                    and hashes.get(a.block_number or -1) != a.block_hash:
                changed[h].append(a)
        if changed:
            self._moved(changed, found, now)
        self._checkpoint = (view.head, view.head_hash)
        found.resolved = self.resolve()
        return found

    def resolve(self) -> list[AlarmInfo]:
        """Close the alarms whose batches are all confirmed again (the worker calls this after confirming)."""
        resolved = self.outbox.resolve_alarms(self._now())
        for alarm in resolved:
            log.warning("alarm %d resolved: %s batch %s confirmed on chain again", alarm.id, alarm.hospital_id,
                        _span([alarm.first_seq, alarm.last_seq]))
        return resolved

    def _moved(self, changed: dict[str, list[AnchorState]], found: Findings, now: datetime) -> None:
        """Anchors whose recorded block is gone although the registry holds their seq: the registry must hold
        the same root (else the ledger and the chain disagree), in another block."""
        placed = self._registry().locate_many([a.head for anchors in changed.values() for a in anchors])
        for h, anchors in changed.items():
            seqs = []
            for a in anchors:
                stored = placed.get((h, a.head.seq))
                if stored is None:
                    continue  # lost meanwhile: the next round's lastSeq finds it
                if not stored.holds:
                    raise AnchorConflict(f"registry holds {stored.what} for {h}/{a.head.seq}; the ledger has root "
                                         f"{a.head.root.hex()} size {a.head.size}")
                seqs.append(a.head.seq)
            if not seqs:
                continue
            detail = (f"the chain holds {h} batches {_span(seqs)} in other blocks than recorded (block "
                      f"{anchors[0].block_number} is gone): a reorg that re-mined their transaction")
            moved = self.outbox.mark_moved(h, seqs, detail, now)
            if moved:
                found.moved[h] = moved
                log.warning("anchors moved: %s; reading their blocks again (reconciliation: %s)", detail, found.reason)


__all__ = ["DEEP_SCAN", "Findings", "Reconciler"]
