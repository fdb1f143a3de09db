"""Service wiring: one ``Ledger`` object holds the store, the chain context and the settings, and offers
the operations the HTTP routes and the CLI share. Routes stay thin (parse, authorise, call, shape).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_account.signers.local import LocalAccount
from web3 import Web3

from anchoring.deploy import ensure_hospital_on_chain
from ledger import ResultRecord
from store import Accepted, Store
from store.access import Access
from store.anchors import Outbox


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ChainContext:
    """The chain this node anchors on: a web3 client, the registry, and the accounts it may use."""

    w3: Web3
    contract: str
    chain_id: int
    submitter: LocalAccount | None = None
    admin: LocalAccount | None = None
    rpc_url: str = ""
    _head: tuple[float, int] = field(default=(0.0, 0), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def head(self, max_age: float = 0.5) -> int:
        """The latest block number, cached for ``max_age`` seconds: confirmations are reported on every
        verification, and asking the node each time would dominate the verification latency."""
        now = time.monotonic()
        with self._lock:
            at, number = self._head
            if now - at <= max_age:
                return number
        number = int(self.w3.eth.block_number)
        with self._lock:
            self._head = (now, number)
        return number


class Ledger:
    """What the API and CLI operate on."""

    def __init__(self, store: Store, chain: ChainContext | None = None, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.chain = chain
        self.access = Access(store)
        self.outbox = Outbox(store)
        self.clock = clock

    def register_hospital(self, hospital_id: str, name: str, submitters: Sequence[str] = ()) -> bool:
        """Register in the database and, when this node holds the registry's admin key, on chain with the
        node's anchoring account as submitter. Returns whether it was registered on chain now."""
        self.store.register_hospital(hospital_id, name)
        chain = self.chain
        if chain is None or chain.admin is None:
            return False
        accounts = list(submitters) or ([chain.submitter.address] if chain.submitter else [])
        return ensure_hospital_on_chain(chain.w3, chain.contract, chain.admin, hospital_id, name, accounts)

    def submit(self, hospital_id: str, records: Sequence[ResultRecord]) -> list[Accepted]:
        return self.store.submit(hospital_id, records)
