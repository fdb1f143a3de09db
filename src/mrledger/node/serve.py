"""``mrledger serve``: the whole node in one process tree — the HTTP API (uvicorn), the sealer, the
anchoring worker and, unless ``MRL_RPC_URL`` names a chain, a managed anvil with persisted state.

Why one process: a hospital or a developer should get a working ledger from one command with no
configuration. Nothing accepted is lost on a crash: a result is committed before its 202, sealing is
one transaction, and the worker is exactly-once across crashes (see ``mrledger.anchoring.worker``), so a restart
on the same data dir simply drains what was pending.

The data dir holds the SQLite database, ``anvil-state.json``, the dev keys (``admin.key``,
``submitter.key``), ``master.key`` (encryption at rest, unless configured elsewhere: docs/encryption.md),
``regional.key`` (patient hashes of encounters, unless configured: docs/kpis.md §4) and ``admin-token``, all
secrets 0600. ``serve.json`` says where the running node
listens (API, chain RPC, registry) for tools and tests; it holds no secret.

The managed anvil is tied to serve (anchoring/node.py): it gets SIGTERM when serve dies however it dies, so
it saves its chain and exits instead of running on as an orphan; it holds a lock on its state file for its
whole life, so a restart waits for it rather than start a second writer; its pid goes to ``anvil.pid`` the
moment it exists (``stop_stale_anvil`` still stops an untied one an older version left); its state is saved
atomically. If it dies while serve runs, serve starts it again from its last saved state, and the anchoring
worker re-anchors whatever the chain lost meanwhile (anchoring/reconcile.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from mrledger.anchoring.deploy import deploy_and_record
from mrledger.anchoring.depth import default_confirmations
from mrledger.anchoring.health import ChainHealth, GuardedHTTPProvider
from mrledger.anchoring.node import AnvilError, AnvilNode
from mrledger.ledger.errors import MrLedgerError
from mrledger.node.api_processes import ApiProcesses, api_server, bind, close_logged
from mrledger.node.background import LEADER_LOCK, ROLE_NAMES, Background, Spec, shared_role, shared_sign_stats
from mrledger.node.heap import tune_gc
from mrledger.node.pki import configure
from mrledger.node.settings import Settings
from mrledger.node.spawned import ApiSpec
from mrledger.node.wiring import (
    ServeError,
    build,
    chain_context,
    key_files,
    load_key,
    open_node_store,
    regional_key_for,
    write_secret,
)
from mrledger.service.ledger import Services
from mrledger.store import Store
from mrledger.store.anchors import Outbox
from mrledger.store.locks import LockHeld, exclusive, file_lock
from mrledger.store.shared import DEV_TRUST, shared_get, shared_put_first

log = logging.getLogger("mrledger.serve")

DEV_BALANCE = 10_000 * 10**18  # wei given to the dev keys on the managed anvil
ADMIN_TOKEN = "admin-token"
SERVE_INFO = "serve.json"
ANVIL_PID = "anvil.pid"
ANVIL_STATE = "anvil-state.json"
#: Seconds between saves of the managed chain while it runs (besides the one when it stops): a managed anvil
#: killed with SIGKILL loses at most this much, which the worker then re-anchors from the database.
STATE_EVERY = 30.0


# -------------------------------------------------------------------------------- managed anvil


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie nobody reaps has exited (and dumped its state)
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        import subprocess

        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
        return out.stdout


def stop_stale_anvil(data_dir: Path, timeout: float = 15.0) -> int | None:
    """Stop an anvil left running on this data dir's state file (our parent was SIGKILLed); its pid.

    SIGTERM, not SIGKILL: anvil writes the chain to ``--state`` on SIGTERM, and that chain holds
    anchors the database already records. The pid is only signalled if its command line names our
    state file, so a recycled pid is never touched."""
    pid_file = data_dir / ANVIL_PID
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    state = str((data_dir / ANVIL_STATE).resolve())
    if not _pid_alive(pid) or state not in _cmdline(pid):
        pid_file.unlink(missing_ok=True)
        return None
    log.warning("stopping anvil %d left running by a previous serve (it saves the chain on SIGTERM)", pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            log.error("anvil %d ignored SIGTERM for %.0fs; killing it (its latest blocks are lost)", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return pid


def start_anvil(data_dir: Path, fund: list[str], binary: Path | None = None) -> AnvilNode:
    """The managed chain: tied to this process (it must be the main thread: see anchoring/node.py), one
    writer on its state file, saved atomically and every ``STATE_EVERY`` seconds."""
    stop_stale_anvil(data_dir)
    node = AnvilNode(binary=binary, state_path=data_dir.resolve() / ANVIL_STATE, log_path=data_dir / "anvil.log",
                     pid_file=data_dir / ANVIL_PID, tie_to_parent=True, state_interval=STATE_EVERY)
    try:
        node.start()
    except AnvilError as exc:
        raise ServeError(f"the managed chain cannot start: {exc}") from exc
    fund_dev_keys(node, fund)
    return node


def fund_dev_keys(node: AnvilNode, fund: list[str]) -> None:
    for address in fund:  # our own random keys, not anvil's well-known ones
        node.rpc("anvil_setBalance", address, hex(DEV_BALANCE))


def restart_anvil(node: AnvilNode, fund: list[str], w3: Web3, contract: str) -> bool:
    """The managed chain died under us: start it again from its last saved state, on the same port; the
    worker re-anchors what the chain lost (anchoring/reconcile.py). False if it will not start, or came back
    without the registry (saved before it was deployed): then serve exits, and its next start deploys it."""
    log.error("the managed chain (anvil) exited with code %s; starting it again from its last saved state — "
              "anchors it lost are re-anchored from the database", node.exited())
    try:
        node.restart()
        fund_dev_keys(node, fund)
        if not w3.eth.get_code(Web3.to_checksum_address(contract)):
            log.error("the managed chain came back without the registry %s; restart mrledger serve", contract)
            return False
    except (AnvilError, OSError, MrLedgerError) as exc:
        log.error("the managed chain does not start again: %s", exc)
        return False
    log.warning("the managed chain runs again at %s", node.rpc_url)
    return True


# -------------------------------------------------------------------------------- chain wiring


def resolve_contract(store: Store, w3: Web3, admin: LocalAccount, configured: str | None, version: int = 1) -> str:
    """MRL_CONTRACT_ADDRESS if set; else the deployment recorded for this chain if it still has code
    (a deleted anvil state file loses it); else deploy one now and record it — only while no other node
    leads this database: a second node with a chain of its own must not record a registry the leader's chain
    lacks (the leader would take it on its next start)."""
    chain_id = int(w3.eth.chain_id)
    if configured:
        address = Web3.to_checksum_address(configured)
        if not w3.eth.get_code(address):
            raise ServeError(f"MRL_CONTRACT_ADDRESS {address} has no code on chain {chain_id}")
        return address
    recorded = Outbox(store).deployment(chain_id)
    if recorded is not None and w3.eth.get_code(Web3.to_checksum_address(recorded.contract)):
        return recorded.contract
    if recorded is not None:
        log.warning("recorded registry %s has no code on chain %d (chain reset?); deploying a new one",
                    recorded.contract, chain_id)
    try:
        with exclusive(store.engine, LEADER_LOCK):
            info = deploy_and_record(store, w3, admin, version=version)
    except LockHeld:
        raise ServeError(f"the registry {recorded.contract if recorded else ''} this database records for chain "
                         f"{chain_id} is not on this node's chain, and another node leads this database: point "
                         "MRL_RPC_URL at the leader's chain (its serve.json says where) and set "
                         "MRL_CONTRACT_ADDRESS") from None
    log.info("deployed registry %s (v%d) on chain %d at block %d", info.contract, version, chain_id,
             info.deployed_block)
    return info.contract


# -------------------------------------------------------------------------------- trust shared by a region


def region_trust(settings: Settings, store: Store) -> tuple[Settings, bool]:
    """The settings this node verifies with, and whether it may lead (seal and sign).

    Nodes of one ledger must verify against the same trust. Production sets ``MRL_TRUST_ANCHORS`` on every
    node (the one documented setting). Without it, the first node creates a development CA and records its
    certificates in the database (``record_dev_trust``); a node that has no dev CA of its own but finds one
    recorded — a second node on the same database — verifies with that one instead of creating another (which
    made it call every receipt tampered), and, holding none of the hospitals' keys, never takes over sealing."""
    from mrledger.node.pki import dev_dir
    from mrledger.service.pki_dev import DevCA

    if settings.trust_anchors or DevCA.exists(dev_dir(settings)):
        return settings, True
    recorded = shared_get(store, DEV_TRUST)
    if recorded is None:
        return settings, True
    pems = json.loads(recorded)
    directory = settings.data_dir / "region-trust"
    directory.mkdir(mode=0o700, exist_ok=True)
    files = []
    for name in ("root", "intermediate"):
        path = directory / f"{name}.crt.pem"
        path.write_text(pems[name])
        files.append(path)
    log.warning("this database's batches are signed by another node's development CA (recorded in the database): "
                "verifying with it (%s); this node holds no hospital keys, so it will not seal or anchor", directory)
    return settings.model_copy(update={"trust_anchors": files[:1], "trust_intermediates": files[1:],
                                       "sign_batches": False, "require_signatures": settings.require_signatures
                                       if settings.require_signatures is not None else True}), False


def record_dev_trust(store: Store, dev: Any) -> None:
    """Record this node's dev CA certificates for the nodes that come after it (first writer wins); a node
    whose own dev CA differs from the recorded one is told, since each would refuse the other's batches."""
    if dev is None:
        return
    mine = json.dumps({"root": dev.root_file.read_text(), "intermediate": dev.intermediate_file.read_text()})
    if shared_put_first(store, DEV_TRUST, mine, datetime.now(UTC)) != mine:
        log.error("this node's development CA (%s) is not the one recorded in this database by the node that "
                  "came first: the two refuse each other's batch signatures. Use one trust for the region "
                  "(MRL_TRUST_ANCHORS), or remove %s so that this node verifies with the recorded CA",
                  dev.directory, dev.directory)


# -------------------------------------------------------------------------------- the node


def _admin_token(ledger: Services, data_dir: Path) -> Path | None:
    """Create the first admin token and leave it in a 0600 file (it is never printed or logged)."""
    path = data_dir / ADMIN_TOKEN
    if ledger.access.count_tokens("admin") == 0:
        path.unlink(missing_ok=True)
        write_secret(path, ledger.access.create_token("admin", "created by mrledger serve", datetime.now(UTC)))
    return path if path.is_file() else None


def _http_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(settings: Settings, echo: Callable[[str], None] = print) -> int:
    """Run the node until SIGINT or SIGTERM; 0 after a clean shutdown, 1 if a part failed."""
    import uvicorn

    stop = threading.Event()
    server: uvicorn.Server | None = None

    def _on_signal(signum: int, frame: object) -> None:
        if stop.is_set() and server is not None:
            server.force_exit = True  # a second Ctrl-C: do not wait for open connections
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    node: AnvilNode | None = None
    background: Background | None = None
    extra: ApiProcesses | None = None
    health: ChainHealth | None = None
    threads: list[threading.Thread] = []
    with contextlib.ExitStack() as stack:
        try:
            try:  # one serve per data dir: two would run two anvils on one state file
                stack.enter_context(file_lock(data_dir / "serve.lock"))
            except LockHeld:
                raise ServeError(f"another mrledger serve is running on {data_dir}/") from None
            # A crashed run leaves its serve.json behind; it must not describe this run until this run writes it.
            (data_dir / SERVE_INFO).unlink(missing_ok=True)
            admin_key_file, submitter_key_file = key_files(settings)
            admin = load_key(admin_key_file, create=not settings.admin_key_file)
            submitter = load_key(submitter_key_file, create=not settings.submitter_key_file)
            fund: list[str] = [admin.address, submitter.address]
            regional_key = regional_key_for(settings)
            if settings.rpc_url:
                rpc_url = settings.rpc_url
            else:
                node = start_anvil(data_dir, fund, settings.anvil_bin)
                rpc_url = node.rpc_url
            # Every chain call has a timeout, and a node known not to answer is not asked (anchoring/health.py).
            health = ChainHealth(rpc_url).start()
            w3 = Web3(GuardedHTTPProvider(rpc_url, health, timeout=settings.rpc_timeout))
            store = open_node_store(settings)
            contract = resolve_contract(store, w3, admin, settings.contract_address, settings.registry_version)
            chain_id = int(w3.eth.chain_id)
            confirmations = settings.confirmations or default_confirmations(chain_id)
            # No admin key for the API: registration on chain is the leader's (its sealer's) job only.
            chain = chain_context(settings, w3, rpc_url, contract, chain_id, submitter=submitter, admin=None,
                                  confirmations=confirmations, health=health)
            settings, can_lead = region_trust(settings, store)
            pki = configure(settings, seal=settings.worker and can_lead)  # creates the dev PKI the child loads
            record_dev_trust(store, pki.dev)
            # The sealer and the anchoring worker run in a child process (node/background.py says why): it signs,
            # /metrics here reports it (``sign_stats``), and it says whether it leads (``role``).
            sign_stats = shared_sign_stats() if settings.worker else None
            role = shared_role() if settings.worker else None
            ledger = build(settings, store, chain, pki, confirmations=confirmations, regional_key=regional_key,
                           sign_stats=sign_stats,
                           node_role=(lambda: None) if role is None else lambda: ROLE_NAMES.get(role.value))
            if settings.worker:
                background = Background(Spec(
                    settings.model_copy(update={"rpc_url": rpc_url}), contract, chain.chain_id,
                    ledger.sign_stats.memory if pki.signing is not None else None,
                    confirmations=confirmations, role=role, can_lead=can_lead))
                background.start()
            ledger.access.start_buffering()
            stack.callback(close_logged, ledger.access.close, "access log")  # flushed on the way out
            ledger.events.start_buffering()  # verification ids (decisions look them up after a flush)
            stack.callback(close_logged, ledger.events.close, "verification ids")
            token_file = _admin_token(ledger, data_dir)
            try:
                sock = bind(settings.host, settings.port, shared=settings.api_processes > 1)
            except OSError as exc:
                raise ServeError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
            port = sock.getsockname()[1]
            # What a process spawned with this node's services needs: the extra API processes, an audit's processes.
            spec = ApiSpec(settings.model_copy(update={"rpc_url": rpc_url}), contract, chain.chain_id, confirmations,
                           port)
            server = api_server(settings, ledger, spec)
            threads.append(threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True))
            tune_gc()
            for t in threads:
                t.start()
            while not server.started:
                if not threads[-1].is_alive():
                    raise ServeError("the HTTP server did not start (see the log above)")
                if stop.wait(0.05):
                    return 0
            try:
                if background is not None and not background.wait_ready(stop):
                    return 0
            except RuntimeError as exc:
                raise ServeError(str(exc)) from exc
            if settings.api_processes > 1:
                extra = ApiProcesses(spec, settings.api_processes)
                extra.start()
            base = _http_url(settings.host, port)
            info: dict[str, Any] = {"pid": os.getpid(), "api": base + "/v1", "rpc_url": rpc_url,
                                    "chain_id": chain.chain_id, "contract": contract,
                                    "anvil_pid": node.pid if node else None,
                                    "worker_pid": background.process.pid if background else None,
                                    "api_pids": [os.getpid(), *(extra.pids if extra else [])],
                                    **pki.info()}  # certificate paths only, for `mrledger verify --trust`
            partial = data_dir / (SERVE_INFO + ".tmp")
            partial.write_text(json.dumps(info, indent=2) + "\n")
            partial.replace(data_dir / SERVE_INFO)  # atomic: readers never see half a file
            log.info("chain %d at %s, registry %s, anchoring as %s", chain.chain_id, rpc_url, contract,
                     submitter.address)
            echo(f"mrledger is serving on {base}\n"
                 f"  API           {base}/v1\n"
                 f"  OpenAPI docs  {base}/docs\n"
                 + (f"  admin token   in {token_file} (0600)\n" if token_file else
                    "  admin token   file removed; make another: mrledger token create --role admin\n")
                 + f"  chain         {chain.chain_id} at {rpc_url}" + (" (managed anvil)" if node else "")
                 + f", registry {contract}\n"
                 + f"  signatures    {pki.describe()}\n"
                 + f"  data          {data_dir}/\nPress Ctrl-C to stop.")
            while not stop.wait(0.5):
                if pki.trust is not None:
                    pki.trust.refresh(datetime.now(UTC))  # new CRL files take effect without a restart
                dead = [t.name for t in threads if not t.is_alive()]
                if background is not None and not background.alive():
                    dead.append("the sealer/anchoring process")
                if extra is not None:
                    dead += extra.dead()
                if node is not None and node.exited() is not None and not restart_anvil(node, fund, w3, contract):
                    dead.append("the managed chain")
                if dead:
                    log.error("%s stopped unexpectedly; shutting down", ", ".join(dead))
                    return 1
            log.info("shutting down")
            return 0
        except (ServeError, MrLedgerError) as exc:
            log.error("cannot serve: %s", exc)
            return 1
        except Exception:
            log.exception("cannot serve")
            return 1
        finally:
            if server is not None:
                server.should_exit = True
            stop.set()
            if extra is not None:
                extra.stop()
            if background is not None:
                background.stop()
            for t in threads:
                t.join(timeout=15)
            if health is not None:
                health.stop()
            if node is not None:
                node.stop()  # SIGTERM: anvil saves the chain, which then replaces the state file if it is whole
            (data_dir / SERVE_INFO).unlink(missing_ok=True)
