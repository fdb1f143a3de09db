"""`mrledger serve` under the faults of issue 15 and issue 14 item 17, as real process trees: every child
dies with serve, a kill during start-up leaves no second writer, a frozen chain node never freezes the API,
a managed chain that dies is started again and healed, and a full disk (a real one: a 64 MiB tmpfs in a mount
namespace of the test's own) answers 503 problems and never loses the chain state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring.node import free_port
from mrledger.ledger import hospital_key
from tests.node.test_serve import HOSPITALS, Node, _alive, _submit, _wait_receipts, anchored_events, http_client, record

pytestmark = pytest.mark.anvil


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "data", free_port())
    yield n
    n.cleanup()


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _wait_gone(pids: set[int], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while alive := {p for p in pids if _alive(p)}:
        assert time.monotonic() < deadline, f"{what} outlived serve: {alive}"
        time.sleep(0.05)


def _tokens(node: Node, client: httpx.Client) -> dict[str, str]:
    admin = (node.seen / "admin-token").read_text().strip()
    tokens = {}
    for hid, name in HOSPITALS.items():
        r = client.post(f"{node.api}/hospitals", json={"id": hid, "name": name},
                        headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code in (201, 200, 409), r.text
        out = node.cli("token", "create", "--role", f"hospital:{hid}", "--label", "test")
        assert out.returncode == 0, out.stderr
        tokens[hid] = out.stdout.strip()
    return tokens


def test_every_child_of_serve_dies_with_it(node: Node) -> None:
    """Issue 14 item 17: `kill -9` of serve left its managed anvil running as an orphan."""
    info = node.start()
    assert node.proc is not None
    children = _descendants(node.proc.pid)
    assert {info["anvil_pid"], info["worker_pid"]} <= children, children
    node.proc.kill()
    node.proc.wait()
    _wait_gone(children, "a child process")
    # anvil was told with SIGTERM, so it saved its chain: the next start finds the registry it deployed
    again = node.start()
    assert again["contract"] == info["contract"]
    assert node.stop() == 0


def test_a_kill_during_start_up_leaves_no_orphan_and_no_second_writer(node: Node) -> None:
    info = node.start()
    with http_client() as client:
        tokens = _tokens(node, client)
        accepted = {h: _submit(client, node, tokens, h, [record(h, i) for i in range(3)]) for h in HOSPITALS}
        _wait_receipts(client, node, tokens, accepted)
    assert node.stop() == 0
    pid_file = node.seen / "anvil.pid"
    assert not pid_file.exists()
    # Start again and kill serve the moment its anvil exists, long before serve is ready.
    node.runs += 1
    proc = subprocess.Popen([*node.prefix, *node.cli_command(), "serve"], env=node.env, cwd=node.data_dir.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not pid_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "serve never started its anvil"
        time.sleep(0.005)
    anvil = int(pid_file.read_text())
    proc.kill()
    proc.wait()
    _wait_gone({anvil}, "the anvil of a serve killed during start-up")
    # The next serve is the chain's only writer and has everything anchored before.
    again = node.start()
    assert again["contract"] == info["contract"] and again["anvil_pid"] != anvil
    w3 = Web3(Web3.HTTPProvider(again["rpc_url"]))
    for h in HOSPITALS:
        assert reg.last_seq(w3, again["contract"], hospital_key(h)) >= 1
    assert node.stop() == 0


def test_a_frozen_chain_node_never_freezes_the_api(node: Node) -> None:
    """Issue 15 point 4: with anvil stopped by SIGSTOP, /readyz hung up to 46 s, and once four handler threads
    were stuck in verifications, submissions and /healthz waited 40 s. The timeouts below are the test's
    patience, not benchmarks: each call would hang far longer without the fix."""
    info = node.start()
    base = f"http://127.0.0.1:{node.port}"
    with http_client() as client:
        tokens = _tokens(node, client)
        accepted = {"gz-001": _submit(client, node, tokens, "gz-001", [record("gz-001", i) for i in range(3)])}
        receipt = _wait_receipts(client, node, tokens, accepted)["gz-001", "LAB-00000"]
        assert client.post(f"{node.api}/verify", json={"receipt": receipt}).json()["verdict"] == "authentic"
    os.kill(info["anvil_pid"], signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(8) as pool:  # more verifications needing the chain than there are handler threads
            verifying = [pool.submit(httpx.post, f"{node.api}/verify", json={"receipt": receipt}, timeout=20)
                         for _ in range(8)]
            time.sleep(0.3)
            assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            more = httpx.post(f"{node.api}/hospitals/gz-001/results", json={"records": [record("gz-001", 50)]},
                              headers={"Authorization": f"Bearer {tokens['gz-001']}"}, timeout=3)
            assert more.status_code == 202, more.text
            time.sleep(3)  # the chain probe has missed its answers by now
            ready = httpx.get(f"{base}/readyz", timeout=1.5)
            assert ready.status_code == 503 and ready.json()["checks"]["chain"].startswith("error"), ready.text
            assert ready.json()["checks"]["database"] == "ok"
            assert "mrledger_chain_up 0.0" in httpx.get(f"{base}/metrics", timeout=2).text
            for f in verifying:
                answer = f.result()
                assert answer.status_code in (200, 503), answer.text
                if answer.status_code == 503:
                    assert answer.json()["type"].endswith("chain-unavailable") and "Retry-After" in answer.headers
            later = httpx.post(f"{node.api}/verify", json={"receipt": receipt}, timeout=2)  # refused at once
            assert later.status_code in (200, 503), later.text
    finally:
        os.kill(info["anvil_pid"], signal.SIGCONT)
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/readyz", timeout=3).status_code != 200:
        assert time.monotonic() < deadline, node.log
        time.sleep(0.2)
    with http_client() as client:
        accepted["gz-001"].append("LAB-00050")
        _wait_receipts(client, node, tokens, accepted)
        assert client.post(f"{node.api}/verify", json={"receipt": receipt}).json()["verdict"] == "authentic"
    assert "does not answer" in node.log and node.stop() == 0


def test_a_managed_chain_that_dies_is_started_again_and_healed(node: Node) -> None:
    """anvil killed with SIGKILL (no save): serve starts it again from its last save, on the same port; the
    chain has gone back, and the worker re-anchors what it lost."""
    node.env["MRL_CONFIRMATIONS"] = "1"
    info = node.start()
    with http_client() as client:
        tokens = _tokens(node, client)
        accepted = {h: _submit(client, node, tokens, h, [record(h, i) for i in range(2)]) for h in HOSPITALS}
        _wait_receipts(client, node, tokens, accepted)
        assert node.stop() == 0  # a save with the first batches
        info = node.start()
        for start in (10, 20):
            for h in HOSPITALS:
                accepted[h] += _submit(client, node, tokens, h, [record(h, i) for i in range(start, start + 2)])
            _wait_receipts(client, node, tokens, accepted)
        w3 = Web3(Web3.HTTPProvider(info["rpc_url"]))
        before = {h: reg.last_seq(w3, info["contract"], hospital_key(h)) for h in HOSPITALS}
        os.kill(info["anvil_pid"], signal.SIGKILL)  # the anchors since the last save are gone with it
        deadline = time.monotonic() + 60
        while True:
            try:
                now = {h: reg.last_seq(w3, info["contract"], hospital_key(h)) for h in HOSPITALS}
                if now == before:
                    break
            except Exception:  # down or restarting
                pass
            assert time.monotonic() < deadline, node.log
            time.sleep(0.3)
        receipts = _wait_receipts(client, node, tokens, accepted)
    assert "the managed chain (anvil) exited" in node.log and "anchors lost" in node.log, node.log
    assert node.proc is not None and node.proc.poll() is None
    for h in HOSPITALS:
        seen = [e for e in anchored_events(w3, info["contract"]) if e.hospital_key == hospital_key(h)]
        assert sorted(e.seq for e in seen) == list(range(1, before[h] + 1))  # exactly once each
    assert all(r["anchor"] for r in receipts.values())
    assert node.stop() == 0


# ------------------------------------------------------------------------------------------ a real full disk


class TinyDisk:
    """A 64 MiB tmpfs mounted on ``directory`` in a private mount namespace of an idle holder process (user
    namespaces: no root needed). Commands run inside with ``prefix``; this process sees the files through
    ``/proc/<holder>/root``."""

    def __init__(self, directory: Path, size: str = "64m") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "-rm", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size={size},mode=0700 tmpfs '{directory}' && echo mounted && exec sleep 3600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline().strip()
        if line != "mounted":
            self.holder.kill()
            pytest.skip(f"cannot mount a tmpfs in a user namespace here: {self.holder.stderr.read()[-300:]!r}")
        self.prefix = ("nsenter", "-t", str(self.holder.pid), "-U", "-m", "--preserve-credentials", "--")
        self.seen = Path(f"/proc/{self.holder.pid}/root{directory}")

    def fill(self) -> Path:
        """Take every free byte of the disk (what is left when a disk fills up)."""
        filler = self.seen / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        return filler

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


@pytest.mark.skipif(not (shutil.which("unshare") and shutil.which("nsenter")), reason="needs util-linux unshare")
def test_a_full_disk_answers_503_and_never_loses_the_chain(tmp_path: Path) -> None:
    """Issue 15 point 5: clients got a plain-text 500 (58 times), and a clean stop with the disk full left a
    0-byte anvil-state.json the node could not start from."""
    disk = TinyDisk(tmp_path / "data")
    node = Node(tmp_path / "data", free_port(), prefix=disk.prefix, seen=disk.seen)
    node.env["MRL_CONFIRMATIONS"] = "1"
    try:
        node.start()
        with http_client() as client:
            tokens = _tokens(node, client)
            accepted = {h: _submit(client, node, tokens, h, [record(h, i) for i in range(3)]) for h in HOSPITALS}
            _wait_receipts(client, node, tokens, accepted)
            assert node.stop() == 0  # the chain saved with these anchors
            node.start()
            for h in HOSPITALS:
                accepted[h] += _submit(client, node, tokens, h, [record(h, i) for i in range(10, 13)])
            before = _wait_receipts(client, node, tokens, accepted)
            state = json.loads((disk.seen / "anvil-state.json").read_text())

            filler = disk.fill()
            refused = 0
            for i in range(100, 110):
                r = client.post(f"{node.api}/hospitals/gz-001/results", json={"records": [record("gz-001", i)]},
                                headers={"Authorization": f"Bearer {tokens['gz-001']}"})
                if r.status_code == 202:
                    accepted["gz-001"].append(r.json()["results"][0]["result_id"])
                    continue
                assert r.status_code == 503, r.text
                assert r.headers["content-type"].startswith("application/problem+json") and \
                    r.headers["Retry-After"], r.headers
                assert r.json()["type"].endswith(("storage-full", "store-unavailable")), r.text
                refused += 1
            assert refused, "the full disk refused nothing"
            assert node.stop() == 0, node.log  # a clean stop with the disk full
            saved = disk.seen / "anvil-state.json"
            assert saved.stat().st_size > 0 and json.loads(saved.read_text()) == state  # the last good save
            filler.unlink()

            node.start()  # starts from it; the anchors the chain lost are re-anchored from the database
            after = _wait_receipts(client, node, tokens, accepted, timeout=120)
            old = before["gz-001", "LAB-00010"]
            answer = client.post(f"{node.api}/verify", json={"receipt": old}).json()
            assert answer["verdict"] == "authentic", answer  # the receipt issued before still stands
            assert after["gz-001", "LAB-00010"]["batch"] == old["batch"]
        assert "could not save the chain" in node.log, node.log
        assert node.stop() == 0
    finally:
        node.cleanup()
        disk.close()
