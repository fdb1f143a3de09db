"""Deploying the registry and registering hospitals on it, recorded in the database.

Why recorded: every node and every receipt must name the same (chain id, contract); the deployment row
is what ``mrledger serve`` and the worker read instead of trusting a copy-pasted address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from eth_account.signers.local import LocalAccount
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.ledger import hospital_key
from mrledger.store import Store
from mrledger.store.anchors import DeploymentInfo, Outbox


def deploy_and_record(store: Store, w3: Web3, admin: LocalAccount) -> DeploymentInfo:
    """Deploy a registry (``admin`` gets the admin role) and record it as this ledger's deployment."""
    address = reg.deploy_registry(w3, admin)
    block = int(w3.eth.block_number)
    info = DeploymentInfo(int(w3.eth.chain_id), address, block, admin.address)
    Outbox(store).record_deployment(info.chain_id, info.contract, info.deployed_block, info.admin, datetime.now(UTC))
    return info


def name_hash(name: str) -> bytes:
    """The chain stores a hash of the hospital's name, not the name: enough to tell registrations apart."""
    return hashlib.sha256(name.encode("utf-8")).digest()


def ensure_hospital_on_chain(
    w3: Web3, contract: str, admin: LocalAccount, hospital_id: str, name: str, submitters: Sequence[str]
) -> bool:
    """Register ``hospital_id`` with ``submitters`` unless the registry knows it; True if it registered."""
    key = hospital_key(hospital_id)
    if reg.hospital_of(w3, contract, key).registered:
        for s in submitters:
            if not reg.is_submitter(w3, contract, key, s):
                reg.add_submitter(w3, contract, admin, key, s)
        return False
    reg.register_hospital(w3, contract, admin, key, name_hash(name), list(submitters))
    return True
