"""What a process that ``mrledger serve`` spawns with the node's services needs (``ApiSpec``), and how it builds
them (``spec_services``): an extra API process (node/api_processes.py) and an audit job's processes
(node/audit_pool.py) build theirs alike, as the first process built its own. Apart from both so that neither
imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrledger.node.settings import Settings

if TYPE_CHECKING:
    from mrledger.anchoring.health import ChainHealth
    from mrledger.service.ledger import Services

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


@dataclass(frozen=True)
class ApiSpec:
    """What a spawned process needs, pickled to it: the settings (with the chain's ``rpc_url`` set) and what
    the first process found out (the registry, the chain id, the confirmations and the port it bound)."""

    settings: Settings
    contract: str
    chain_id: int
    confirmations: int
    port: int


def spec_services(spec: ApiSpec) -> tuple[Services, ChainHealth]:
    """The services of a process spawned with ``spec`` (an extra API process, an audit process: node/audit_pool.py),
    built as the first process built its own, and the chain's health watcher to stop when the process ends."""
    from web3 import Web3

    from mrledger.anchoring.health import ChainHealth, GuardedHTTPProvider
    from mrledger.node.pki import configure
    from mrledger.node.wiring import build, chain_context, key_files, load_key, open_node_store, regional_key_for

    settings = spec.settings
    assert settings.rpc_url is not None  # serve sets the managed chain's
    health = ChainHealth(settings.rpc_url).start()
    try:
        _, submitter_key = key_files(settings)
        submitter = load_key(submitter_key, create=False)
        w3 = Web3(GuardedHTTPProvider(settings.rpc_url, health, timeout=settings.rpc_timeout))
        store = open_node_store(settings)
        # No admin key: registration on chain is the sealer's (the region's leader's) job, not this process's.
        chain = chain_context(settings, w3, settings.rpc_url, spec.contract, spec.chain_id, submitter=submitter,
                              admin=None, confirmations=spec.confirmations, health=health)
        pki = configure(settings, seal=False)
        ledger = build(settings, store, chain, pki, confirmations=spec.confirmations,
                       regional_key=regional_key_for(settings))
    except BaseException:
        health.stop()
        raise
    return ledger, health


__all__ = ["LOG_FORMAT", "ApiSpec", "spec_services"]
