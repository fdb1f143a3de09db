"""Two `mrledger serve` nodes on one PostgreSQL (issue 15, point 6), as real process trees on the machine's
PostgreSQL and one chain: the second node starts as a follower with a clear log line, serves the API,
verifies with the trust the first recorded in the database, never seals or anchors while the first leads —
and takes over when the leader stops, if it holds the hospitals' keys.

Before: with the same settings the second node exited with a LockHeld traceback after its API was briefly
up; with MRL_WORKER=false it created its own development CA and answered every receipt tampered
(signature); with their own submitter keys both anchored (BatchAlreadyAnchored reverts, UniqueViolation).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from web3 import Web3

from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.node import AnvilNode, free_port
from mrledger.ledger import hospital_key
from tests.conftest import TEST_MASTER_KEY, _pg_schema_engine
from tests.node.test_serve import HOSPITALS, Node, _submit, _wait_receipts, anchored_events, http_client, record
from tests.node.test_serve_faults import _tokens

pytestmark = [pytest.mark.anvil, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> Iterator[str]:
    for engine in _pg_schema_engine():
        yield engine.url.render_as_string(hide_password=False)


def _node(tmp_path: Path, name: str, pg_url: str, **env: str) -> Node:
    node = Node(tmp_path / name / "data", free_port())
    (tmp_path / name).mkdir(exist_ok=True)
    # One region: one master key and one regional key (a node on PostgreSQL refuses to start without the latter).
    node.env.update(MRL_DATABASE_URL=pg_url, MRL_MASTER_KEY=TEST_MASTER_KEY, MRL_REGIONAL_KEY="7a" * 32, **env)
    return node


def _role(node: Node) -> str:
    ready = httpx.get(f"http://127.0.0.1:{node.port}/readyz", timeout=5).json()
    return str(ready["checks"]["anchoring"]["role"])


def test_a_second_node_follows_and_verifies_with_the_regions_trust(tmp_path: Path, pg_url: str) -> None:
    first = _node(tmp_path, "a", pg_url)
    second: Node | None = None
    try:
        info = first.start()
        # Its own keys and data dir, the same database and chain: what a second node of a region looks like.
        second = _node(tmp_path, "b", pg_url, MRL_RPC_URL=info["rpc_url"], MRL_CONTRACT_ADDRESS=info["contract"])
        other = second.start()
        assert "runs as a follower" in second.log and "verifying with it" in second.log, second.log
        assert (_role(first), _role(second)) == ("leader", "follower")
        with http_client() as client:
            tokens = _tokens(first, client)
            # Submitted through the follower, sealed and anchored by the leader, verified by both.
            accepted = {h: _submit(client, second, tokens, h, [record(h, i) for i in range(4)]) for h in HOSPITALS}
            receipts = _wait_receipts(client, second, tokens, accepted)
            for node in (first, second):
                answer = client.post(f"{node.api}/verify", json={"receipt": receipts["gz-001", "LAB-00001"]}).json()
                assert answer["verdict"] == "authentic" and answer["signature"]["status"] == "valid", answer
        w3 = Web3(Web3.HTTPProvider(info["rpc_url"]))
        submitters = {w3.eth.get_transaction(e.tx_hash)["from"] for e in anchored_events(w3, info["contract"])}
        assert len(submitters) == 1  # one node anchored, the leader
        assert "anchoring step" not in second.log and "sealed" not in second.log
        for text in ("BatchAlreadyAnchored", "UniqueViolation", "LockHeld", "Traceback"):
            assert text not in first.log + second.log, text
        assert other["contract"] == info["contract"]
    finally:
        for n in (second, first):
            if n is not None:
                n.cleanup()


@pytest.mark.parametrize("how", ["stop", "kill-9"])
def test_a_follower_with_the_keys_takes_over_when_the_leader_stops(tmp_path: Path, pg_url: str, how: str) -> None:
    """The region's documented settings on both nodes: the same chain (not one node's managed anvil, which
    would stop with it), one trust and the hospitals' keys (a shared volume, an HSM), one admin and submitter
    key. The leader stops — cleanly, or killed with SIGKILL right after accepting results it has not anchored
    yet (its sealer child dies with it: PR_SET_PDEATHSIG, and PostgreSQL drops the leader lock with its
    connection); the follower takes the lock within 10 s (issue 20) and anchors from then on: every accepted
    result ends in a confirmed batch, and every batch is anchored once."""
    chain = AnvilNode().start()
    first: Node | None = None
    second: Node | None = None
    try:
        keys = {}
        for name, key in (("admin", chain.private_keys[0]), ("submitter", chain.private_keys[1])):
            keys[name] = tmp_path / f"{name}.key"
            keys[name].write_text(key + "\n")
            keys[name].chmod(0o600)
        common = {"MRL_RPC_URL": chain.rpc_url, "MRL_ADMIN_KEY_FILE": str(keys["admin"]),
                  "MRL_SUBMITTER_KEY_FILE": str(keys["submitter"])}
        first = _node(tmp_path, "a", pg_url, **common)
        info = first.start()
        pki = first.data_dir / "pki"
        second = _node(tmp_path, "b", pg_url, **common, MRL_CONTRACT_ADDRESS=info["contract"],
                       MRL_TRUST_ANCHORS=str(pki / "root.crt.pem"),
                       MRL_TRUST_INTERMEDIATES=str(pki / "intermediate.crt.pem"),
                       MRL_SIGNING_KEYS_DIR=str(pki / "hospitals"))
        second.start()
        assert _role(second) == "follower"
        with http_client() as client:
            tokens = _tokens(first, client)
            accepted = {h: _submit(client, second, tokens, h, [record(h, i) for i in range(2)]) for h in HOSPITALS}
            _wait_receipts(client, second, tokens, accepted)
            assert "sealed" not in second.log
            if how == "stop":
                assert first.stop() == 0  # the leader goes away; its lock is released
            else:
                for h in HOSPITALS:  # accepted by the leader (202), not anchored by it
                    accepted[h] += _submit(client, first, tokens, h, [record(h, i) for i in range(5, 7)])
                killed = time.monotonic()
                first.stop(signal.SIGKILL, timeout=10)
                while _role(second) != "leader":
                    assert time.monotonic() - killed < 10, f"no takeover within 10 s:\n{second.log}"
                    time.sleep(0.2)
            for h in HOSPITALS:
                accepted[h] += _submit(client, second, tokens, h, [record(h, i) for i in range(10, 12)])
            receipts = _wait_receipts(client, second, tokens, accepted, timeout=120)
            assert "took over as the leader" in second.log, second.log
            assert _role(second) == "leader"
            answer = client.post(f"{second.api}/verify", json={"receipt": receipts["qd-002", "LAB-00011"]}).json()
            assert answer["verdict"] == "authentic", answer
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        anchored = [(e.hospital_key, e.seq) for e in anchored_events(w3, info["contract"])]
        assert len(anchored) == len(set(anchored)), anchored  # no batch anchored twice
        for h in HOSPITALS:
            last = reg2.last_seq(w3, info["contract"], hospital_key(h))
            assert sorted(seq for key, seq in anchored if key == hospital_key(h)) == list(range(1, last + 1))
            assert last >= 2
    finally:
        for n in (second, first):
            if n is not None:
                n.cleanup()
        chain.stop()
