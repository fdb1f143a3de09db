"""`mrledger serve` as a user runs it: a real process tree (API, sealer, worker, managed anvil) on a temporary
data dir, driven over HTTP and through the CLI.

What is proven: a fresh start needs no configuration and leaves its secrets 0600; results go from a 202 to a
receipt that verifies on chain, signed by its hospital with a key the dev CA issued when it was registered;
after ``kill -9`` with results pending, anvil and the sealer process die with serve (anvil saving its chain
first), and a restart on the same data dir anchors every accepted result exactly once; Ctrl-C shuts
everything down with exit 0 and the chain saved.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.node import free_port
from mrledger.ledger import hospital_key
from mrledger.store import Store

pytestmark = pytest.mark.anvil

HOSPITALS = {"gz-001": "Guangzhou First People's Hospital", "qd-002": "Qingdao Municipal Hospital"}
_MRLEDGER = Path(sys.executable).with_name("mrledger")
COMMAND = [str(_MRLEDGER)] if _MRLEDGER.is_file() else [sys.executable, "-m", "mrledger.cli"]


def record(hospital: str, i: int) -> dict[str, Any]:
    return {"hospital_id": hospital, "result_id": f"LAB-{i:05d}", "version": 1, "kind": "lab",
            "code": {"system": "http://loinc.org", "code": "2345-7"},
            "subject": {"system": "urn:mrledger:test:synthetic-patient", "value": f"SYNTHETIC-{i % 7}"},
            "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
            "content": {"type": "observations", "observations": [
                {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 5 + i / 100, "unit": "mmol/L"}]}}


def anchored_events(w3: Web3, contract: str) -> list[Any]:
    """The registry's BatchAnchored events, whichever ABI serve deployed (MRL_REGISTRY_VERSION): each has
    ``hospital_key``, ``seq`` and ``tx_hash``."""
    return (reg2 if reg2.registry_version(w3, contract) == 2 else reg).anchored_events(w3, contract)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def http_client(**kwargs: Any) -> httpx.Client:
    """An HTTP client for a test that talks to a node between CLI calls, with no connection kept alive: a CLI call
    can take about uvicorn's 5 s keep-alive on a loaded machine, and a request sent on a pooled connection just as
    the server closes it gets no answer ("Server disconnected without sending a response", stop 40's CI)."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0), **kwargs)


class Node:
    """One `mrledger serve` child process on ``data_dir``; ``env`` also serves the CLI calls. ``prefix`` runs
    serve and the CLI through another command (``nsenter`` into a mount namespace); ``seen``: where this test
    process sees ``data_dir`` (default: the same path)."""

    def __init__(self, data_dir: Path, port: int, prefix: tuple[str, ...] = (), seen: Path | None = None) -> None:
        self.data_dir, self.port = data_dir, port
        self.prefix, self.seen = list(prefix), seen or data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MRL_")}
        self.env.update(MRL_DATA_DIR=str(data_dir), MRL_PORT=str(port), MRL_HOST="127.0.0.1",
                        MRL_BATCH_INTERVAL="0.3")
        self.api = f"http://127.0.0.1:{port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._outs: list[IO[bytes]] = []

    @property
    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.data_dir.parent.glob("serve-*.log")))

    def start(self, tries: int = 3) -> dict[str, Any]:
        """Start serve and wait until it is ready. The port was free when the test chose it; a process of a
        parallel test (an anvil, an outgoing connection's ephemeral port) may take it first: serve then exits
        with "Address already in use", and the node starts again on another free port (``tries`` times)."""
        self.runs += 1
        log = self.data_dir.parent / f"serve-{self.runs}.log"
        out = open(log, "wb")  # noqa: SIM115 - closed in cleanup()
        self._outs.append(out)
        self.proc = subprocess.Popen([*self.prefix, *COMMAND, "serve"], env=self.env, cwd=self.data_dir.parent,
                                     stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and tries > 1 and "Address already in use" in log.read_text("utf-8",
                                                                                                    "replace"):
                self.port = free_port()
                self.env["MRL_PORT"], self.api = str(self.port), f"http://127.0.0.1:{self.port}/v1"
                return self.start(tries - 1)
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.log}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    info = dict(json.loads((self.seen / "serve.json").read_text()))
                    if info["pid"] == self.proc.pid:  # not a file left by a crashed run
                        return info
            except (httpx.TransportError, FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready in 90 s:\n{self.log}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def cli_command(self) -> list[str]:
        return list(COMMAND)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *COMMAND, *args], env=self.env, cwd=self.data_dir.parent,
                              capture_output=True, text=True, timeout=120, check=False)

    def cleanup(self) -> None:
        """After a failed test: end this test's serve and its anvil (by the pids they recorded)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pid_file = self.seen / "anvil.pid"
        if pid_file.is_file():
            pid = int(pid_file.read_text())
            if _alive(pid) and str(self.data_dir) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        for out in self._outs:
            out.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "data", free_port())
    yield n
    n.cleanup()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _submit(client: httpx.Client, node: Node, tokens: dict[str, str], hospital: str,
            records: list[dict[str, Any]]) -> list[str]:
    r = client.post(f"{node.api}/hospitals/{hospital}/results", json={"records": records},
                    headers={"Authorization": f"Bearer {tokens[hospital]}"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == len(records) and body["duplicates"] == 0
    return [x["result_id"] for x in body["results"]]


def _wait_receipts(client: httpx.Client, node: Node, tokens: dict[str, str], accepted: dict[str, list[str]],
                   timeout: float = 90) -> dict[tuple[str, str], dict[str, Any]]:
    """Every accepted result's receipt, polling while the server answers 409 (not anchored yet)."""
    receipts: dict[tuple[str, str], dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    for hospital, ids in accepted.items():
        for rid in ids:
            while True:
                r = client.get(f"{node.api}/hospitals/{hospital}/results/{rid}/receipt",
                               headers={"Authorization": f"Bearer {tokens[hospital]}"})
                if r.status_code == 200:
                    receipts[hospital, rid] = r.json()
                    break
                assert r.status_code == 409, r.text
                assert time.monotonic() < deadline, f"no receipt for {hospital}/{rid}: {r.text}\n{node.log}"
                time.sleep(0.2)
    return receipts


def test_serve_end_to_end_and_crash_recovery(node: Node, tmp_path: Path) -> None:
    info = node.start()
    data = node.data_dir
    for secret in ("admin-token", "admin.key", "submitter.key", "master.key", "pki/root.key.pem",
                   "pki/intermediate.key.pem"):
        assert _mode(data / secret) == 0o600, secret
    assert info["signs_batches"] and info["require_signatures"]  # the embedded default signs, with a dev CA
    admin_token = (data / "admin-token").read_text().strip()
    assert admin_token.startswith("mrl_")
    assert f"{node.api}" in node.log and "/docs" in node.log and str(data / "admin-token") in node.log

    with http_client() as client:
        for hid, name in HOSPITALS.items():
            r = client.post(f"{node.api}/hospitals", json={"id": hid, "name": name},
                            headers={"Authorization": f"Bearer {admin_token}"})
            assert r.status_code == 201, r.text
        tokens: dict[str, str] = {}
        for hid in HOSPITALS:
            out = node.cli("token", "create", "--role", f"hospital:{hid}", "--label", "test upload")
            assert out.returncode == 0, out.stderr
            tokens[hid] = out.stdout.strip()

        accepted = {h: _submit(client, node, tokens, h, [record(h, i) for i in range(5)]) for h in HOSPITALS}
        receipts = _wait_receipts(client, node, tokens, accepted)
        path = tmp_path / "receipt.json"
        path.write_text(json.dumps(receipts["gz-001", "LAB-00002"]))
        # Every batch is signed: the hospitals registered over the API got keys from the dev CA on the fly.
        assert all("signature" in r for r in receipts.values())
        for hid in HOSPITALS:
            [key] = (data / "pki" / "hospitals" / hid).glob("*.key.pem")
            assert _mode(key) == 0o600
        trust = ["--trust", *info["trust_anchors"], "--intermediate", *info["trust_intermediates"]]
        verified = node.cli("verify", str(path), "--rpc", info["rpc_url"], "--json", *trust)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        out = json.loads(verified.stdout)
        assert out["status"] == "valid" and out["signature"]["status"] == "valid"
        assert out["signature"]["signer"]["hospital_id"] == "gz-001"
        answer = client.post(f"{node.api}/verify", json={"receipt": receipts["gz-001", "LAB-00002"]}).json()
        assert answer["verdict"] == "authentic" and answer["signature"]["status"] == "valid", answer

        # ---- crash with results pending: kill -9 right after the 202s, before the sealer's interval is up
        for start in (100, 200, 300):
            for h in HOSPITALS:
                accepted[h] += _submit(client, node, tokens, h, [record(h, i) for i in range(start, start + 40)])
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()
        at_crash = Store.open(f"sqlite:///{data / 'mrledger.db'}", master_key=data / "master.key")
        assert at_crash.pending_count() > 0  # the crash did hit results not yet sealed
        at_crash.engine.dispose()
        orphan = int((data / "anvil.pid").read_text())
        assert orphan == info["anvil_pid"]
        deadline = time.monotonic() + 15
        while _alive(info["worker_pid"]) or _alive(orphan):  # both die with serve: no orphan, no second writer
            assert time.monotonic() < deadline, "the sealer/anchoring process or anvil outlived a kill -9 of serve"
            time.sleep(0.05)

        info2 = node.start()
        assert info2["anvil_pid"] != orphan and info2["contract"] == info["contract"]
        receipts = _wait_receipts(client, node, tokens, accepted)
        assert len(receipts) == sum(len(v) for v in accepted.values()) == 250
        # receipts issued before the crash are still good against the chain that survived it
        verified = node.cli("verify", str(path), "--rpc", info2["rpc_url"])
        assert verified.returncode == 0, verified.stdout + verified.stderr

    # exactly once: no (hospital, seq) anchored twice, and the chain's lastSeq is the database's batch count
    w3 = Web3(Web3.HTTPProvider(info2["rpc_url"]))
    events = anchored_events(w3, info2["contract"])
    counts = Counter((e.hospital_key, e.seq) for e in events)
    assert counts and max(counts.values()) == 1, counts
    store = Store.open(f"sqlite:///{data / 'mrledger.db'}", master_key=data / "master.key")
    for h in HOSPITALS:
        batches = store.batches(h)
        assert reg.last_seq(w3, info2["contract"], hospital_key(h)) == len(batches) >= 2
        assert sum(b.size for b in batches) == len(accepted[h])
        assert sum(1 for (k, _) in counts if k == hospital_key(h)) == len(batches)
    store.engine.dispose()

    assert node.stop() == 0
    assert admin_token not in node.log and "mrl_" not in node.log  # tokens never logged
    for key_file in ("admin.key", "submitter.key", "master.key",
                     *(str(p.relative_to(data)) for p in data.rglob("*.key.pem"))):
        lines = [line for line in (data / key_file).read_text().splitlines() if line and "-----" not in line]
        assert lines and not any(line in node.log for line in lines), key_file  # keys never logged


def test_ctrl_c_stops_everything_and_saves_the_chain(node: Node) -> None:
    """Also: `mrledger hospital register` against a running node ends up on chain."""
    info = node.start()
    anvil = info["anvil_pid"]
    # a hospital registered in the database by the CLI is put on chain by the running node
    out = node.cli("hospital", "register", "sz-003", "Shenzhen People's Hospital")
    assert out.returncode == 0, out.stderr
    w3 = Web3(Web3.HTTPProvider(info["rpc_url"]))
    deadline = time.monotonic() + 30
    abi = reg2 if reg2.registry_version(w3, info["contract"]) == 2 else reg
    while not abi.hospital_of(w3, info["contract"], hospital_key("sz-003")).registered:
        assert time.monotonic() < deadline, node.log
        time.sleep(0.2)
    state = node.data_dir / "anvil-state.json"
    assert node.stop(signal.SIGINT) == 0, node.log
    assert not _alive(anvil), "anvil still running after serve stopped"
    assert state.is_file() and "block" in json.loads(state.read_text())
    assert not (node.data_dir / "anvil.pid").exists() and not (node.data_dir / "serve.json").exists()

    # the chain was saved: a restart finds the registry it deployed instead of deploying another; SIGTERM too
    again = node.start()
    assert again["contract"] == info["contract"] and again["chain_id"] == info["chain_id"]
    assert node.stop(signal.SIGTERM) == 0, node.log
    assert not _alive(again["anvil_pid"])


def test_serve_stops_when_its_sealer_process_dies(node: Node) -> None:
    """The sealer and the anchoring worker run in a child process: if it dies, the node does not go on
    accepting results it would never anchor — it shuts down with exit code 1 (a supervisor restarts it)."""
    info = node.start()
    assert info["worker_pid"] and info["worker_pid"] != info["pid"]
    os.kill(info["worker_pid"], signal.SIGKILL)
    assert node.proc is not None
    assert node.proc.wait(timeout=30) == 1
    assert "the sealer/anchoring process stopped unexpectedly" in node.log
    assert not _alive(info["anvil_pid"])


def test_a_port_taken_before_serve_binds_it_is_traded_for_another(node: Node) -> None:
    """The helper's own guard (``Node.start``): the port chosen for the test is taken by someone else first."""
    import socket

    taken = node.port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        node.start()
        assert node.port != taken and "Address already in use" in node.log
    assert node.stop() == 0


def test_second_serve_on_the_same_data_dir_is_refused(node: Node) -> None:
    node.start()
    other = Node(node.data_dir, free_port())
    out = subprocess.run([*COMMAND, "serve"], env=other.env, cwd=node.data_dir.parent, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 1 and "another mrledger serve is running" in out.stderr
    assert node.stop() == 0


def test_the_regional_key_survives_a_restart_so_an_encounter_stays_a_duplicate(node: Node) -> None:
    """Issue 14, finding 4: serve hashed patients and encounter ids under a fresh random key at every start, so
    the same encounter reported again after a restart was accepted as a new one (and KPIs counted it twice)."""
    node.start()
    key_file = node.data_dir / "regional.key"
    assert _mode(key_file) == 0o600
    key = key_file.read_text()
    admin = (node.data_dir / "admin-token").read_text().strip()
    encounter = {"hospital_id": "qd-002", "encounters": [{
        "encounter_id": "ENC-2024-000451", "patient": {"system": "urn:cn:resident-id", "value": "SYNTHETIC-7"},
        "seen_at": "2024-05-02T08:55:00+08:00", "retrieved": True}]}
    with http_client() as client:
        r = client.post(f"{node.api}/hospitals", json={"id": "qd-002", "name": HOSPITALS["qd-002"]},
                        headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 201, r.text
        out = node.cli("token", "create", "--role", "hospital:qd-002")
        assert out.returncode == 0, out.stderr
        auth = {"Authorization": f"Bearer {out.stdout.strip()}"}
        first = client.post(f"{node.api}/encounters", json=encounter, headers=auth)
        assert first.status_code == 202 and first.json()["accepted"] == 1, first.text
        assert node.stop() == 0
        node.start()
        again = client.post(f"{node.api}/encounters", json=encounter, headers=auth)
        assert again.status_code == 202, again.text
        assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 1), again.text
    assert key_file.read_text() == key and key.strip() not in node.log  # kept, and never logged
    assert node.stop() == 0


def test_serve_on_postgresql_refuses_to_start_without_a_regional_key(node: Node) -> None:
    node.env["MRL_DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    out = subprocess.run([*COMMAND, "serve"], env=node.env, cwd=node.data_dir.parent, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 1 and "the regional key must be configured" in out.stderr, out.stderr
    assert not (node.data_dir / "anvil.pid").exists()  # refused before anything was started


def test_serve_refuses_a_key_file_others_may_read(node: Node) -> None:
    """Issue 14, finding 15: a chain key readable by others was only warned about."""
    node.data_dir.mkdir(mode=0o700)
    key = node.data_dir / "admin.key"
    key.write_text("0x" + "11" * 32 + "\n")
    key.chmod(0o644)
    out = subprocess.run([*COMMAND, "serve"], env=node.env, cwd=node.data_dir.parent, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 1 and f"chmod 600 {key}" in out.stderr, out.stderr
    assert "11" * 32 not in out.stderr and not (node.data_dir / "anvil.pid").exists()
