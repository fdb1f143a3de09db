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
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.errors import AnchoringError
from mrledger.ledger import hospital_key
from mrledger.ledger.status import INCLUDED, SUBMITTED
from mrledger.store import Store
from mrledger.store.anchor_rows import DeploymentInfo
from mrledger.store.anchors import Outbox


def deploy_and_record(store: Store, w3: Web3, admin: LocalAccount, *, version: int = 1,
                      predecessor: str | None = None) -> DeploymentInfo:
    """Deploy a registry of ABI ``version`` (``admin`` gets the admin role) and record it as this ledger's
    deployment; a v2 one may succeed a v1 ``predecessor`` in place (``upgrade_in_place``)."""
    if version == 2:
        address = reg2.deploy_registry(w3, admin, predecessor=predecessor)
    elif version == 1 and predecessor is None:
        address = reg.deploy_registry(w3, admin)
    else:
        raise ValueError(f"cannot deploy a v{version} registry{' with a predecessor' if predecessor else ''}")
    block = int(w3.eth.block_number)
    info = DeploymentInfo(int(w3.eth.chain_id), address, block, admin.address, version)
    Outbox(store).record_deployment(info.chain_id, info.contract, info.deployed_block, info.admin, datetime.now(UTC),
                                    registry_version=version)
    return info


def upgrade_in_place(store: Store, w3: Web3, admin: LocalAccount) -> DeploymentInfo:
    """Move this ledger from its v1 registry to a new v2 one (docs/anchoring.md, "Registry v2").

    Why these steps, in this order: the v1 registry is paused first, so no batch can be anchored there after
    the v2 registry has read where each hospital's sequence ends (it reads that from v1 when the hospital is
    registered on it, which the leading node does at its next start); and the ledger must hold no batch in
    flight or merely sealed — a sealed batch's signature names the registry it was sealed for, and an
    anchoring transaction sent to v1 would revert once it is paused. Old receipts keep naming v1 and keep
    verifying against it: it stays readable, paused."""
    outbox = Outbox(store)
    chain_id = int(w3.eth.chain_id)
    current = outbox.deployment(chain_id)
    if current is None:
        raise AnchoringError(f"this ledger records no registry on chain {chain_id}: deploy one (--registry-version 2)")
    if current.registry_version != 1:
        raise AnchoringError(f"the recorded registry {current.contract} is already v{current.registry_version}")
    unsettled = outbox.unconfirmed()
    if unsettled or outbox.states(SUBMITTED) or outbox.states(INCLUDED):
        raise AnchoringError(f"{unsettled} batch(es) are not confirmed on {current.contract} yet: stop intake, let "
                             "the node anchor them, then upgrade (no batch may be sealed for the old registry and "
                             "anchored on the new one)")
    if not reg.is_paused(w3, current.contract):
        reg.pause(w3, current.contract, admin)
    return deploy_and_record(store, w3, admin, version=2, predecessor=current.contract)


def name_hash(name: str) -> bytes:
    """The chain stores a hash of the hospital's name, not the name: enough to tell registrations apart."""
    return hashlib.sha256(name.encode("utf-8")).digest()


def ensure_hospital_on_chain(
    w3: Web3, contract: str, admin: LocalAccount, hospital_id: str, name: str, submitters: Sequence[str]
) -> bool:
    """Register ``hospital_id`` with ``submitters`` unless the registry knows it; True if it registered. The
    same calls on both ABIs (a v2 registry with a predecessor carries the hospital's sequence over here)."""
    key = hospital_key(hospital_id)
    abi = reg2 if reg2.registry_version(w3, contract) == 2 else reg
    if abi.hospital_of(w3, contract, key).registered:
        for s in submitters:
            if not abi.is_submitter(w3, contract, key, s):
                abi.add_submitter(w3, contract, admin, key, s)
        return False
    abi.register_hospital(w3, contract, admin, key, name_hash(name), list(submitters))
    return True
