"""One pass of the monitor, and the loop around it.

A pass: (1) compare the block hashes the state recorded with the chain's, and on a mismatch roll back to the
last block still on chain (a reorg: what it replaced is read again); (2) read ``BatchAnchored`` events from
the last checked block to the head, checking each hospital's sequence is gap-free; (3) for every anchored
batch not yet checked, fetch the node's public head and leaves and run ``checks.check_batch`` — a batch the
node does not publish within ``withhold_delay`` seconds of its block is ``withheld``; (4) compare the head the
node serves with the chain (``split-view``); (5) let the witness sign each hospital's new checkpoint.

Problems are reported once each (the state remembers them), as JSON lines for an alerting system
(``Problem.to_json``) and in the log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from mrledger.ledger import hospital_key
from mrledger.ledger.statusmap import StatusMap
from mrledger.monitor.checks import Deployment, check_batch, check_commitment, check_status_map
from mrledger.monitor.sources import Chain, Node, NodeError, Published
from mrledger.monitor.state import AnchorRow, State

log = logging.getLogger("mrledger.monitor")

#: Concurrent requests for batch data (one httpx client, which is thread-safe).
FETCH_THREADS = 8

#: Every kind of problem the monitor reports (the ``kind`` of a JSON line, the label of the metric).
KINDS = ("sequence-gap", "root-mismatch", "leaf-mismatch", "signature", "signing-time", "withheld", "split-view",
         "unknown-hospital", "status-map")


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    hospital: str
    seq: int
    detail: str
    block: int | None

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "hospital": self.hospital, "seq": self.seq, "detail": self.detail,
                           "block": self.block}, sort_keys=True)


@dataclass(frozen=True, slots=True)
class PassResult:
    problems: list[Problem]
    last_block: int
    head: int
    batches_checked: int
    leaves_checked: int
    reorged: int  # anchors forgotten because a reorg replaced their blocks


class Monitor:
    """Holds nothing in memory that matters: a restart continues from the state file."""

    def __init__(self, chain: Chain, node: Node, state: State, deployment: Deployment, hospitals: Iterable[str], *,
                 from_block: int = 0, withhold_delay: float = 3600.0, clock: Callable[[], float] = time.time,
                 on_problem: Callable[[Problem], None] | None = None,
                 on_checkpoint: Callable[[str, AnchorRow], None] | None = None) -> None:
        self.chain, self.node, self.state, self.deployment = chain, node, state, deployment
        self.ids = {hospital_key(h): h for h in hospitals}
        self.from_block, self.withhold_delay, self.clock = from_block, withhold_delay, clock
        self.on_problem, self.on_checkpoint = on_problem, on_checkpoint
        #: Each hospital's re-derived status map, loaded from the state on first use (``_advance_map``).
        self._maps: dict[bytes, StatusMap] = {}
        state.bind(deployment.chain_id, deployment.contract)

    # -- the pass -----------------------------------------------------------------------------------

    def run_once(self) -> PassResult:
        found: list[Problem] = []
        reorged = self._follow_reorgs()
        head = self.chain.head()
        last = self.state.last_block()
        start = self.from_block if last is None else last + 1
        if start <= head:
            self._read_events(start, head, found)
        batches, leaves = self._check_pending(found)
        self._check_heads(found)
        self._checkpoints()
        return PassResult(found, self.state.last_block() or 0, head, batches, leaves, reorged)

    def _report(self, found: list[Problem], kind: str, hkey: bytes, seq: int, detail: str, block: int | None) -> None:
        if not self.state.note_problem(kind, hkey, seq, detail, block):
            return
        problem = Problem(kind, self.ids.get(hkey, "0x" + hkey.hex()), seq, detail, block)
        log.error("monitor problem %s", problem.to_json())
        found.append(problem)
        if self.on_problem is not None:
            self.on_problem(problem)

    def _follow_reorgs(self) -> int:
        """Roll back to the newest recorded block the chain still has. Block hashes chain, so when the newest
        recorded one is unchanged everything below it is too: one RPC call in the steady state."""
        recorded = self.state.block_hashes()
        if not recorded or self.chain.block_hash(recorded[0][0]) == recorded[0][1]:
            return 0
        keep = recorded[-1][0] - 1  # nothing recorded survived: back to below the oldest one kept
        for number, block_hash in recorded[1:]:
            if self.chain.block_hash(number) == block_hash:
                keep = number
                break
        keep = max(keep, self.from_block - 1)
        gone = self.state.rollback(keep)
        log.warning("reorg: block %d changed; rolled back to block %d and read again (%d anchors forgotten)",
                    recorded[0][0], keep, len(gone))
        return len(gone)

    def _read_events(self, start: int, head: int, found: list[Problem]) -> None:
        hashes: dict[int, str] = {}
        head_hash = self.chain.block_hash(head)
        events = self.chain.anchored(start, head)
        for e in events:
            previous = self.state.last_anchor(e.hospital_key)
            # After an in-place upgrade a hospital's first batch here follows its last in the predecessor.
            expected = self.chain.carried(e.hospital_key) + 1 if previous is None else previous.seq + 1
            if e.seq != expected and (previous is not None or self.from_block == 0):
                self._report(found, "sequence-gap", e.hospital_key, e.seq,
                             f"anchored seq {e.seq} after seq {expected - 1}", e.block)
            self.state.add_anchor(e.hospital_key, e.seq, e.root, e.size, e.block, self.chain.block_time(e.block_hash),
                                  e.commitment)
            hashes[e.block] = e.block_hash
        if head_hash is not None:
            hashes[head] = head_hash
        self.state.record_blocks(hashes, head)

    def _check_pending(self, found: list[Problem]) -> tuple[int, int]:
        batches = leaves = 0
        rows = self.state.pending()
        for row in rows:
            if row.hkey not in self.ids:
                self._report(found, "unknown-hospital", row.hkey, row.seq, "anchored for a hospital key that no "
                             "configured hospital id hashes to: add it with --hospital", row.block)
        rows = [row for row in rows if row.hkey in self.ids]

        def fetch(row: AnchorRow) -> Published | NodeError | None:
            try:
                return self.node.leaves(self.ids[row.hkey], row.seq)
            except NodeError as exc:
                return exc

        # Fetched FETCH_THREADS at a time (a pass over a remote node is round trips, not hashing), in slices so
        # that a first pass over a long history holds a bounded number of batches' leaves in memory.
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            for start in range(0, len(rows), 16 * FETCH_THREADS):
                chunk = rows[start:start + 16 * FETCH_THREADS]
                for row, answer in zip(chunk, pool.map(fetch, chunk), strict=True):
                    self._check_row(found, row, answer)
                    if isinstance(answer, Published):
                        batches += 1
                        leaves += len(answer.leaves or ())
        return batches, leaves

    def _check_row(self, found: list[Problem], row: AnchorRow, answer: Published | NodeError | None) -> None:
        hid = self.ids[row.hkey]
        if isinstance(answer, NodeError):
            log.warning("cannot read %s batch %d from the node: %s", hid, row.seq, answer)
            published, why = None, str(answer)
        else:
            published, why = answer, "the node answers 404"
        if published is None:
            waited = self.clock() - row.block_time
            if waited >= self.withhold_delay:
                self._report(found, "withheld", row.hkey, row.seq, f"anchored {waited:.0f} s ago, not published "
                             f"(limit {self.withhold_delay:g} s): {why}", row.block)
            return
        findings = check_commitment(row, published)
        if not findings and row.commitment is not None:
            # The node's head hashes to the word the chain holds: its root and size are the chain's now.
            self.state.resolve(row.hkey, row.seq, published.head.root, published.head.size)
            row = replace(row, root=published.head.root, size=published.head.size)
        findings = findings or check_batch(hid, row.seq, row.root, row.size, row.block_time, published,
                                           self.deployment)
        for f in findings:
            self._report(found, f.kind, row.hkey, row.seq, f.detail, row.block)
        self.state.set_status(row.hkey, row.seq, "problem" if findings else "ok")
        if not findings:
            self._advance_map(found, row.hkey, {row.seq: published})

    def _advance_map(self, found: list[Problem], hkey: bytes, fetched: dict[int, Published]) -> None:
        """Re-derive the hospital's status map batch by batch, from the one after the last this monitor applied,
        through every batch whose check passed (a batch in problem or not yet published stops it: the next map
        can only be derived from a trusted previous one, and so does a batch whose root does not re-derive).
        Needs the node token (map changes are not public);
        without it, or while the node does not answer, nothing is derived and the next pass tries again."""
        if self.node.token is None:
            return
        hid = self.ids[hkey]
        current = self._maps.get(hkey)
        if current is None:
            current = self._maps[hkey] = StatusMap(self.state.map_entries(hkey))
        seq = self.state.map_seq(hkey) + 1
        while (row := self.state.anchor(hkey, seq)) is not None and row.status == "ok":
            try:
                published = fetched.get(seq) or self.node.leaves(hid, seq)
                answer = None if published is None else self.node.map(hid, seq)
            except NodeError as exc:
                log.warning("cannot read %s batch %d's map from the node: %s", hid, seq, exc)
                return
            if published is None or answer is None:
                return
            checked = check_status_map(current, published.leaves or [], answer)
            if checked is None:
                log.warning("%s batch %d has rows the node has not keyed: its map is not re-derived", hid, seq)
                return
            findings, changes = checked
            if findings:
                # The history diverges here: later roots would differ for this one reason, so the map stops at
                # the last batch that re-derived (as a transparency log's monitor stops at an inconsistency);
                # it is re-derived from the state, unchanged, and this batch is retried on every pass.
                for f in findings:
                    self._report(found, f.kind, hkey, seq, f.detail, row.block)
                del self._maps[hkey]
                return
            self.state.save_map(hkey, seq, changes)
            seq += 1

    def _check_heads(self, found: list[Problem]) -> None:
        """Split view: the head the node serves as its latest lags behind what it publishes batch by batch (the
        chain's latest batch is published and checked, yet the head is older), or differs from a batch it
        published and the chain holds. A head ahead of the chain is normal (sealed, not yet anchored)."""
        for hkey, hid in self.ids.items():
            latest = self.state.last_anchor(hkey)
            if latest is None:
                continue
            try:
                served = self.node.head(hid)
            except NodeError as exc:
                log.warning("cannot read %s's head from the node: %s", hid, exc)
                continue
            if served is None or served.head.seq < latest.seq:
                if latest.status == "ok":
                    seq = 0 if served is None else served.head.seq
                    self._report(found, "split-view", hkey, latest.seq, f"the node serves head seq {seq} while "
                                 f"the chain holds, and the node publishes, batch {latest.seq}", latest.block)
                continue
            row = self.state.anchor(hkey, served.head.seq)
            if row is not None and row.status == "ok" and row.resolved \
                    and (row.root, row.size) != (served.head.root, served.head.size):
                self._report(found, "split-view", hkey, row.seq, f"the node's head for seq {row.seq} has root "
                             f"{served.head.root.hex()}; its batch data and the chain say {row.root.hex()}", row.block)

    def _checkpoints(self) -> None:
        if self.on_checkpoint is None:
            return
        for hkey, hid in self.ids.items():
            row = self.state.checkpoint(hkey)
            if row is not None:
                self.on_checkpoint(hid, row)
