"""Chaos run against real ``mrledger serve`` nodes (not a test): heavy submission while the node is killed with
kill -9 again and again, its chain is stopped and frozen (SIGSTOP), the chain reorganises deeper than the
confirmation depth, and two nodes share one PostgreSQL (the leader is killed; the follower takes over).

Usage:  python scripts/chaos.py [--json] [--kills 3] [--pg-kills 1] [--freeze 15] [--reorg-depth 6]
                                [--clients 2] [--chunk 200] [--hospitals 4] [--settle 180] [--no-pg]

At the end every result that got a 202 is checked against the database and the chain, and printed as one JSON
line: ``accepted`` (distinct results acknowledged with 2xx), ``anchored_once`` (in a batch whose root the
registry holds, anchored by exactly one BatchAnchored event, confirmed in the database), ``lost`` (acknowledged
but not in the database), ``double`` (batches anchored more than once), ``stalled`` (in the database but not
anchored once the run settled), ``false_tampered`` (genuine receipts, sampled before each fault and at the end,
that the API called tampered), ``manual_steps`` (times a node did not come back by itself: a restart that
refused to start). Besides: what the operator would have seen (the slowest /readyz while the chain was frozen,
restart-to-ready times, the worst anchoring lag sampled from /metrics: issue 15 point 7).

The default run takes 6-9 minutes on a 2-core machine; ``--kills``, ``--clients``, ``--chunk`` scale it up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrledger.anchoring import contract as reg  # noqa: E402
from mrledger.anchoring import contract_v2 as reg2  # noqa: E402
from mrledger.anchoring.node import AnvilNode, free_port, rpc_request  # noqa: E402
from mrledger.anchoring.registries import adapter_for  # noqa: E402
from mrledger.ledger import BatchHead, hospital_key  # noqa: E402
from mrledger.store.crypto import MasterKey  # noqa: E402

_MRLEDGER = Path(sys.executable).with_name("mrledger")
COMMAND = [str(_MRLEDGER)] if _MRLEDGER.is_file() else [sys.executable, "-m", "mrledger.cli"]
PG_URL = os.environ.get("MRL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
METRIC = re.compile(r"^(mrledger_[a-z_]+) ([0-9.e+-]+)$", re.M)


def record(hospital: str, rid: str, i: int) -> dict[str, Any]:
    return {"hospital_id": hospital, "result_id": rid, "version": 1, "kind": "lab",
            "code": {"system": "http://loinc.org", "code": "2345-7"},
            "subject": {"system": "urn:mrledger:chaos:synthetic", "value": f"SYNTHETIC-{i % 997}"},
            "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
            "content": {"type": "observations", "observations": [
                {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 4 + (i % 40) / 10,
                 "unit": "mmol/L"}]}}


class Node:
    """One ``mrledger serve`` process tree; restarted on the same data dir and port."""

    def __init__(self, work: Path, name: str, env: dict[str, str]) -> None:
        self.name, self.data_dir, self.port = name, work / name, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MRL_")}
        self.env.update(MRL_DATA_DIR=str(self.data_dir), MRL_PORT=str(self.port), MRL_HOST="127.0.0.1",
                        MRL_BATCH_INTERVAL="1", MRL_CONFIRMATIONS="1", **env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = work / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.ready_s: list[float] = []

    def start(self, timeout: float = 120) -> bool:
        t0 = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*COMMAND, "serve"], env=self.env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    info = json.loads((self.data_dir / "serve.json").read_text())
                    if info["pid"] == self.proc.pid:
                        self.info = info
                        self.ready_s.append(time.monotonic() - t0)
                        return True
            except (httpx.HTTPError, OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str) -> str:
        out = subprocess.run([*COMMAND, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                             timeout=120, check=True)
        return out.stdout.strip()


class Run:
    """Shared state of one chaos run: what was acknowledged, receipts sampled, the figures."""

    def __init__(self, hospitals: list[str]) -> None:
        self.hospitals = hospitals
        self.accepted: set[tuple[str, str]] = set()  # (hospital, leaf hash hex)
        self.ids: list[tuple[str, str]] = []  # (hospital, result id) acknowledged, for sampling receipts
        self.tokens: dict[str, str] = {}
        self.receipts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.figures: Counter[str] = Counter()
        self.maxima: dict[str, float] = {}
        self.manual_steps = 0
        self._ids = itertools.count()
        self.stop = threading.Event()
        self.phase = "steady_"

    def peak(self, name: str, value: float) -> None:
        with self.lock:
            self.maxima[name] = max(self.maxima.get(name, 0.0), round(value, 2))


def submitter(run: Run, nodes: list[Node], chunk: int, seed: int) -> None:
    """Posts ``chunk`` records at a time until told to stop; a request whose outcome is unknown (the node was
    killed mid-request, a 503) is sent again, to any node, until it is answered (submission is idempotent)."""
    rnd = random.Random(seed)
    client = httpx.Client(timeout=30)
    body: dict[str, Any] | None = None
    hospital = ""
    while not run.stop.is_set() or body is not None:
        if body is None:
            hospital = rnd.choice(run.hospitals)
            ids = [next(run._ids) for _ in range(chunk)]
            body = {"records": [record(hospital, f"CH-{seed}-{i:09d}", i) for i in ids]}
        alive = [n for n in nodes if n.alive()]
        if not alive:
            time.sleep(0.2)
            continue
        node = rnd.choice(alive)
        try:
            r = client.post(f"{node.base}/v1/hospitals/{hospital}/results", json=body,
                            headers={"Authorization": f"Bearer {run.tokens[hospital]}"})
        except httpx.HTTPError:
            run.figures["submit_retries"] += 1
            time.sleep(0.2)
            continue
        if r.status_code == 202:
            with run.lock:
                results = r.json()["results"]
                run.accepted.update((hospital, x["leaf_hash"]) for x in results)
                run.ids.extend((hospital, x["result_id"]) for x in results[:: max(1, len(results) // 5)])
            run.figures["submissions_202"] += 1
            body = None
        elif r.status_code >= 500:
            run.figures["submit_503"] += 1
            time.sleep(0.5)
        else:
            run.figures["submit_refused"] += 1  # a 4xx would be a bug of this script or of the node
            body = None
    client.close()


def sampler(run: Run, nodes: list[Node]) -> None:
    """The anchoring lag an operator would see on /metrics (issue 15 point 7), once a second; ``run.phase``
    prefixes the figures (``steady_``: under load with no fault yet)."""
    while not run.stop.is_set():
        for node in nodes:
            if not node.alive():
                continue
            try:
                found = dict(METRIC.findall(httpx.get(f"{node.base}/metrics", timeout=2).text))
            except httpx.HTTPError:
                continue
            for metric, name in (("mrledger_oldest_pending_age_seconds", "max_oldest_pending_s"),
                                 ("mrledger_batches_awaiting_anchor", "max_batches_awaiting_anchor"),
                                 ("mrledger_oldest_unanchored_batch_age_seconds", "max_oldest_unanchored_batch_s")):
                if metric in found:
                    run.peak(run.phase + name, float(found[metric]))
        run.stop.wait(1.0)


def sample_receipts(run: Run, node: Node, n: int = 40) -> None:
    """Receipts of results already anchored, kept to verify after the faults that follow."""
    with run.lock:
        picks = random.sample(run.ids, min(n, len(run.ids)))
    with httpx.Client(timeout=10) as client:
        for hospital, rid in picks:
            try:
                got = client.get(f"{node.base}/v1/hospitals/{hospital}/results/{rid}/receipt",
                                 headers={"Authorization": f"Bearer {run.tokens[hospital]}"})
            except httpx.HTTPError:
                continue
            if got.status_code == 200:
                run.receipts.append(got.json())


def setup_hospitals(run: Run, node: Node) -> None:
    admin = (node.data_dir / "admin-token").read_text().strip()
    for h in run.hospitals:
        r = httpx.post(f"{node.base}/v1/hospitals", json={"id": h, "name": f"Chaos hospital {h}"},
                       headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        if r.status_code not in (200, 201, 409):
            raise SystemExit(f"cannot register {h}: {r.text}")
        run.tokens[h] = node.cli("token", "create", "--role", f"hospital:{h}", "--label", "chaos")


def restart(run: Run, node: Node) -> None:
    if not node.start():
        run.manual_steps += 1
        raise SystemExit(f"{node.name} did not come back by itself; see {node.log}")


def wait_ready(node: Node, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{node.base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def freeze_chain(run: Run, node: Node, seconds: float) -> None:
    """SIGSTOP the chain: /readyz must answer (503) within a second, /healthz and submissions go on."""
    pid = _anvil(node)
    os.kill(pid, signal.SIGSTOP)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                status = httpx.get(f"{node.base}/readyz", timeout=30).status_code
                run.figures[f"readyz_{status}_while_frozen"] += 1
            except httpx.HTTPError:
                run.figures["readyz_failed_while_frozen"] += 1
            run.peak("max_readyz_s_while_frozen", time.monotonic() - t0)
            t0 = time.monotonic()
            try:
                httpx.get(f"{node.base}/healthz", timeout=30)
            except httpx.HTTPError:
                run.figures["healthz_failed_while_frozen"] += 1
            run.peak("max_healthz_s_while_frozen", time.monotonic() - t0)
            time.sleep(0.5)
    finally:
        os.kill(pid, signal.SIGCONT)


def deep_reorg(rpc: str, depth: int, timeout: float = 60) -> int:
    """Replace the last ``depth``+ blocks (the anchors in them, confirmed at MRL_CONFIRMATIONS=1) by empty
    blocks: evm_snapshot, let the node anchor into ``depth`` blocks, evm_revert, mine past the old head. (anvil_reorg
    needs the fork point's state, which a node restarted from a saved state no longer has.) The depth."""
    snapshot = rpc_request(rpc, "evm_snapshot")
    start = int(rpc_request(rpc, "eth_blockNumber"), 16)
    deadline = time.monotonic() + timeout
    while (head := int(rpc_request(rpc, "eth_blockNumber"), 16)) < start + depth and time.monotonic() < deadline:
        time.sleep(0.2)
    rpc_request(rpc, "evm_revert", [snapshot])
    rpc_request(rpc, "anvil_mine", [hex(head - start + 2)])
    return head - start


def settle(run: Run, nodes: list[Node], timeout: float) -> float:
    """Wait until nothing is pending and every batch is confirmed (by /metrics), or ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for node in nodes:
            if not node.alive():
                continue
            try:
                found = dict(METRIC.findall(httpx.get(f"{node.base}/metrics", timeout=5).text))
            except httpx.HTTPError:
                continue
            if float(found.get("mrledger_results_pending", 1)) == 0 and \
                    float(found.get("mrledger_batches_awaiting_anchor", 1)) == 0:
                return time.monotonic() - t0
        time.sleep(1)
    return time.monotonic() - t0


def check(run: Run, db_url: str, rpc_url: str, contract: str, accepted: set[tuple[str, str]]) -> dict[str, int]:
    """Every acknowledged leaf against the database (which batch holds it, confirmed?) and the chain (the
    registry's root for that batch, and how many BatchAnchored events it has)."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT bl.hospital_id, bl.seq, rv.leaf_hash FROM batch_leaves bl "
            "JOIN record_versions rv ON rv.id = bl.record_version_id")).all()
        rows_b = conn.execute(text("SELECT hospital_id, seq, size, root, map_root FROM batches")).all()
        heads = {(h, int(q)): (BatchHead(h, int(q), int(n), bytes(r), datetime.now(UTC)),
                               None if m is None else bytes(m)) for h, q, n, r, m in rows_b}
        confirmed = {(h, int(q)) for h, q in conn.execute(text("SELECT hospital_id, seq FROM anchors "
                                                                "WHERE status = 'confirmed'"))}
        pending = {(h, bytes(x).hex()) for h, x in conn.execute(text(
            "SELECT pl.hospital_id, rv.leaf_hash FROM pending_leaves pl "
            "JOIN record_versions rv ON rv.id = pl.record_version_id"))}
    engine.dispose()
    where = {(h, bytes(leaf).hex()): (h, int(q)) for h, q, leaf in rows}
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    keys = {h: hospital_key(h) for h, _ in heads}
    # Either registry: v1 holds (root, size), v2 one word binding them with the map root (anchoring/registries.py).
    registry = adapter_for(w3, contract, lambda h, q: heads[h, q][1])
    placed = registry.locate_many([head for head, _ in heads.values()])
    events = Counter((e.hospital_key, e.seq) for e in (reg2 if registry.version == 2 else reg).anchored_events(
        w3, contract))
    good = {b for b in heads if (found := placed.get(b)) is not None and found.holds
            and events[keys[b[0]], b[1]] == 1 and b in confirmed}
    out = {"accepted": len(accepted), "anchored_once": 0, "lost": 0, "stalled": 0,
           "double": sum(1 for n in events.values() if n > 1)}
    for item in accepted:
        batch = where.get(item)
        if batch is None:
            out["stalled" if item in pending else "lost"] += 1
        elif batch in good:
            out["anchored_once"] += 1
        else:
            out["stalled"] += 1
    return out


def verify_receipts(run: Run, node: Node) -> int:
    run.figures["receipts_verified"] += len(run.receipts)
    tampered = 0
    with httpx.Client(timeout=30) as client:
        for receipt in run.receipts:
            r = client.post(f"{node.base}/v1/verify", json={"receipt": receipt})
            verdict = r.json()["verdict"] if r.status_code == 200 else str(r.status_code)
            run.figures[f"verdict_{verdict}"] += 1
            tampered += verdict == "tampered"
    return tampered


def sqlite_phase(args: argparse.Namespace, work: Path, run: Run) -> dict[str, int]:
    """kill -9 loops, a killed and a frozen chain, a reorg deeper than the confirmations: one node, SQLite."""
    node = Node(work, "sqlite", {})
    try:
        return _sqlite_phase(args, run, node)
    finally:
        node.stop()  # also when the run failed: never leave a serve behind


def _sqlite_phase(args: argparse.Namespace, run: Run, node: Node) -> dict[str, int]:
    restart(run, node)
    setup_hospitals(run, node)
    threads = [threading.Thread(target=submitter, args=(run, [node], args.chunk, i), daemon=True)
               for i in range(args.clients)] + [threading.Thread(target=sampler, args=(run, [node]), daemon=True)]
    for t in threads:
        t.start()
    time.sleep(args.steady)  # under load, no fault yet: the anchoring lag of an ordinary day (point 7)
    run.phase = ""
    rnd = random.Random(7)
    for _ in range(0 if args.steady_only else args.kills):
        time.sleep(rnd.uniform(4, 8))
        sample_receipts(run, node)
        node.kill9()
        run.figures["kills"] += 1
        restart(run, node)
    if not args.steady_only:
        _chain_faults(args, run, node)
    run.stop.set()
    for t in threads:
        t.join(timeout=120)
    run.figures["sqlite_settle_s"] = round(settle(run, [node], args.settle))
    sample_receipts(run, node)
    accepted = set(run.accepted)
    out = check(run, f"sqlite:///{node.data_dir / 'mrledger.db'}", node.info["rpc_url"], node.info["contract"],
                accepted)
    out["false_tampered"] = verify_receipts(run, node)
    run.peak("max_restart_to_ready_s", max(node.ready_s))
    return out


def _chain_faults(args: argparse.Namespace, run: Run, node: Node) -> None:
    """A chain that dies, a chain that freezes, a reorg deeper than the confirmations."""
    time.sleep(5)
    sample_receipts(run, node)
    os.kill(_anvil(node), signal.SIGKILL)  # a chain that stops (no save): serve restarts it
    run.figures["chain_kills"] += 1
    time.sleep(3)
    wait_ready(node)
    time.sleep(5)
    sample_receipts(run, node)
    freeze_chain(run, node, args.freeze)
    run.figures["chain_freezes"] += 1
    wait_ready(node)
    time.sleep(5)
    sample_receipts(run, node)
    run.peak("reorg_depth", deep_reorg(node.info["rpc_url"], args.reorg_depth))
    run.figures["reorgs"] += 1
    time.sleep(8)


def pg_phase(args: argparse.Namespace, work: Path, run: Run) -> dict[str, int]:
    """Two nodes on one PostgreSQL and one chain; the leader is killed (kill -9) under load, the follower takes
    over, the old leader comes back as a follower."""
    schema = f"chaos_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    chain = AnvilNode(state_path=work / "pg-chain" / "state.json", log_path=work / "pg-anvil.log").start()
    nodes: list[Node] = []
    try:
        keys = {}
        for name, key in (("admin", chain.private_keys[0]), ("submitter", chain.private_keys[1])):
            keys[name] = work / f"pg-{name}.key"
            keys[name].write_text(key + "\n")
            keys[name].chmod(0o600)
        common = {"MRL_DATABASE_URL": url, "MRL_RPC_URL": chain.rpc_url,
                  "MRL_MASTER_KEY": MasterKey.generate().to_text(), "MRL_ADMIN_KEY_FILE": str(keys["admin"]),
                  "MRL_SUBMITTER_KEY_FILE": str(keys["submitter"]),
                  "MRL_REGIONAL_KEY": secrets.token_hex(32)}  # one region, one key (required on PostgreSQL)
        first = Node(work, "pg-a", common)
        restart(run, first)
        pki = first.data_dir / "pki"
        second = Node(work, "pg-b", {**common, "MRL_CONTRACT_ADDRESS": first.info["contract"],
                                     "MRL_TRUST_ANCHORS": str(pki / "root.crt.pem"),
                                     "MRL_TRUST_INTERMEDIATES": str(pki / "intermediate.crt.pem"),
                                     "MRL_SIGNING_KEYS_DIR": str(pki / "hospitals")})
        restart(run, second)
        nodes = [first, second]
        run.stop.clear()
        run.receipts = []  # this phase's receipts, verified against this phase's nodes (their CA, their chain)
        before = set(run.accepted)
        setup_hospitals(run, first)
        threads = [threading.Thread(target=submitter, args=(run, nodes, args.chunk, 100 + i), daemon=True)
                   for i in range(args.clients)] + [threading.Thread(target=sampler, args=(run, nodes), daemon=True)]
        for t in threads:
            t.start()
        rnd = random.Random(11)
        for k in range(args.pg_kills):
            time.sleep(rnd.uniform(6, 10))
            leader = next((n for n in nodes if n.alive() and _role(n) == "leader"), first)
            sample_receipts(run, leader)
            leader.kill9()
            run.figures["pg_leader_kills"] += 1
            time.sleep(rnd.uniform(3, 6))
            restart(run, leader)  # comes back as a follower
            del k
        time.sleep(6)
        run.stop.set()
        for t in threads:
            t.join(timeout=120)
        run.figures["pg_settle_s"] = round(settle(run, nodes, args.settle))
        sample_receipts(run, second)
        accepted = set(run.accepted) - before
        out = check(run, url, chain.rpc_url, first.info["contract"], accepted)
        out["false_tampered"] = verify_receipts(run, second)
        run.figures["pg_roles"] = sum(1 for n in nodes if _role(n) == "leader")  # exactly one leader
        return out
    finally:
        for n in nodes:
            n.stop()
        chain.stop()
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _anvil(node: Node) -> int:
    """The managed anvil's pid now (anvil.pid is written the moment it starts, restarts included)."""
    return int((node.data_dir / "anvil.pid").read_text())


def _role(node: Node) -> str:
    try:
        return str(httpx.get(f"{node.base}/readyz", timeout=5).json()["checks"]["anchoring"]["role"])
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=3, help="kill -9 of serve under load (SQLite node)")
    ap.add_argument("--pg-kills", type=int, default=1, help="kill -9 of the leader of two nodes on PostgreSQL")
    ap.add_argument("--freeze", type=float, default=15, help="seconds the chain is frozen with SIGSTOP")
    ap.add_argument("--reorg-depth", type=int, default=6, help="blocks replaced (MRL_CONFIRMATIONS is 1)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=200, help="records per submission request")
    ap.add_argument("--hospitals", type=int, default=4)
    ap.add_argument("--settle", type=float, default=180, help="seconds to wait for anchoring to catch up")
    ap.add_argument("--steady", type=float, default=30, help="seconds of load before the first fault")
    ap.add_argument("--no-pg", action="store_true", help="skip the two-node PostgreSQL phase")
    ap.add_argument("--steady-only", action="store_true", help="no faults: load for --steady seconds, then check "
                    "(the anchoring lag under load, issue 15 point 7)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, databases)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mrledger-chaos-"))
    run = Run([f"ch-{i:03d}" for i in range(args.hospitals)])
    totals: Counter[str] = Counter()
    try:
        totals.update(sqlite_phase(args, work, run))
        if not (args.no_pg or args.steady_only):
            totals.update(pg_phase(args, work, run))
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    result: dict[str, Any] = {k: totals.get(k, 0) for k in ("accepted", "anchored_once", "lost", "double",
                                                            "stalled", "false_tampered")}
    result["manual_steps"] = run.manual_steps
    result.update({k: v for k, v in sorted(run.figures.items())})
    result.update(sorted(run.maxima.items()))
    result["seconds"] = round(time.monotonic() - t0)
    result["cores"] = os.cpu_count()
    if not args.keep:
        result["work_dir"] = "removed"
    else:
        result["work_dir"] = str(work)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
