"""The anchoring worker: every sealed batch ends up anchored exactly once, across crashes, node outages,
stuck transactions and reorgs.

Why it is safe:
- **The chain is the source of truth.** Before sending, and whenever a batch's fate is unclear, the
  worker reads what the registry holds for (hospital, seq) — ``batchOf`` on a v1 registry, the
  ``BatchAnchored`` logs on a v2 one (anchoring/registries.py). If the root is already there (a crash after a
  broadcast, another instance), it records that anchor instead of sending again; and the contract's
  gap-free ``seq`` rule makes any duplicate send revert harmlessly.
- **Write-ahead of the transaction.** A transaction is signed and stored (outbox) *before* it is
  broadcast, so after a crash at any point the worker finds it and rebroadcasts the same bytes (same
  hash, same nonce) instead of minting a second one.
- **One transaction in flight per key.** It carries every due batch (``anchorMany``; ``anchorHub`` on v2), so
  throughput does not suffer, and nonces never race. A stuck one is replaced with the same nonce and a higher fee.
- **Reorgs.** Until a batch is ``MRL_CONFIRMATIONS`` deep, each step re-reads the block that held it; if
  its hash changed the batch goes back to ``submitted`` and is found again or rebroadcast.
- **Deeper than that.** Confirmations are a promise about receipts, not a licence to stop watching:
  ``mrledger.anchoring.reconcile`` compares the registry with the database for every hospital every few seconds and
  whenever something looks wrong (a stalled hospital, a seq revert, a head that went back, a nonce gap),
  and puts whatever the chain lost back into the state machine, with an alarm.

Keys are ``eth-account`` LocalAccounts built by the caller from a file or the environment; this module
never logs or stores them.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3RPCError

from mrledger.anchoring import contract as reg
from mrledger.anchoring.errors import AnchorConflict, ContractRevert
from mrledger.anchoring.reconcile import DEEP_SCAN, Reconciler
from mrledger.anchoring.registries import RegistryAdapter, adapter_for
from mrledger.ledger import BatchHead, hospital_key
from mrledger.ledger.status import CONFIRMED, INCLUDED, SUBMITTED
from mrledger.store import Store
from mrledger.store.anchor_rows import AnchorState, Found, NewTx, TxInfo
from mrledger.store.anchors import Outbox

log = logging.getLogger("mrledger.anchoring")

#: Test-only fault injection: ``fault=CRASH_AFTER_BROADCAST`` (``MRL_FAULT_INJECT``, node/settings.py) makes the
#: worker SIGKILL itself right after a transaction left for the node and before anything else is recorded, which
#: is the window the crash-recovery test needs to hit deterministically.
CRASH_AFTER_BROADCAST = "crash-after-broadcast"


@dataclass
class WorkerConfig:
    confirmations: int = 1
    max_items: int = 32
    #: Seconds between two anchoring transactions while fewer than ``max_items`` batches are due (0: each step sends
    #: what is due). Every transaction costs gas and several JSON-RPC round trips of the worker's CPU, whatever it
    #: carries: sent as soon as anything was due, a city replay's 32 event streams, sealed every 5 s, went out as ~2
    #: transactions a second of ~3 batches each, and the worker took a quarter of a core (py-spy, issue 20). A
    #: cadence near the chain's block time costs a batch at most this much more time to its anchor.
    send_every: float = 0.0
    replace_after: timedelta = timedelta(seconds=30)
    fee_bump: float = 1.125  # geth and anvil require >= 10 % more for a replacement
    #: Seconds between reconciliation rounds (``mrledger.anchoring.reconcile``); a sign of trouble runs one at once.
    reconcile_every: float = 10.0
    deep_scan: int = DEEP_SCAN


@dataclass
class StepReport:
    sent: int = 0
    included: int = 0
    confirmed: int = 0
    reorged: int = 0
    rebroadcast: int = 0
    replaced: int = 0
    released: int = 0
    #: Batches reconciliation found the chain had lost (sent again) or had moved to another block (re-read).
    lost: int = 0
    moved: int = 0
    waiting: list[str] = field(default_factory=list)
    #: A transaction of ours is out, or a batch is included and not yet confirmed: the chain must be watched.
    in_flight: bool = False
    #: Seconds until the sealed batches found may be sent (``send_every``); None: no sealed batch was found.
    send_in: float | None = None

    @property
    def busy(self) -> bool:
        return any((self.sent, self.included, self.confirmed, self.reorged, self.rebroadcast, self.replaced,
                    self.released, self.lost, self.moved))

    def pause(self, interval: float, idle: float) -> tuple[float, bool]:
        """After a step that changed nothing: seconds to the next step, and whether a newly sealed batch may end
        the wait. ``interval`` while the chain is to be watched or batches are waiting on the registry; with sealed
        batches waiting for ``send_every``, until they are due (at most ``idle``; a batch sealed meanwhile joins
        them, so it does not wake the worker); with nothing sealed, ``idle`` — or until a batch is sealed."""
        if self.in_flight or self.waiting:
            return interval, False
        if self.send_in is None:
            return idle, True
        return min(idle, max(interval, self.send_in)), False


def _hex(value: bytes | str) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


class AnchorWorker:
    """Drives the outbox state machine for one signing key. Call ``step()`` repeatedly (``run()`` does)."""

    def __init__(
        self,
        store: Store,
        w3: Web3,
        contract: str,
        account: LocalAccount,
        config: WorkerConfig | None = None,
        *,
        hospitals: Collection[str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fault: str | None = None,
        from_block: int = 0,
    ) -> None:
        self.store, self.w3, self.contract, self.account = store, w3, contract, account
        self.config = config or WorkerConfig()
        self.hospitals = hospitals
        self.outbox = Outbox(store)
        self._clock = clock
        self._fault = fault
        self._chain_id: int | None = None
        #: The registry's ABI (v1: root and size per batch; v2: one commitment word, hubs): registries.py.
        #: ``from_block``: where a v2 registry's logs start (its deployment), for finding a batch by its logs.
        self._from_block = from_block
        self._registry: RegistryAdapter | None = None
        self.reconciler = Reconciler(self.outbox, w3, contract, hospitals=hospitals,
                                     every=self.config.reconcile_every, deep_scan=self.config.deep_scan,
                                     confirmations=self.config.confirmations, now=clock,
                                     registry=lambda: self.registry)
        self._head: int | None = None
        self._last_send = -math.inf
        self.monotonic: Callable[[], float] = time.monotonic  # of ``send_every``; a test's own clock

    @property
    def registry(self) -> RegistryAdapter:
        """Asked of the chain once (the first step: the node may be down when the worker is built)."""
        if self._registry is None:
            self._registry = adapter_for(self.w3, self.contract, self.store.map_root, from_block=self._from_block)
        return self._registry

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    # -- the loop -----------------------------------------------------------------------------------

    def step(self) -> StepReport:
        report = StepReport()
        self._watch_head()
        if self.reconciler.due():
            found = self.reconciler.run()
            report.lost += sum(len(v) for v in found.lost.values())
            report.moved += sum(len(v) for v in found.moved.values())
        self._track_submitted(report)
        self._check_included(report)
        if report.confirmed:
            self.reconciler.resolve()
        self._send_due(report)
        if report.waiting:  # a hospital's next batch is not the one the registry expects: look at once
            self.reconciler.request("stalled: " + ", ".join(report.waiting[:5]))
        return report

    def _watch_head(self) -> None:
        """A head lower than the last one seen: the chain went back (a reorg to a shorter chain, a node
        restarted from older state). Reconcile at once rather than at the next round."""
        head = int(self.w3.eth.block_number)
        if self._head is not None and head < self._head:
            log.warning("the chain's head went back from block %d to %d; reconciling with the database",
                        self._head, head)
            self.reconciler.request(f"head went back from {self._head} to {head}")
        self._head = head

    def run(self, stop: threading.Event, interval: float = 0.5, max_backoff: float = 10.0, *,
            idle: float | None = None, wake: threading.Event | None = None) -> None:
        """Step until ``stop`` is set. A node outage is waited out with backoff: nothing is lost, since
        every state lives in the database and the chain.

        ``idle`` and ``wake`` (``mrledger serve``: its sealer sets ``wake`` whenever it seals a batch): with nothing
        in flight, the next step comes when the sealed batches are due (``send_every``), or with nothing sealed when
        ``wake`` is set — at most ``idle`` seconds later, not ``interval`` (``StepReport.pause``). Why: at
        ``interval`` (0.2 s) an idle node's worker made five steps a second, each a head read and four outbox
        queries — 5 % of a core on a node with nothing to do — and in a city replay, whose anchors go out every
        ``send_every`` (2 s), about ten idle steps for every busy one (issue 20). A batch sealed on an idle node
        wakes the worker at once; one sealed while others wait for ``send_every`` goes with them when they are due
        (also when the round has reached ``max_items`` meanwhile, which ``interval`` would have sent up to
        ``send_every`` sooner: within the cadence ``WorkerConfig.send_every`` allows). What only a step notices with
        nothing in flight (the head going back, reconciliation's round) is noticed within ``idle``. ``stop`` must
        also set ``wake`` (as serve does) to end a wait on it at once. Measured: an idle node's sealer process
        0.042-0.046 -> 0.015-0.017 cores; under a city replay no change (docs/scaling.md §1, stop 40)."""
        backoff = interval
        while not stop.is_set():
            if wake is not None:
                wake.clear()  # a batch sealed from here on ends the wait below; one sealed before, this step sends
            pause, wakeable = interval, False
            try:
                report = self.step()
                backoff = interval
                if report.busy:
                    log.info("anchoring step: %s", report)
                    continue
                if idle is not None and wake is not None:
                    pause, wakeable = report.pause(interval, idle)
            except ContractRevert as exc:
                log.warning("registry refused anchoring: %s", exc)
                pause = backoff = min(max_backoff, backoff * 2)
            except AnchorConflict:
                log.exception("ledger and chain disagree; anchoring stopped for an operator to look")
                raise
            except Exception as exc:  # node down, timeouts, database busy: retry later
                log.warning("anchoring step failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff)
                pause = backoff = min(max_backoff, backoff * 2)
            (wake if wakeable and wake is not None else stop).wait(pause)  # a backoff is not cut short by a seal

    # -- submitted → included -----------------------------------------------------------------------

    def _on_chain(self, head: BatchHead) -> Found | None:
        """Where the chain holds the anchor of ``head``, or None."""
        placed = self.registry.locate(head)
        if placed is None:
            return None
        if not placed.holds:
            raise AnchorConflict(f"registry holds {placed.what} for {head.hospital_id}/{head.seq}; the ledger has "
                                 f"root {head.root.hex()} size {head.size}")
        tx_hash = placed.tx_hash
        if tx_hash is None:  # a v1 registry names the block, not the transaction: its log there does
            events = [e for e in reg.anchored_events(self.w3, self.contract, from_block=placed.block_number,
                                                      to_block=placed.block_number,
                                                      hospital_key=hospital_key(head.hospital_id))
                      if e.seq == head.seq]
            if not events:
                return None  # the block moved under us (reorg between the two reads): look again next step
            tx_hash = events[0].tx_hash
        block = self.w3.eth.get_block(placed.block_number)
        return Found(head.hospital_id, head.seq, tx_hash, placed.block_number, _hex(block["hash"]), placed.hub)

    def _record_found(self, found: Found, report: StepReport) -> None:
        self._include([found])
        report.included += 1

    def _include(self, found: list[Found]) -> None:
        self.outbox.mark_included_many(found, chain_id=self.chain_id, contract=self.contract, now=self._clock(),
                                       registry_version=self.registry.version)

    def _receipt(self, tx_hash: str) -> Any | None:
        """A transaction's receipt (status 1 or 0), read in one round trip; None if the node has none."""
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None

    def _seen(self, tx_hash: str) -> Any | None:
        """The transaction as the node knows it (pending: no block number yet), or None if it does not."""
        try:
            return self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None

    def _track_submitted(self, report: StepReport) -> None:
        """submitted → included, a transaction at a time: its receipt says which batches it anchored and where
        (one round trip for all of them, one database transaction to record them). A batch the receipt does not
        name — another transaction of ours was mined instead (a replacement, a crash) — is looked up in the
        registry one by one; a transaction with no receipt yet that the node knows is left to ``_nurse``."""
        found: list[Found] = []
        unresolved: set[int] = set()
        groups: dict[str | None, list[AnchorState]] = {}
        for st in self.outbox.states(SUBMITTED):
            groups.setdefault(st.tx_hash, []).append(st)
        report.in_flight |= bool(groups)
        seen: dict[int, Any] = {}  # of the transactions left to ``_nurse``: read here, not again there
        for tx_hash, states in groups.items():
            receipt = self._receipt(tx_hash) if tx_hash else None
            if receipt is None and tx_hash and states[0].tx_id is not None \
                    and (known := self._seen(tx_hash)) is not None:
                # Pending, or mined a moment ago and its receipt not indexed yet: its batches are not looked up
                # in the registry. That lookup is for a transaction the node does not know (a replacement or a
                # resend mined in its place): taken here, it raced the node's indexing of the receipt and read
                # the registry's logs for a batch the receipt names a step later (issue 20: 37 % of the sealer's
                # samples late in a city replay, when anvil's mining lags the worker's next step).
                seen[states[0].tx_id] = known
                unresolved.update(st.tx_id for st in states if st.tx_id is not None)
                continue
            mined = receipt if receipt is not None and receipt["status"] == 1 else None
            rest = states
            if mined is not None:
                number, block_hash = int(mined["blockNumber"]), _hex(mined["blockHash"])
                anchored = self.registry.mined(mined, [st.head for st in states])
                rest = []
                for st in states:
                    hit = anchored.get((st.head.hospital_id, st.head.seq))
                    if hit is None:
                        rest.append(st)
                    elif not hit.holds:
                        raise AnchorConflict(f"transaction {tx_hash} anchored {hit.what} for "
                                             f"{st.head.hospital_id}/{st.head.seq}; the ledger has root "
                                             f"{st.head.root.hex()} size {st.head.size}")
                    else:
                        assert tx_hash is not None
                        found.append(Found(st.head.hospital_id, st.head.seq, tx_hash, number, block_hash, hit.hub))
            for i, st in enumerate(rest):
                on_chain = self._on_chain(st.head)
                if on_chain is not None:
                    found.append(on_chain)
                elif st.tx_id is not None:
                    unresolved.add(st.tx_id)
                    if i == 0 and mined is None:  # its transaction is not mined: nor are the others it carries
                        unresolved.update(x.tx_id for x in rest if x.tx_id is not None)
                        break
        if found:
            self._include(found)
            report.included += len(found)
        for tx in sorted((self.outbox.tx(i) for i in unresolved), key=lambda t: (t.nonce, t.id)):
            self._nurse(tx, report, seen[tx.id] if tx.id in seen else self._seen(tx.tx_hash))

    def _nurse(self, tx: TxInfo, report: StepReport, seen: Any | None) -> None:
        """A transaction whose batches are not on chain yet (``seen``: the node's view of it, None if it has
        none): rebroadcast, replace, or release it."""
        if (seen is None or seen.get("blockNumber") is None) \
                and self.w3.eth.get_transaction_count(self.account.address, "latest") < tx.nonce:
            # A nonce gap: the chain no longer holds transactions of ours below this one (it went back: a
            # deep reorg, older state). This one can never be mined before they are; send its batches anew.
            batches = self.outbox.release(tx.id)
            log.warning("transaction %s (nonce %d) sits behind a nonce gap: the chain went back; %d batch(es) "
                        "will be sent again", tx.tx_hash, tx.nonce, len(batches))
            self.reconciler.request(f"nonce gap below {tx.nonce}")
            report.released += len(batches)
            return
        if seen is None:
            # Unknown to the node: never broadcast (crash), dropped by a node restart, or by a reorg.
            if self.w3.eth.get_transaction_count(self.account.address, "latest") > tx.nonce:
                # The nonce was used, and not by this transaction (it would be on chain): lost for good.
                batches = self.outbox.release(tx.id)
                log.warning("transaction %s can no longer be mined; %d batch(es) will be sent again",
                            tx.tx_hash, len(batches))
                report.released += len(batches)
                return
            self._broadcast(tx.raw_tx)
            report.rebroadcast += 1
            return
        if seen.get("blockNumber") is not None:
            receipt = self._receipt(tx.tx_hash)  # None: mined, its receipt not indexed yet (next step)
            if receipt is not None and receipt["status"] == 0:
                batches = self.outbox.release(tx.id)
                log.warning("anchoring transaction %s reverted; %d batch(es) will be sent again", tx.tx_hash,
                            len(batches))
                report.released += len(batches)
            return  # status 1: the registry read was older than the block; found next step
        if self._clock() - tx.created_at >= self.config.replace_after:
            self._replace(tx, report)

    def _replace(self, tx: TxInfo, report: StepReport) -> None:
        heads = [self.store.batch(h, s) for h, s in self.outbox.batches_of_tx(tx.id)]
        if not heads:
            return
        fees = reg.suggested_fees(self.w3)
        bump = self.config.fee_bump
        fees = {
            "maxFeePerGas": max(fees["maxFeePerGas"], int(tx.max_fee_per_gas * bump) + 1),
            "maxPriorityFeePerGas": max(fees["maxPriorityFeePerGas"], int(tx.max_priority_fee_per_gas * bump) + 1),
        }
        new = self._sign(heads, tx.nonce, fees)
        new_id = self.outbox.record_replacement(tx.id, new, self._clock())
        log.info("replacing stuck transaction %s (nonce %d) with %s", tx.tx_hash, tx.nonce, new.tx_hash)
        self._broadcast(new.raw_tx)
        report.replaced += 1
        del new_id

    # -- included → confirmed (or back, on a reorg) -------------------------------------------------

    def _check_included(self, report: StepReport) -> None:
        states = self.outbox.states(INCLUDED)
        if not states:
            return
        report.in_flight = True
        head = int(self.w3.eth.block_number)
        hashes: dict[int, str | None] = {}  # one read per block, however many batches it holds
        confirmed: list[tuple[str, int]] = []
        for st in states:
            assert st.block_number is not None
            if st.block_number not in hashes:
                block = self.w3.eth.get_block(st.block_number) if st.block_number <= head else None
                hashes[st.block_number] = None if block is None else _hex(block["hash"])
            if hashes[st.block_number] != st.block_hash:
                log.warning("reorg: block %s of %s/%d is gone; re-anchoring", st.block_number, st.head.hospital_id,
                            st.head.seq)
                self.outbox.mark_reorged(st.head.hospital_id, st.head.seq, self._clock())
                report.reorged += 1
            elif head - st.block_number + 1 >= self.config.confirmations:
                confirmed.append((st.head.hospital_id, st.head.seq))
        self.outbox.mark_confirmed_many(confirmed, self._clock())
        report.confirmed += len(confirmed)

    # -- SEALED → submitted -------------------------------------------------------------------------

    def _send_due(self, report: StepReport) -> None:
        if self.outbox.txs(self.account.address):
            report.in_flight = True
            return  # one transaction in flight per key; the next step carries whatever is due then
        items: list[BatchHead] = []
        due = self.outbox.sealed(self.config.max_items, self.hospitals)
        if not due:
            return
        report.send_in = 0.0
        since = self.monotonic() - self._last_send
        if len(due) < self.config.max_items and since < self.config.send_every:
            report.send_in = self.config.send_every - since
            return  # the next transaction carries these and whatever is sealed meanwhile
        keys = {h.hospital_id: hospital_key(h.hospital_id) for h in due}
        last = reg.read_many(self.w3, self.contract, hospitals=list(keys.values())).last_seq  # one round trip
        expected: dict[str, int] = {}
        for head in due:
            hid = head.hospital_id
            if hid not in expected:
                expected[hid] = last[keys[hid]] + 1
            if head.seq < expected[hid]:
                # Already on chain though the database never saw it confirmed: a crash after broadcast,
                # or another instance. Record it; never send it twice.
                found = self._on_chain(head)
                if found is not None:
                    self._record_found(found, report)
                continue
            if head.seq != expected[hid]:
                report.waiting.append(f"{hid}/{head.seq}")
                continue
            items.append(head)
            expected[hid] += 1
        if not items:
            return
        nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
        try:
            new = self._sign(items, nonce, reg.suggested_fees(self.w3))
        except ContractRevert as exc:
            if exc.name in ("SeqGap", "BatchAlreadyAnchored"):  # the registry is not where we think it is
                self.reconciler.request(f"registry refused: {exc.name}")
            raise
        self.outbox.record_submission(new, [(h.hospital_id, h.seq) for h in items], self._clock())
        self._last_send = self.monotonic()
        self._broadcast(new.raw_tx)
        if self._fault == CRASH_AFTER_BROADCAST:
            os.kill(os.getpid(), signal.SIGKILL)
        report.sent += len(items)

    def _sign(self, heads: list[BatchHead], nonce: int, fees: dict[str, int]) -> NewTx:
        tx = self.registry.build_tx(heads, self.account.address, nonce=nonce, fees=fees)
        signed = self.account.sign_transaction(tx)
        return NewTx(self.chain_id, self.contract, self.account.address, nonce, _hex(signed.hash),
                     bytes(signed.raw_transaction), int(tx["maxFeePerGas"]), int(tx["maxPriorityFeePerGas"]))

    def _broadcast(self, raw: bytes) -> None:
        try:
            self.w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            text = str(exc).lower()
            if "already known" in text or "already imported" in text or "nonce too low" in text:
                return  # the node has it, or it was mined: the next step reads the outcome from the chain
            if "vm exception while processing transaction" in text:
                # Hardhat Network mines a transaction that reverts and then answers its broadcast
                # with this error, where anvil and geth answer with the hash. Mined all the same: the next
                # step finds its status-0 receipt and sends the batches again (docs/anchoring.md, "EVM clients").
                log.warning("anchoring transaction reverted when mined (%s); its batches will be sent again", exc)
                return
            raise


__all__ = ["CONFIRMED", "AnchorConflict", "AnchorWorker", "StepReport", "WorkerConfig"]
