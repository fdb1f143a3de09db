"""API fixtures: a ledger on a fresh database (SQLite and PostgreSQL, via ``engine``), a TestClient, one
token per role, and — for tests marked ``anvil`` — a real chain with the registry deployed."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from eth_account import Account
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from web3 import Web3

from mrledger.anchoring.chain import ChainContext
from mrledger.anchoring.deploy import deploy_and_record
from mrledger.anchoring.node import AnvilNode, free_port
from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
from mrledger.http.app import create_app
from mrledger.ledger import Receipt
from mrledger.ledger.status_check import StatusDocument, receipt_status_key
from mrledger.service.ledger import Services, build_services
from mrledger.store import Store
from mrledger.store.anchors import Outbox
from mrledger.store.receipts import anchor_section
from tests.conftest import TEST_KEY

HOSPITALS = {"gz-001": "Guangzhou First People's Hospital", "qd-002": "Qingdao Municipal Hospital"}
ROLES = ("admin", "doctor", "auditor", "hospital:gz-001", "hospital:qd-002")


class Clock:
    """The services' clock in tests: real time until a test sets ``now`` (services take their clock at
    construction; a test moves time through the clock it injected, not by replacing the service's)."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now if self.now is not None else datetime.now(UTC)


@dataclass
class Api:
    ledger: Services
    client: TestClient
    tokens: dict[str, str]
    node: AnvilNode | None = None
    clock: Clock = field(default_factory=Clock)
    options: dict[str, Any] = field(default_factory=dict)

    def rebuild(self, **options: Any) -> Services:
        """The services with other options (``build_services``: ``confirmations``, ``trust``, ``catalogue``, …)
        over the same store, chain, clock, regional key and signing figures (/metrics keeps the first services),
        answering through the same app from now on: a service is not reconfigured in place."""
        self.options = {**self.options, **options}
        self.ledger = build_services(self.ledger.store, self.ledger.chain, clock=self.clock,
                                     regional_key=self.ledger.regional_key, sign_stats=self.ledger.sign_stats,
                                     **self.options)
        self.client.app.state.ledger = self.ledger  # type: ignore[attr-defined]
        return self.ledger

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def anchor_all(self, steps: int = 20) -> None:
        """Seal every pending result and run the anchoring worker until nothing is left to anchor."""
        assert self.ledger.chain is not None and self.node is not None
        for h in HOSPITALS:
            while self.ledger.store.seal(h, 10_000) is not None:
                pass
        chain = self.ledger.chain
        assert chain.submitter is not None
        worker = AnchorWorker(self.ledger.store, chain.w3, chain.contract, chain.submitter, WorkerConfig())
        outbox = self.ledger.outbox
        for _ in range(steps):
            worker.step()
            if outbox.unconfirmed() == 0:
                return
        raise AssertionError("anchoring did not finish")


def _make(store: Store, chain: ChainContext | None = None, node: AnvilNode | None = None) -> Api:
    clock = Clock()
    ledger = build_services(store, chain, clock=clock)
    for hid, name in HOSPITALS.items():
        ledger.intake.register_hospital(hid, name)
    tokens = {role: ledger.access.create_token(role, f"test {role}", ledger.clock()) for role in ROLES}
    return Api(ledger, TestClient(create_app(ledger)), tokens, node, clock)


@pytest.fixture
def api(engine: Engine) -> Api:
    """The API without a chain (submission, lookups, authorisation, problems)."""
    return _make(Store(engine, master_key=TEST_KEY))


@contextmanager
def chain_api_on(engine: Engine, version: int) -> Iterator[Api]:
    """The API on a real anvil with a registry of ABI ``version`` (``chain_api``, ``chain_api_v2``)."""
    with AnvilNode() as node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, hub = (Account.from_key(k) for k in node.private_keys[:2])
        store = Store(engine, master_key=TEST_KEY)
        deployment = deploy_and_record(store, w3, admin, version=version)
        chain = ChainContext(w3, deployment.contract, deployment.chain_id, submitter=hub, admin=admin,
                             rpc_url=node.rpc_url)
        yield _make(store, chain, node)


@pytest.fixture
def chain_api(engine: Engine) -> Iterator[Api]:
    """The API with a real anvil node and a deployed (v1) registry; ``anchor_all()`` anchors what is sealed."""
    with chain_api_on(engine, 1) as api:
        yield api


@pytest.fixture
def chain_api_v2(engine: Engine) -> Iterator[Api]:
    """``chain_api`` on a v2 registry (one commitment word per batch binding the status map root)."""
    with chain_api_on(engine, 2) as api:
        yield api


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn on a free loopback port, for clients that need real HTTP (the CLI, a
    browser); yields the base URL and stops the server on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class CorsHandler(http.server.SimpleHTTPRequestHandler):
    """A witness's published --witness-out directory. Witnesses must send Access-Control-Allow-Origin (here
    ``*``): the /verify page fetches their checkpoints from another origin, and without it the browser hides
    the answer, so the witness counts as down."""

    cors = True

    def end_headers(self) -> None:
        if self.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def witness_site(directory: Path, handler: type[CorsHandler] = CorsHandler) -> Iterator[str]:
    """``directory`` served over HTTP on a loopback port, as a witness publishes its checkpoints; yields the URL
    (ending in ``/``: a verifier asks it for ``<hospital>.json``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def status_doc(store: Store, receipt: Receipt) -> StatusDocument:
    """What the node's ``…/status-proof`` serves for ``receipt`` (service/ledger.py), built from the store the same
    way: the map proof of its key as of the hospital's latest confirmed batch."""
    hospital = receipt.batch.hospital_id
    key = receipt_status_key(receipt)
    state = Outbox(store).latest_confirmed(hospital)
    assert key is not None and state is not None
    proven = store.status_proof(hospital, key, state.head.seq)
    assert proven is not None
    root, proof = proven
    return StatusDocument(hospital, key, state.head, root, proof, anchor_section(state, root))
