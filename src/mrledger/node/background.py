"""The sealer and the anchoring worker, in a child process of ``mrledger serve``.

Why a process of their own: the HTTP API, the sealer and the anchoring worker share nothing but the
database and the chain, yet as threads of one interpreter they shared its lock. On this machine's two
cores the API is bound by that lock under load, and the sealer (building trees, signing, bulk writes)
and the worker (web3 round trips, whose client spends ~1 ms of CPU per call) took 14 % of its samples
during ingest (py-spy, ``scripts/bench_api.py --py-spy``). In their own process they use the second core.

Lifetime, so that a process tree behaves like the one process it replaces:

* The child is started by the parent after the parent has created what the child only reads (keys,
  master key, dev PKI, the deployed registry) and reports ready after the sealer's first pass of
  on-chain hospital registration: ``mrledger serve`` says it serves only when that is done, as before.
* ``kill -9`` of serve kills the child with it (``PR_SET_PDEATHSIG``): a crash stays a crash of the whole
  node, and restart recovery (docs/anchoring.md) is what it was. Every state lives in the database and
  the chain, so nothing accepted is lost.
* Ctrl-C reaches every process of the terminal's group; the child ignores SIGINT and stops on the
  SIGTERM the parent then sends it, finishing the step it is in.
* If the child dies, serve shuts down with exit code 1, as it did when one of its threads died.

One leader per ledger: the child seals and anchors only while it holds the ledger's leader lock (a
PostgreSQL advisory lock, ``mrledger.store.locks.exclusive``; on SQLite a file lock beside the database), whatever its
submitter key. A second node on the same database finds the lock held and runs as a **follower**: it says
so once in the log, reports ready (its API serves), and polls the lock every few seconds, taking over the
sealing and anchoring when the leader's lock is released (the leader stopped, or its database connection
died). A leader that loses its lock (its connection died) stops sealing and anchoring at once and exits 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import SynchronizedArray
from typing import TYPE_CHECKING, Any

from web3 import Web3

from mrledger.anchoring.chain import ChainContext
from mrledger.ledger.errors import MrLedgerError
from mrledger.node.heap import tune_gc
from mrledger.node.pki import configure
from mrledger.node.settings import Settings
from mrledger.node.wiring import anchor_worker, chain_context, key_files, load_key, open_node_store
from mrledger.service.pki import BatchSigning, SignStats
from mrledger.store import Store
from mrledger.store.access import Access
from mrledger.store.decisions import EventIndex
from mrledger.store.events import is_event_stream
from mrledger.store.kpi_rollup import KpiRollup
from mrledger.store.locks import Lease, LockHeld, exclusive
from mrledger.store.upkeep import UPKEEP_EVERY, upkeep

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

log = logging.getLogger("mrledger.serve")

SEAL_EVERY = 0.2  # seconds between sealer passes
WORKER_INTERVAL = 0.2
#: Seconds between the anchoring worker's steps while nothing is in flight and nothing sealed is due; a sealed batch
#: ends the wait at once (AnchorWorker.run says why).
WORKER_IDLE = 2.0
RETRY_REGISTER = 30.0  # seconds before a failed on-chain registration is tried again
SIGN_WARN_EVERY = 60.0  # seconds between repeated warnings that a hospital's batches cannot be signed
#: Seconds between deletions of verifications past their retention (MRL_VERIFICATION_RETENTION_DAYS).
PRUNE_EVERY = 3600.0
#: The lock whose holder seals and anchors for the whole ledger (one per database schema).
LEADER_LOCK = "mrledger-leader"
LEADER_POLL = 2.0  # seconds between a follower's attempts to take the leader lock
LEASE_CHECK = 5.0  # seconds between a leader's checks that it still holds the lock
#: The child's part, shared with the parent (``/readyz``, ``/metrics``): values of ``Spec.role``.
STARTING, LEADER, FOLLOWER = 0, 1, 2
ROLE_NAMES = {STARTING: "starting", LEADER: "leader", FOLLOWER: "follower"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PR_SET_PDEATHSIG = 1


class Sealer:
    """Seals a hospital's open batch once it is full or its oldest result is older than the interval,
    and puts hospitals registered in the database on chain (``mrledger hospital register`` writes the
    database only, so that only the node spends the admin key's nonces; the API's own registrations and
    this sealer's are serialised across the two processes by ``ChainContext.admin_lock_file``).

    With ``signing``, every batch is signed with its hospital's current key for this chain and registry,
    inside the sealing transaction: a hospital whose batch cannot be signed (no valid key, a certificate
    this node's trust rejects) is not sealed at all — its results wait, the log says why every minute —
    while the other hospitals seal as usual."""

    def __init__(self, store: Store, chain: ChainContext, settings: Settings,
                 signing: BatchSigning | None = None) -> None:
        self.store, self.chain = store, chain
        self.size, self.interval = settings.batch_size, timedelta(seconds=settings.batch_interval)
        self.sign = None if signing is None else signing.for_chain(chain.chain_id, chain.contract)
        self.signing = signing
        #: Hospitals this sealer has put on chain (or found there), with the submitters it put there.
        self.on_chain: dict[str, tuple[str, ...]] = {}
        self._retry_at: dict[str, float] = {}
        self._last_reconcile = 0.0
        self._sign_warned: dict[str, float] = {}
        self.rollup = KpiRollup(store)
        self.retention = timedelta(days=settings.verification_retention_days)
        self.access_retention = timedelta(days=settings.access_log_retention_days)
        self._last_prune = -PRUNE_EVERY
        self._last_upkeep = time.monotonic()  # the first check after UPKEEP_EVERY: nothing has churned at start
        #: Set whenever a batch is sealed: the anchoring worker waits on it while it has nothing in flight.
        self.sealed = threading.Event()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # database busy or chain down: try again next pass
                log.warning("sealer pass failed (%s: %s)", type(exc).__name__, exc)
            stop.wait(SEAL_EVERY)

    def step(self) -> None:
        rollup = False
        due = self.store.due_hospitals(self.size, self.interval)
        if self.chain.admin is not None and any(h not in self.on_chain for h in due):
            self.reconcile_hospitals()  # a batch is sealed only for a hospital the registry knows
        for hospital in due:
            try:
                head = self.store.seal(hospital, self.size, sign=self.sign)
            except MrLedgerError as exc:  # signing refused: this hospital waits, the others are sealed
                now = time.monotonic()
                if now - self._sign_warned.get(hospital, -SIGN_WARN_EVERY) >= SIGN_WARN_EVERY:
                    self._sign_warned[hospital] = now
                    log.error("cannot sign %s's batch, its results stay unsealed: %s", hospital, exc)
                continue
            self._sign_warned.pop(hospital, None)
            if head is not None:
                log.info("sealed %s batch %d (%d results%s)", hospital, head.seq, head.size,
                         ", signed" if self.sign else "")
                self.sealed.set()
                rollup |= is_event_stream(hospital)
        if rollup:  # count the new event batches for the KPIs now, not in the next report's request
            self.rollup.roll_up()
        if time.monotonic() - self._last_prune >= PRUNE_EVERY:
            self._last_prune = time.monotonic()
            self.prune(datetime.now(UTC))
        if time.monotonic() - self._last_upkeep >= UPKEEP_EVERY:
            self._last_upkeep = time.monotonic()
            upkeep(self.store.engine)  # the queues this leader churns, the tables' statistics (store/upkeep.py)
        if time.monotonic() - self._last_reconcile >= 1.0:
            self._last_reconcile = time.monotonic()
            self.reconcile_hospitals()

    def prune(self, now: datetime) -> tuple[int, int]:
        """The retention jobs: verifications no decision names, and access-log entries, past their settings
        (0 days: kept). Returns (verifications, entries) deleted."""
        verifications = entries = 0
        if self.retention:
            verifications = EventIndex(self.store).prune(now - self.retention)
            if verifications:
                log.info("deleted %d verifications older than %d days that no decision names", verifications,
                         self.retention.days)
        if self.access_retention:
            entries = Access(self.store).prune(now - self.access_retention)
            if entries:
                log.info("deleted %d access-log entries older than %d days", entries, self.access_retention.days)
        return verifications, entries

    def reconcile_hospitals(self) -> None:
        """Put every hospital registered in the database on chain with the submitters its registration asked
        for (``POST /v1/hospitals`` and ``mrledger hospital register`` write the database only): the leader is
        the one process that spends the admin key's nonces. A failure is logged and retried later."""
        chain = self.chain
        if chain.admin is None:
            return
        now = time.monotonic()
        for r in self.store.registrations():
            if self.on_chain.get(r.hospital_id) == r.submitters or now < self._retry_at.get(r.hospital_id, 0.0):
                continue
            if self.signing is not None and self.signing.dev is not None:
                # Dev PKI: a hospital registered while the node runs gets its key now, not at its first seal.
                try:
                    self.signing.ensure_key(r.hospital_id)
                except MrLedgerError as exc:
                    log.error("dev PKI: cannot issue a signing key for %s: %s", r.hospital_id, exc)
            try:
                if chain.register_hospital(r.hospital_id, r.name, r.submitters):
                    log.info("registered hospital %s on chain", r.hospital_id)
            except Exception as exc:  # e.g. our admin key is not the registry's admin: say so, retry later
                log.warning("cannot put hospital %s on chain (%s: %s); retrying in %.0fs", r.hospital_id,
                            type(exc).__name__, exc, RETRY_REGISTER)
                self._retry_at[r.hospital_id] = now + RETRY_REGISTER
                continue
            self.on_chain[r.hospital_id] = r.submitters


# -------------------------------------------------------------------------------- the child process


@dataclass(frozen=True)
class Spec:
    """What the child needs to build its half of the node (through node/wiring.py, as the parent does), pickled
    to it over the spawn pipe: the settings (which hold what the environment gave serve; the child reads the key
    files they name itself) and what the parent found out (the registry, the chain id)."""

    settings: Settings  # with ``rpc_url`` set: the managed chain's, when serve started one
    contract: str
    chain_id: int
    sign_stats: SynchronizedArray[float] | None
    confirmations: int = 1
    #: Shared with the parent: ``STARTING``, ``LEADER`` or ``FOLLOWER`` (a ``multiprocessing.Value("i")``).
    role: Any = None
    #: False: this node holds no hospital signing keys (it verifies with trust another node recorded), so it
    #: never takes over sealing; it stays a follower and says why.
    can_lead: bool = True


class Background:
    """The parent's handle on the child: start it, wait until it is ready, watch it, stop it.

    Signals and a pipe, not ``multiprocessing.Event``: setting such an event waits for its sleepers to
    wake, and a child killed while it slept never does — serve hung on its way out when the child had
    been SIGKILLed (found by tests/node/test_serve.py)."""

    def __init__(self, spec: Spec) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that already runs threads
        self._ready, self._ready_tx = ctx.Pipe(duplex=False)
        # os.getpid(): the parent; a child that finds another one (serve died while it started) exits at once.
        self.process: SpawnProcess = ctx.Process(target=_child, args=(spec, self._ready_tx, os.getpid()),
                                                 name="mrledger-sealer-worker", daemon=False)

    def start(self) -> None:
        self.process.start()
        self._ready_tx.close()  # the child has its own copy; ours would hide its end-of-file

    def wait_ready(self, give_up: threading.Event) -> bool:
        """True once the child is ready; False if ``give_up`` was set first. A child that exits before it
        is ready (a held lock, a bad key; its log says which) raises RuntimeError."""
        while not self._ready.poll(0.05):
            if not self.process.is_alive():
                raise RuntimeError("the sealer and anchoring worker did not start (see the log above)")
            if give_up.is_set():
                return False
        try:
            self._ready.recv_bytes()
        except EOFError:
            raise RuntimeError("the sealer and anchoring worker did not start (see the log above)") from None
        finally:
            self._ready.close()
        return True

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: the child finishes its current step and exits; killed if it does not within ``timeout``."""
        if self.process.pid is None:
            return
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout)
        if self.process.is_alive():
            log.error("the sealer/anchoring process did not stop in %.0fs; killing it", timeout)
            self.process.kill()
            self.process.join(5)


def die_with_parent(parent: int) -> bool:
    """SIGKILL this process when its parent dies, however it dies (Linux; elsewhere the parent-pid watch
    in ``_run`` notices within half a second). False if the parent is already gone: it may have died while
    this interpreter was starting, before there was anything to ask the kernel."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); watching the parent pid instead",
                        ctypes.get_errno())
    return os.getppid() == parent


def _child(spec: Spec, ready: Connection, parent: int) -> None:
    """The child's main: the sealer and the anchoring worker as threads, until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then sends SIGTERM
    # The handler only raises a flag: setting a threading.Event from a signal handler can deadlock on the
    # event's lock if the signal lands while the main thread holds it (inside Event.wait).
    asked: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: asked.append(signum))
    if not die_with_parent(parent):
        raise SystemExit(1)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    raise SystemExit(_run(spec, asked, ready, parent))


class _Ready:
    """Tells the parent, once, that the child is up (as leader or as follower)."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe: Connection | None = pipe

    def send(self) -> None:
        if self._pipe is not None:
            self._pipe.send_bytes(b"ready")
            self._pipe.close()
            self._pipe = None


def _set_role(spec: Spec, role: int) -> None:
    if spec.role is not None:
        spec.role.value = role


def _lead(stack: contextlib.ExitStack, store: Store, spec: Spec, asked: list[int], ready: _Ready,
          parent: int) -> Lease | int:
    """The leader lock (entered on ``stack``), waiting for it as a follower; or the exit code when told to stop
    first (0) or the parent is gone (1)."""
    announced = False
    while True:
        if spec.can_lead:
            try:
                lease = stack.enter_context(exclusive(store.engine, LEADER_LOCK))
                if announced:
                    log.warning("this node took over as the leader of this ledger: it seals and anchors now")
                return lease
            except LockHeld:
                pass
        if not announced:
            _set_role(spec, FOLLOWER)
            if spec.can_lead:
                log.warning("another node leads this ledger (it holds the leader lock on the database): this node "
                            "runs as a follower — its API serves, it neither seals nor anchors — and takes over when "
                            "the leader's lock is released (checked every %.0f s)", LEADER_POLL)
            else:
                log.warning("this node runs as a follower and will not take over: it holds no hospital signing keys "
                            "(it verifies with the trust another node recorded in the database); set "
                            "MRL_TRUST_ANCHORS and MRL_SIGNING_KEYS_DIR to let it lead")
            ready.send()
            announced = True
        deadline = time.monotonic() + LEADER_POLL
        while time.monotonic() < deadline:
            if asked:
                return 0
            if os.getppid() != parent:
                return 1
            time.sleep(0.2)


def _run(spec: Spec, asked: list[int], pipe: Connection, parent: int) -> int:
    settings = spec.settings
    ready = _Ready(pipe)
    try:
        admin_key, submitter_key = key_files(settings)
        admin, submitter = load_key(admin_key, create=False), load_key(submitter_key, create=False)
        assert settings.rpc_url is not None  # serve sets the managed chain's
        w3 = Web3(Web3.HTTPProvider(settings.rpc_url, request_kwargs={"timeout": settings.rpc_timeout}))
        store = open_node_store(settings)
        chain = chain_context(settings, w3, settings.rpc_url, spec.contract, spec.chain_id, submitter=submitter,
                              admin=admin, confirmations=spec.confirmations)
        with contextlib.ExitStack() as stack:
            lease = _lead(stack, store, spec, asked, ready, parent)
            if isinstance(lease, int):
                return lease
            pki = configure(settings, seal=True)
            if pki.signing is not None and spec.sign_stats is not None:
                pki.signing.stats = SignStats(memory=spec.sign_stats)  # shared with the parent's /metrics
            sealer = Sealer(store, chain, settings, pki.signing)
            sealer.reconcile_hospitals()  # catches up with hospitals registered while the node was down
            stack.enter_context(exclusive(store.engine, f"anchoring-worker:{submitter.address}"))
            worker = anchor_worker(settings, store, settings.rpc_url, spec.contract, submitter, spec.confirmations)
            stop = threading.Event()
            threads = [threading.Thread(target=sealer.run, args=(stop,), name="sealer", daemon=True),
                       threading.Thread(target=worker.run, args=(stop,), name="anchoring-worker", daemon=True,
                                        kwargs={"interval": WORKER_INTERVAL, "idle": WORKER_IDLE,
                                                "wake": sealer.sealed})]
            tune_gc()
            for t in threads:
                t.start()
            _set_role(spec, LEADER)
            ready.send()
            checked = time.monotonic()
            try:
                while not asked:
                    time.sleep(0.2)
                    if pki.trust is not None:
                        pki.trust.refresh(datetime.now(UTC))  # the signer checks certificates against CRLs too
                    dead = [t.name for t in threads if not t.is_alive()]
                    if dead:
                        log.error("%s stopped unexpectedly", ", ".join(dead))
                        return 1
                    if os.getppid() != parent:  # the parent is gone (no PR_SET_PDEATHSIG here)
                        return 1
                    if time.monotonic() - checked >= LEASE_CHECK:
                        checked = time.monotonic()
                        if not lease.held():
                            log.error("lost the leader lock (the database connection behind it is gone): "
                                      "stopping sealing and anchoring; another node may lead now")
                            return 1
            finally:
                stop.set()
                sealer.sealed.set()  # ends the worker's idle wait (AnchorWorker.run)
                for t in threads:
                    t.join(timeout=15)
        return 0
    except Exception:
        log.exception("the sealer and anchoring worker cannot run")
        return 1


def shared_role() -> Any:
    """The child's role as the parent sees it (``ROLE_NAMES``)."""
    return multiprocessing.get_context("spawn").Value("i", STARTING)


def shared_sign_stats() -> SignStats:
    """A ``SignStats`` the child's signer writes and the parent's /metrics reads."""
    return SignStats(memory=multiprocessing.get_context("spawn").Array("d", SignStats.cells()))


__all__ = ["FOLLOWER", "LEADER", "LEADER_LOCK", "ROLE_NAMES", "Background", "Sealer", "Spec", "shared_role",
           "shared_sign_stats"]
