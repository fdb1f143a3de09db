"""A KPI audit job spread over processes (node/audit_pool.py) under a real `mrledger serve`: doctors of two
hospitals verify and decide over HTTP (two event streams), the job runs with ``MRL_AUDIT_PROCESSES=2`` from its
first record, and it answers as the one-request audit does; a decision edited with SQL in the node's database is
found by it; its processes are gone once it has ended."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mrledger.anchoring.node import free_port
from mrledger.node.audit_pool import AuditPool, AuditProcessError
from mrledger.node.settings import Settings
from mrledger.node.spawned import ApiSpec
from tests.node.test_serve import HOSPITALS, Node, _submit, _wait_receipts, http_client, record
from tests.node.test_serve_faults import _descendants, _tokens

pytestmark = pytest.mark.anvil


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "data", free_port())
    n.env.update(MRL_AUDIT_PROCESSES="2", MRL_AUDIT_SPLIT_RECORDS="0")
    yield n
    n.cleanup()


def _job(client: httpx.Client, node: Node, admin: dict[str, str]) -> dict[str, Any]:
    r = client.post(f"{node.api}/audit/decisions/jobs", headers=admin)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"{node.api}/audit/decisions/jobs/{r.json()['id']}", headers=admin).json()
        if body["state"] != "running":
            assert body["state"] == "done", body
            return body
        time.sleep(0.2)
    raise AssertionError(f"the audit job did not end in 120 s:\n{node.log}")


def test_a_job_spread_over_processes_answers_as_one_process_does(node: Node) -> None:
    info = node.start()
    assert node.proc is not None
    admin = {"Authorization": f"Bearer {(node.seen / 'admin-token').read_text().strip()}"}
    with http_client() as client:
        tokens = _tokens(node, client)
        accepted = {"gz-001": _submit(client, node, tokens, "gz-001", [record("gz-001", i) for i in range(3)])}
        receipts = list(_wait_receipts(client, node, tokens, accepted).values())
        decided: list[str] = []
        for hospital in HOSPITALS:  # a doctor of each hospital: each hospital's decisions are its own stream
            made = node.cli("token", "create", "--role", f"doctor:{hospital}", "--label", "test")
            assert made.returncode == 0, made.stderr
            doctor = {"Authorization": f"Bearer {made.stdout.strip()}"}
            for receipt in receipts:
                verified = client.post(f"{node.api}/verify", json={"receipt": receipt}, headers=doctor).json()
                assert verified["verdict"] == "authentic", verified
                r = client.post(f"{node.api}/decisions", headers=doctor, json={
                    "verification_id": verified["verification_id"], "decision": "reordered",
                    "reason": "patient-request"})
                assert r.status_code == 201, r.text
                decided.append(verified["verification_id"])
        before = _descendants(node.proc.pid)
        body = _job(client, node, admin)
        sync = client.get(f"{node.api}/audit/decisions", headers=admin).json()
        assert body["processes"] == 2 and body["ok"] is True, body
        assert [(s["stream"], s["records"], s["decisions"]) for s in body["streams"]] == \
            [(s["stream"], s["records"], s["decisions"]) for s in sync["streams"]] == \
            [("gz-001.events", 3, 3), ("qd-002.events", 3, 3)]
        assert body["checked_records"] == 6 == sync["checked_records"]
        # The job's processes ended with it (serve's own children stay).
        deadline = time.monotonic() + 30
        while _descendants(node.proc.pid) - before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _descendants(node.proc.pid) - before
        # A decision edited in the database is found by a process of the job.
        with sqlite3.connect(node.seen / "mrledger.db", timeout=30) as db:
            db.execute("UPDATE decisions SET reason = 'emergency' WHERE verification_id = ?", (decided[-1],))
        tampered = _job(client, node, admin)
        # (Its batch was counted by then: its rollup rows no longer match it either.)
        assert tampered["ok"] is False and tampered["problems_by_kind"]["altered"] == 1, tampered
        assert set(tampered["problems_by_kind"]) <= {"altered", "rollup-mismatch"}
        (problem,) = [p for p in tampered["problems"] if p["kind"] == "altered"]
        assert problem["verification_id"] == decided[-1] and problem["stream"] == "qd-002.events"
        assert problem["fields"] == ["data.reason"]
    assert node.stop() == 0, node.log
    assert info["pid"] == node.proc.pid


def test_an_audit_process_that_cannot_start_fails_the_job_with_its_reason(tmp_path: Path) -> None:
    """No node here: a spec whose key files do not exist. Each process reports why it could not build its services;
    the splitter raises that instead of waiting for parts that will never come, and leaves no process behind."""
    spec = ApiSpec(Settings(data_dir=tmp_path, rpc_url="http://127.0.0.1:9"), "0x" + "11" * 20, 31337, 1, 0)
    with pytest.raises(AuditProcessError, match=r"an audit process failed: ServeError: key file .* does not exist"):
        list(AuditPool(spec, 2).parts(["a.events", "b.events"], 10, 10))
    assert not _workers(os.getpid())


def _workers(pid: int) -> set[int]:
    """Descendants that are spawned workers, not multiprocessing's resource tracker (one per process, for good)."""
    found = set()
    for p in _descendants(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            found.add(p)
    return found
