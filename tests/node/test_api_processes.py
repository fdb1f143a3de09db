"""`mrledger serve` with more than one API process (MRL_API_PROCESSES, node/api_processes.py): the processes share
the port, each answers with the whole API over the one database, they die and stop with serve, and one that dies
stops the node like any other part."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring.node import free_port
from mrledger.ledger import hospital_key
from tests.node.test_serve import Node, _alive, _submit, _wait_receipts, http_client, record
from tests.node.test_serve_faults import _descendants, _tokens, _wait_gone

pytestmark = pytest.mark.anvil


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "data", free_port())
    n.env["MRL_API_PROCESSES"] = "2"
    yield n
    n.cleanup()


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of ``pid`` in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_two_api_processes_share_the_port_and_both_serve(node: Node) -> None:
    info = node.start()
    assert node.proc is not None
    pids = info["api_pids"]
    assert len(pids) == 2 and pids[0] == info["pid"] and all(_alive(p) for p in pids)
    assert set(pids[1:]) <= _descendants(node.proc.pid)
    with http_client() as client:
        tokens = _tokens(node, client)
        accepted = {"gz-001": _submit(client, node, tokens, "gz-001", [record("gz-001", i) for i in range(5)])}
        receipts = list(_wait_receipts(client, node, tokens, accepted).values())
    before = {p: _cpu_ticks(p) for p in pids}
    # A new connection per request (``http_client`` keeps none alive): the kernel spreads connections, not
    # requests, over the processes.
    with http_client() as fresh:
        for i in range(300):
            r = fresh.post(f"{node.api}/verify", json={"receipt": receipts[i % len(receipts)]},
                           headers={"Authorization": f"Bearer {tokens['gz-001']}"})
            assert r.status_code == 200 and r.json()["verdict"] == "authentic", r.text
    spent = {p: _cpu_ticks(p) - before[p] for p in pids}
    # Each process did a share of the work (an idle API process spends ~0 ticks in the same seconds).
    assert all(t >= 10 for t in spent.values()), spent
    assert node.stop(signal.SIGINT) == 0, node.log
    _wait_gone(set(pids) | {info["anvil_pid"], info["worker_pid"]}, "a process of serve")


def test_serve_stops_when_an_api_process_dies(node: Node) -> None:
    info = node.start()
    assert node.proc is not None
    os.kill(info["api_pids"][1], signal.SIGKILL)
    assert node.proc.wait(timeout=30) == 1
    assert "mrledger-api-1 stopped unexpectedly" in node.log
    _wait_gone({info["anvil_pid"], info["worker_pid"]}, "a process of serve")


def test_a_kill_9_of_serve_takes_its_api_processes_with_it(node: Node) -> None:
    info = node.start()
    assert node.proc is not None
    children = _descendants(node.proc.pid)
    assert set(info["api_pids"][1:]) <= children
    node.proc.kill()
    node.proc.wait()
    _wait_gone(children, "a child process")


def test_only_the_leader_registers_hospitals_on_chain(node: Node) -> None:
    """No API process holds the admin key (issue 17 item 4, issue 20 item 1): POST /v1/hospitals writes the
    database, and the sealer of the leading node puts the hospital and the submitters it asked for on chain —
    before it seals the hospital's first batch, so results submitted at once are anchored."""
    info = node.start()
    admin = (node.seen / "admin-token").read_text().strip()
    extra = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    w3 = Web3(Web3.HTTPProvider(info["rpc_url"]))
    with http_client() as client:
        r = client.post(f"{node.api}/hospitals", json={"id": "sz-003", "name": "Shenzhen"},
                        headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 201 and r.json()["on_chain_registered"] is False, r.text
        token = node.cli("token", "create", "--role", "hospital:sz-003", "--label", "test").stdout.strip()
        tokens = {"sz-003": token}
        accepted = {"sz-003": _submit(client, node, tokens, "sz-003", [record("sz-003", i) for i in range(3)])}
        assert len(_wait_receipts(client, node, tokens, accepted)) == 3  # anchored by the leader's account
        assert reg.hospital_of(w3, info["contract"], hospital_key("sz-003")).registered
        # Another account asked for later is added on chain by the leader too.
        again = client.post(f"{node.api}/hospitals", json={"id": "sz-003", "name": "Shenzhen", "submitters": [extra]},
                            headers={"Authorization": f"Bearer {admin}"})
        assert again.status_code in (200, 201) and again.json()["on_chain_registered"] is False, again.text
    deadline = time.monotonic() + 30
    while not reg.is_submitter(w3, info["contract"], hospital_key("sz-003"), extra):
        assert time.monotonic() < deadline, node.log
        time.sleep(0.2)
    assert node.stop(signal.SIGINT) == 0, node.log
