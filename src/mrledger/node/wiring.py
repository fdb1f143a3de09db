"""The node's composition root: how its parts are built from ``Settings`` — keys, the store, the regional key,
the chain context, the services the API serves and the anchoring worker.

Why one module: ``mrledger serve``'s API process, its sealer/anchoring child process (node/background.py) and the
CLI's database commands all build the same parts from the same settings. Written once here, each of them imports
it; before, the child re-wired its half by importing the parent's module (node/serve.py), a circle between the two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from mrledger.anchoring.chain import FINAL_DEPTH, ChainContext
from mrledger.anchoring.health import ChainHealth
from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
from mrledger.node.pki import NodePki
from mrledger.node.settings import Settings
from mrledger.service.decisions import RegionalKeyError, load_regional_key
from mrledger.service.ledger import Services, build_services
from mrledger.service.pki import SignStats
from mrledger.service.recognition import load_catalogue
from mrledger.service.witnesses import WitnessPolicy, load_witness_keys
from mrledger.store import Store
from mrledger.store.anchors import Outbox
from mrledger.store.crypto import MasterKey, write_master_key_file
from mrledger.store.errors import MasterKeyError
from mrledger.store.keyfiles import KeyFileError, read_private

log = logging.getLogger("mrledger.serve")

MASTER_KEY = "master.key"


class ServeError(Exception):
    """The node cannot start as configured; the message says what to change."""


# -------------------------------------------------------------------------------- secrets on disk


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, from the first byte (no chmod window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def load_key(path: Path, *, create: bool) -> LocalAccount:
    """A private key from a file; with ``create``, a new random key is generated when it is missing. A file
    group or others may read is refused (store/keyfiles.py)."""
    if not path.exists():
        if not create:
            raise ServeError(f"key file {path} does not exist")
        account: LocalAccount = Account.create()
        write_secret(path, "0x" + bytes(account.key).hex())
        log.info("generated dev key %s for %s", path, account.address)
        return account
    try:
        text = read_private(path, "key file").decode("utf-8", errors="replace")
    except KeyFileError as exc:  # refused, not warned about: the chain keys spend the node's funds
        raise ServeError(str(exc)) from exc
    except OSError as exc:
        raise ServeError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    try:
        loaded: LocalAccount = Account.from_key(text.strip())
    except Exception as exc:  # never echo the file's content
        raise ServeError(f"{path} does not hold a valid private key") from exc
    return loaded


def open_existing_store(settings: Settings) -> Store:
    """The node's database for the CLI: refuse to create an empty one in the wrong directory. With the
    node's master key when one is configured or in the data dir (checked at open); without one, commands
    that need no record (tokens, hospitals, eligibility) still work: an admin box needs no patient-data key."""
    if settings.database_url is None and not (settings.data_dir / "mrledger.db").is_file():
        raise ServeError(f"no mrledger database in {settings.data_dir}/ — start `mrledger serve` there first, "
                         "or set MRL_DATA_DIR / MRL_DATABASE_URL")
    try:
        return Store.open(settings.db_url, master_key=master_key_for(settings, create=False))
    except MasterKeyError as exc:
        raise ServeError(str(exc)) from exc


def master_key_for(settings: Settings, *, create: bool) -> MasterKey | Path | None:
    """Where the node's master key comes from (docs/encryption.md): MRL_MASTER_KEY_FILE (returned as a
    path: the store re-reads it after a rotation), MRL_MASTER_KEY, else ``<data_dir>/master.key`` — with
    ``create``, generated there (0600) when missing, so ``mrledger serve`` with no configuration encrypts
    too. None when nothing is configured and ``create`` is false."""
    if settings.master_key_file is not None and settings.master_key is not None:
        raise ServeError("set MRL_MASTER_KEY_FILE or MRL_MASTER_KEY, not both")
    if settings.master_key_file is not None:
        if not settings.master_key_file.is_file():
            raise ServeError(f"MRL_MASTER_KEY_FILE {settings.master_key_file} does not exist")
        return settings.master_key_file.resolve()
    if settings.master_key is not None:
        try:
            return MasterKey.from_text(settings.master_key.get_secret_value(), "MRL_MASTER_KEY")
        except MasterKeyError as exc:
            raise ServeError(str(exc)) from exc
    path = (settings.data_dir / MASTER_KEY).resolve()
    if path.is_file():
        return path
    if not create:
        return None
    write_master_key_file(path, MasterKey.generate())
    log.info("generated the master key %s (0600): the database cannot be read without it, so keep a copy "
             "apart from the database's backups (docs/encryption.md)", path)
    return path


def regional_key_for(settings: Settings) -> bytes:
    """The regional key patient, result and encounter hashes are made under (docs/kpis.md §4): MRL_REGIONAL_KEY,
    else MRL_REGIONAL_KEY_FILE, else ``<data_dir>/regional.key``, generated once (0600). A fresh key per start
    would make the same encounter a new one after every restart, and two nodes hash alike only with one key: so
    on PostgreSQL — a database several nodes may share — a configured key is required."""
    value = settings.regional_key.get_secret_value() if settings.regional_key is not None else None
    if value is not None and settings.regional_key_file is not None:
        raise ServeError("set MRL_REGIONAL_KEY or MRL_REGIONAL_KEY_FILE, not both")
    if value is None and settings.regional_key_file is None and not settings.db_url.startswith("sqlite"):
        raise ServeError("on PostgreSQL the regional key must be configured: set MRL_REGIONAL_KEY_FILE (a file "
                         "holding at least 32 bytes as hex, mode 0600) or MRL_REGIONAL_KEY, the same on every node "
                         "of the region (docs/kpis.md §4); generate one with `openssl rand -hex 32`")
    try:
        return load_regional_key(value, settings.regional_key_file, settings.data_dir)
    except RegionalKeyError as exc:
        raise ServeError(str(exc)) from exc


def open_node_store(settings: Settings) -> Store:
    """The store ``mrledger serve`` runs on, always encrypted. A master key generated just now for a
    database that already has keys is the wrong one (the file was lost): it is removed again and the error
    says to restore the file, rather than leaving a key that will never fit."""
    default = settings.master_key_file is None and settings.master_key is None
    generated = default and not (settings.data_dir / MASTER_KEY).is_file()
    source = master_key_for(settings, create=True)
    try:
        return Store.open(settings.db_url, master_key=source)
    except MasterKeyError as exc:
        if generated and isinstance(source, Path):
            source.unlink(missing_ok=True)
            raise ServeError(f"{source} is missing and the database already has keys: restore this database's "
                             "master key file (or set MRL_MASTER_KEY_FILE / MRL_MASTER_KEY)") from exc
        raise


# -------------------------------------------------------------------------------- chain and services


def key_files(settings: Settings) -> tuple[Path, Path]:
    """The registry admin's and the anchoring account's key files: configured, else dev keys in the data dir."""
    return (settings.admin_key_file or settings.data_dir / "admin.key",
            settings.submitter_key_file or settings.data_dir / "submitter.key")


def admin_lock_file(settings: Settings) -> Path:
    """Locked around admin-key transactions: the API and the sealer process share one nonce sequence."""
    return settings.data_dir.resolve() / "admin-key.lock"


def chain_context(settings: Settings, w3: Web3, rpc_url: str, contract: str, chain_id: int, *,
                  submitter: LocalAccount, admin: LocalAccount | None, confirmations: int,
                  health: ChainHealth | None = None) -> ChainContext:
    """The chain as both processes see it. Its cache calls a block final at no less than the configured
    confirmations (``ChainContext.final_depth``)."""
    return ChainContext(w3, contract, chain_id, submitter=submitter, admin=admin, rpc_url=rpc_url,
                        admin_lock_file=admin_lock_file(settings), final_depth=max(FINAL_DEPTH, confirmations),
                        health=health)


def build(settings: Settings, store: Store, chain: ChainContext, pki: NodePki, *, confirmations: int,
          regional_key: bytes, sign_stats: SignStats | None = None,
          node_role: Callable[[], str | None] = lambda: None) -> Services:
    """The services the API serves, configured from ``settings`` (catalogue, trust, sealing delay)."""
    return build_services(store, chain, confirmations=confirmations, catalogue=load_catalogue(settings.catalogue_file),
                          trust=pki.trust.store if pki.trust else None, require_signatures=pki.require_signatures,
                          regional_key=regional_key, max_sealing_delay=timedelta(seconds=settings.max_sealing_delay),
                          sign_stats=sign_stats, node_role=node_role, witnesses=witness_policy(settings))


def witness_policy(settings: Settings) -> WitnessPolicy | None:
    """``MRL_WITNESS_*`` as a policy; a key or checkpoint file that cannot be read stops the node at start-up
    (WitnessSetupError), with the file named."""
    if settings.witness_k == 0:
        return None
    return WitnessPolicy(load_witness_keys(settings.witness_keys), settings.witness_k, settings.witness_checkpoints)


def anchor_worker(settings: Settings, store: Store, rpc_url: str, contract: str, submitter: LocalAccount,
                  confirmations: int) -> AnchorWorker:
    """The anchoring worker, on a web3 client of its own (its thread must not share the sealer's)."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": settings.rpc_timeout}))
    config = WorkerConfig(confirmations=confirmations, replace_after=timedelta(seconds=settings.replace_after),
                          send_every=settings.anchor_every)
    recorded = Outbox(store).deployment()
    # A v2 registry is searched by its logs (anchoring/registries.py): from its deployment, when recorded.
    start = recorded.deployed_block if recorded and recorded.contract.lower() == contract.lower() else 0
    return AnchorWorker(store, w3, contract, submitter, config, fault=settings.fault_inject, from_block=start)
