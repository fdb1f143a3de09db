"""Service benchmark: a real ``mrledger serve`` (1 uvicorn worker, SQLite, its managed anvil) driven over
HTTP — bulk ingest, then doctors' receipt verifications at a fixed open-loop rate. Not a test.

Usage:  python scripts/bench_api.py [--preload 100000] [--rate 500] [--seconds 20] [--json]
        [--py-spy DIR]   (also record py-spy profiles of the server during ingest and during verification)

What is measured, precisely:

* ``ingest_per_s``: results accepted per second of wall time over all ``POST /v1/hospitals/{h}/results``
  requests of ``--chunk`` (1,000) records, spread over ``--hospitals`` hospitals and sent by ``--ingest-clients``
  concurrent clients. Request bodies are built and serialised before the clock starts.
* ``seal_to_confirmed_s``: from the ``sealed_at`` of the newest batch (the one holding the last results
  submitted; the database's clock, which is this machine's) to the first poll (every 50 ms, read-only on the
  SQLite file) that finds nothing pending, nothing sealed-but-unconfirmed: i.e. how long the last batch
  waited for its anchor to be sent, mined and confirmed (``MRL_CONFIRMATIONS``, default 1).
* ``verify_*``: ``--sample`` receipts are fetched from the receipt endpoint; then a separate process (so
  the client's event loop does not share the GIL with the measurement's bookkeeping here) sends
  ``POST /v1/verify {"receipt": …}`` for ``--seconds`` at ``--rate`` per second, open loop: request i is
  due at t0 + i/rate and its latency is taken from that due time, not from when it was actually sent, so a
  slow server cannot slow the generator down and hide its own queueing (no coordinated omission). An error
  is a transport failure or any status other than 200. ``achieved_rate`` is completed requests / time from
  t0 to the last response. Verdicts are counted (all must be ``authentic``).
* ``sign_batch_ms``: mean time the server's sealer spent signing a batch — the ES256 signature, its check
  against the leaf certificate and against the node's trust store (a batch is never sealed with a
  signature the node itself would refuse) — measured inside the server and read back from ``/metrics``
  (histogram ``mrledger_batch_sign_seconds``), so it is the sealer's own figure, not a re-enactment.
  The server runs its default configuration: the dev CA, every batch signed, signatures required.
* ``verify_signature_us``: mean ``verify_batch_signature`` over the sampled receipts' signatures with a
  warm cache (certificates parsed, chains validated — what a running node pays per verification), timed
  in this process against the server's trust anchors; ``verify_signature_cold_us`` is the first call on a
  fresh trust store (certificate parsing and chain validation included).

* ``verify_p99_ms_{min,median,max}``: the verification run is repeated ``--runs`` (5) times, minutes apart at
  most; the p99 of each run is listed in ``verify_p99_ms_runs`` and the other ``verify_*`` figures are the median
  run's. One run is not a figure on a shared machine: its p99 swings with whatever else the cores are doing.
* ``saturation_rps`` / ``floor_rps`` / ``floor_ratio``: ``--saturation-rate`` (2,500/s) is offered for
  ``--saturation-seconds`` to the node, then, in the same minutes and with the same generator and bodies, to
  ``scripts/bench_floor.py`` — a bare FastAPI app served the same way that only parses the JSON and walks the
  audit path. Completed answers per second of each, and the node's share of the floor. ``--floor-ladder``
  then loads the floor with each check a verification cannot skip added in turn (``floor_ladder``: the leaf
  recomputed from the record, the result's versions read, the verification written; bench_floor.py says how).
* ``core_speed``: how fast the cores were during the runs at ``--rate`` (``verify``), the node's saturation
  (``node``) and the floor's (``floor``): a fixed loop's CPU ms once a second (scripts/core_speed.py; more ms is a
  slower core); each ladder level's median is on its row (``probe_ms_median``). This machine's cores change
  speed within a minute with other tenants' load, which steal time does not show: a ``floor_ratio`` whose two
  phases' ``probe_ms_median`` differ compares the neighbours too.

The machine's cores are shared by the server, its anvil and the load generator: on a 2-core box the
generator's ~0.2 ms of CPU per request is taken from the server. ``cores`` is reported alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrledger.anchoring.chain import FINAL_DEPTH  # noqa: E402
from mrledger.anchoring.node import free_port  # noqa: E402
from mrledger.ledger import BatchHead, BatchSignature, TrustStore, verify_batch_signature  # noqa: E402
from mrledger.store import Store  # noqa: E402
from mrledger.store.anchors import Outbox  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_speed import SpeedProbe  # noqa: E402
from httpload import TRANSPORT_ERRORS, Conn  # noqa: E402

_MRLEDGER = Path(sys.executable).with_name("mrledger")
COMMAND = [str(_MRLEDGER)] if _MRLEDGER.is_file() else [sys.executable, "-m", "mrledger.cli"]


def record(hospital: str, i: int) -> dict[str, Any]:
    """The records of scripts/bench_store.py (make_records), as JSON."""
    return {
        "hospital_id": hospital, "result_id": f"LAB-{i:08d}", "version": 1, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
        "subject": {"system": "urn:mrn", "value": f"P{i % 9973}"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 3.9 + (i % 50) / 10,
             "unit": "mmol/L", "reference_range": {"low": 3.9, "high": 6.1}}]},
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark as Ctrl-C does: through its ``finally`` blocks, which stop the node it started (and
    drop its schema). Without this, a benchmark stopped with ``kill`` left its ``mrledger serve``, anvil and sealer
    running under the next measurement."""
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))


class Server:
    """``mrledger serve`` on a temp data dir and a free loopback port."""

    def __init__(self, data_dir: Path, batch_interval: float, sign: bool = True, rate: float = 500,
                 registry_version: int = 2, api_processes: int = 1, anchor_every: float | None = None) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MRL_")}
        self.env.update(MRL_DATA_DIR=str(data_dir), MRL_PORT=str(self.port), MRL_HOST="127.0.0.1",
                        MRL_BATCH_INTERVAL=str(batch_interval), MRL_SIGN_BATCHES=str(sign).lower(),
                        # The load generator verifies anonymously from one address, far above the per-address
                        # limit a node sets for anonymous callers (MRL_VERIFY_RATE_LIMIT): the limit is raised
                        # above the offered rate, not switched off, so its cost is part of what is measured.
                        MRL_VERIFY_RATE_LIMIT=str(2 * rate), MRL_VERIFY_BURST=str(max(1, int(rate))),
                        MRL_REGISTRY_VERSION=str(registry_version), MRL_API_PROCESSES=str(api_processes))
        if anchor_every is not None:
            self.env["MRL_ANCHOR_EVERY"] = str(anchor_every)
        self.api = f"http://127.0.0.1:{self.port}/v1"
        self.log = data_dir.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(mode=0o700)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*COMMAND, "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"serve not ready in 120 s; see {self.log}")

    def token(self, role: str) -> str:
        out = subprocess.run([*COMMAND, "token", "create", "--role", role, "--label", "bench"], env=self.env,
                             capture_output=True, text=True, check=True, timeout=120)
        return out.stdout.strip()

    def stop(self) -> int | None:
        """SIGINT, as Ctrl-C: serve stops uvicorn, the sealer and the worker, and anvil saves its state."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Profiler:
    """``py-spy record`` on the server for one phase (needs ptrace rights on the server's pid)."""

    def __init__(self, out_dir: Path | None, pid: int) -> None:
        self.out_dir, self.pid, self.proc = out_dir, pid, None

    def start(self, phase: str) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen(  # type: ignore[assignment]
            [str(spy), "record", "--pid", str(self.pid), "--rate", "200", "--format", "raw", "--threads",
             "--nonblocking", "--gil",
             "--output", str(self.out_dir / f"{phase}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # type: ignore[attr-defined]
            self.proc.wait(timeout=60)  # type: ignore[attr-defined]
            self.proc = None


# -------------------------------------------------------------------------------- load generator (own process)


def _loadgen(api: str, bodies: list[bytes], rate: float, seconds: float, connections: int,
             out: Any) -> None:
    """Open-loop verification load, in its own process; sends back (latencies ms, errors, verdicts, span)."""
    from mrledger.node.background import die_with_parent

    if not die_with_parent(os.getppid()):  # killed with the benchmark, however it ends
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # No collector pauses in the generator: this spawned process imports the whole benchmark (SQLAlchemy,
    # web3, ...), and a full collection of that heap stalled it for ~60 ms at the same request count in
    # every run — in the measured latencies, while the server saw no request slower than 8 ms. The run
    # makes little cyclic garbage; the collector is switched back on when it ends.
    gc.collect()
    gc.freeze()
    gc.disable()

    async def run() -> tuple[list[float], int, dict[str, int], float, int]:
        n = int(rate * seconds)
        latencies: list[float] = []
        verdicts: Counter[str] = Counter()
        errors = 0
        last = 0.0
        conns = [Conn(api) for _ in range(connections)]
        for conn, body in zip(conns, bodies, strict=False):  # connect before the clock starts
            await conn.post("/verify", content=body)
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        # Due requests wait in this queue for one of ``connections`` senders (one connection each).
        due_queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

        async def sender(conn: Conn) -> None:
            nonlocal errors, last
            while (item := await due_queue.get()) is not None:
                i, due = item
                try:
                    answer = await conn.post("/verify", content=bodies[i % len(bodies)])
                    ok = answer.status_code == 200
                    if ok:
                        verdicts[answer.json()["verdict"]] += 1
                except TRANSPORT_ERRORS:
                    ok = False
                done = loop.time()
                last = max(last, done)
                if ok:
                    latencies.append((done - due) * 1000)  # from the due time: no coordinated omission
                else:
                    errors += 1
            conn.close()

        senders = [asyncio.create_task(sender(c)) for c in conns]
        for i in range(n):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due_queue.put_nowait((i, due))
        for _ in senders:
            due_queue.put_nowait(None)
        await asyncio.gather(*senders)
        return latencies, errors, dict(verdicts), last - t0, n

    answer = asyncio.run(run())
    gc.enable()
    out.send(answer)
    out.close()


def load(api: str, bodies: list[bytes], rate: float, seconds: float, connections: int
         ) -> tuple[list[float], int, dict[str, int], float, int]:
    """One open-loop run of the generator in a spawned process (see ``_loadgen``)."""
    recv, send = mp.get_context("spawn").Pipe(duplex=False)
    gen = mp.get_context("spawn").Process(target=_loadgen, args=(api, bodies, rate, seconds, connections, send))
    gen.start()
    send.close()
    answer: tuple[list[float], int, dict[str, int], float, int] = recv.recv()
    gen.join()
    return answer


def floor_load(bodies: list[bytes], rate: float, seconds: float, connections: int, level: int = 0,
               results: Path | None = None) -> tuple[list[float], int, dict[str, int], float, int]:
    """The same run against ``scripts/bench_floor.py`` (level 0: JSON parse + audit path only; a higher
    ``level`` adds the checks a verification cannot skip, its table preloaded from ``results``), started now, in
    the same minutes as the node's run, so that the machine's noise hits both."""
    port = free_port()
    extra = [str(level), str(results)] if level else []
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench_floor.py"), str(port), *extra])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the floor app did not start")
            time.sleep(0.1)
        return load(f"http://127.0.0.1:{port}/v1", bodies, rate, seconds, connections)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rps(run: tuple[list[float], int, dict[str, int], float, int]) -> float:
    """Completed responses per second of one ``load`` run."""
    return len(run[0]) / run[3] if run[3] > 0 else 0.0


def _saturation_figures(node: tuple[list[float], int, dict[str, int], float, int],
                        floor: tuple[list[float], int, dict[str, int], float, int], offered: float) -> dict[str, Any]:
    """Completed responses per second when far more is offered than either server can take."""
    node_rps, floor_rps = _rps(node), _rps(floor)
    return {"saturation_offered": offered, "saturation_rps": round(node_rps, 1), "floor_rps": round(floor_rps, 1),
            "floor_ratio": round(node_rps / floor_rps, 3) if floor_rps else None,
            "saturation_errors": node[1], "floor_errors": floor[1],
            "saturation_verdicts": node[2], "floor_verdicts": floor[2]}


def floor_ladder(receipts: list[dict[str, Any]], bodies: list[bytes], level0: float, rate: float, seconds: float,
                 connections: int, directory: Path, probe: SpeedProbe | None = None) -> dict[str, Any]:
    """Each level of ``bench_floor.LEVELS`` above 0 loaded like level 0 (``floor_rps``, measured just before):
    completed answers per second, and each level's share of level 0 — the most ``floor_ratio`` could be for an
    implementation that does that level's checks and nothing more."""
    results = directory / "floor-results.json"
    results.write_text(json.dumps([{"hospital_id": r["record"]["hospital_id"], "result_id": r["record"]["result_id"],
                                    "version": r["record"]["version"], "leaf": r["leaf"]["hash"]} for r in receipts]))
    from bench_floor import LEVELS  # scripts/ is this script's directory: on sys.path

    ladder = [{"level": LEVELS[0], "rps": round(level0, 1), "ratio": 1.0}]
    for level in range(1, len(LEVELS)):
        if probe is not None:
            probe.mark(LEVELS[level])
        run = floor_load(bodies, rate, seconds, connections, level, results)
        rps = _rps(run)
        ladder.append({"level": LEVELS[level], "rps": round(rps, 1),
                       "ratio": round(rps / level0, 3) if level0 else None, "errors": run[1]})
        if probe is not None:  # each level's cores: its ratio to level 0 compares them too
            probe.mark("end")
            ladder[-1]["probe_ms_median"] = probe.summary(LEVELS[level]).get("probe_ms_median")
    return {"floor_ladder": ladder}


# -------------------------------------------------------------------------------- phases


def ingest(server: Server, tokens: dict[str, str], preload: int, chunk: int, clients: int) -> tuple[float, int]:
    hospitals = list(tokens)
    per = preload // len(hospitals)
    per_hospital: list[list[tuple[str, bytes]]] = []
    for h in hospitals:
        per_hospital.append([(h, json.dumps({"records": [record(h, i) for i in range(start, min(per, start + chunk))]},
                                            separators=(",", ":")).encode())
                             for start in range(0, per, chunk)])
    # Interleaved across hospitals, as many hospitals uploading at once would be.
    order = [job for jobs in zip_longest(*per_hospital) for job in jobs if job is not None]
    local = threading.local()

    def send(job: tuple[str, bytes]) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=120)
        h, body = job
        r = client.post(f"{server.api}/hospitals/{h}/results", content=body,
                        headers={"Authorization": f"Bearer {tokens[h]}", "content-type": "application/json"})
        if r.status_code != 202:
            raise SystemExit(f"submission failed: {r.status_code} {r.text[:300]}")
        return int(r.json()["accepted"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        accepted = sum(pool.map(send, order))
    return time.perf_counter() - t0, accepted


def wait_confirmed(store: Store, hospitals: list[str], timeout: float) -> tuple[float, int]:
    """Seconds from the newest batch's seal to the first poll that finds everything confirmed; batches."""
    outbox = Outbox(store)
    deadline = time.monotonic() + timeout
    while True:
        if store.pending_count() == 0 and outbox.unconfirmed() == 0:
            now = datetime.now(UTC)
            break
        if time.monotonic() > deadline:
            raise SystemExit("anchoring did not finish in time")
        time.sleep(0.05)
    heads = [b for h in hospitals for b in store.batches(h)]
    newest = max(b.sealed_at for b in heads)
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    return (now - newest).total_seconds(), len(heads)


def fetch_receipts(server: Server, tokens: dict[str, str], per_hospital: dict[str, int], sample: int
                   ) -> list[dict[str, Any]]:
    hospitals = list(tokens)
    wanted = [(hospitals[k % len(hospitals)], k // len(hospitals)) for k in range(sample)]
    wanted = [(h, (i * 7919) % per_hospital[h]) for h, i in wanted]  # spread over every batch
    with httpx.Client(timeout=30) as client:
        def get(item: tuple[str, int]) -> dict[str, Any]:
            h, i = item
            r = client.get(f"{server.api}/hospitals/{h}/results/LAB-{i:08d}/receipt",
                           headers={"Authorization": f"Bearer {tokens[h]}"})
            r.raise_for_status()
            doc: dict[str, Any] = r.json()
            return doc

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(get, wanted))


def signing_figures(server: Server, receipts: list[dict[str, Any]], rounds: int = 5000) -> dict[str, Any]:
    """``sign_batch_ms`` from the server's /metrics; ``verify_signature_us`` timed here (see the docstring)."""
    metrics: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("mrledger_batch_sign_seconds_sum", "mrledger_batch_sign_seconds_count"):
            metrics[name] = float(value)
    signed = metrics.get("mrledger_batch_sign_seconds_count", 0.0)
    info = json.loads((server.data_dir / "serve.json").read_text())
    trust = TrustStore.from_pem([Path(p).read_bytes() for p in info["trust_anchors"]], (),
                                [Path(p).read_bytes() for p in info["trust_intermediates"]])
    pairs = [(BatchHead.from_obj(r["batch"]), BatchSignature.from_obj(r["signature"])) for r in receipts
             if "signature" in r]
    if not pairs:
        raise SystemExit("the sampled receipts carry no signature")
    t0 = time.perf_counter()
    verify_batch_signature(*pairs[0], trust)
    cold = time.perf_counter() - t0
    for head, sig in pairs:  # warm: every (chain, sealing time) validated once, as a running node has
        verify_batch_signature(head, sig, trust)
    t0 = time.perf_counter()
    for i in range(rounds):
        verify_batch_signature(*pairs[i % len(pairs)], trust)
    warm = (time.perf_counter() - t0) / rounds
    return {
        "sign_batch_ms": round(metrics["mrledger_batch_sign_seconds_sum"] / signed * 1000, 3) if signed else None,
        "batches_signed": int(signed),
        "verify_signature_us": round(warm * 1e6, 1),
        "verify_signature_cold_us": round(cold * 1e6, 1),
        "receipts_signed": f"{len(pairs)}/{len(receipts)}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preload", type=int, default=100_000)
    ap.add_argument("--hospitals", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--ingest-clients", type=int, default=4)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="verification runs at --rate (p99 min/median/max)")
    ap.add_argument("--saturation-rate", type=float, default=5000,
                    help="offered rate for the saturation run against the node and the bare-FastAPI floor (above both: "
                         "the floor served all of 2,500/s) "
                         "(scripts/bench_floor.py); 0 skips both")
    ap.add_argument("--saturation-seconds", type=float, default=10)
    ap.add_argument("--floor-ladder", action="store_true",
                    help="after the floor, load each level of scripts/bench_floor.py (leaf recomputed, one read, one "
                         "write) the same way: floor_ladder, the ceiling each check puts on floor_ratio")
    ap.add_argument("--batch-interval", type=float, default=1.0)
    ap.add_argument("--mine", type=int, default=0,
                    help="mine this many empty blocks after anchoring (a real chain keeps producing blocks; the "
                         "managed anvil automines only on transactions, so its anchors stay shallow)")
    ap.add_argument("--unsigned", action="store_true",
                    help="the server neither signs batches nor checks signatures (the baseline for their cost)")
    ap.add_argument("--py-spy", type=Path, default=None, help="directory for py-spy raw profiles per phase")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--registry-version", type=int, choices=(1, 2), default=2,
                    help="the registry serve deploys (A/B of v1's (root, size) and v2's one word per batch)")
    ap.add_argument("--api-processes", type=int, default=1,
                    help="MRL_API_PROCESSES of the node (the floor stays one process: compare floor_ratio at 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    stop_on_sigterm()

    tmp = Path(tempfile.mkdtemp(prefix="mrl-bench-api-"))
    server = Server(tmp / "data", args.batch_interval, sign=not args.unsigned,
                    rate=max(args.rate, args.saturation_rate), registry_version=args.registry_version,
                    api_processes=args.api_processes)
    result: dict[str, Any] = {}
    try:
        server.start()
        assert server.proc is not None
        profiler = Profiler(args.py_spy, server.proc.pid)
        admin = (server.data_dir / "admin-token").read_text().strip()
        hospitals = [f"bench-{k:02d}" for k in range(1, args.hospitals + 1)]
        with httpx.Client(timeout=60) as client:
            for h in hospitals:
                r = client.post(f"{server.api}/hospitals", json={"id": h, "name": f"Benchmark Hospital {h}"},
                                headers={"Authorization": f"Bearer {admin}"})
                if r.status_code != 201:
                    raise SystemExit(f"cannot register {h}: {r.status_code} {r.text}")
        tokens = {h: server.token(f"hospital:{h}") for h in hospitals}
        server.token("doctor")  # the receipt form needs none; created to exercise the CLI path the brief names

        profiler.start("ingest")
        ingest_s, accepted = ingest(server, tokens, args.preload, args.chunk, args.ingest_clients)
        profiler.stop()
        print(f"ingest: {accepted} results in {ingest_s:.1f} s", file=sys.stderr)
        store = Store.open(f"sqlite:///{server.data_dir.resolve() / 'mrledger.db'}",
                           master_key=server.data_dir.resolve() / "master.key")  # the node's, made by serve
        seal_to_confirmed, batches = wait_confirmed(store, hospitals, timeout=600)
        if args.mine:
            rpc_url = json.loads((server.data_dir / "serve.json").read_text())["rpc_url"]
            httpx.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": [hex(args.mine)]},
                       timeout=30).raise_for_status()
            time.sleep(1.0)  # let the server's cached head (0.5 s) see the new blocks
        head = int(json.loads(httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=10).text)
                   .get("checks", {}).get("chain", {}).get("head", 0) or 0)
        store.engine.dispose()

        per_hospital = {h: args.preload // len(hospitals) for h in hospitals}
        receipts = fetch_receipts(server, tokens, per_hospital, args.sample)
        blocks = [r["anchor"]["block_number"] for r in receipts]
        signing = {"signed": False} if args.unsigned else signing_figures(server, receipts)
        bodies = [json.dumps({"receipt": r}, separators=(",", ":")).encode() for r in receipts]

        # How fast the cores were during each measured phase (scripts/core_speed.py): the node's saturation and
        # the floor's are taken a minute apart, and this machine's cores change speed within a minute.
        probe = SpeedProbe(every=1.0).start()
        probe.mark("verify")
        profiler.start("verify")
        runs = [load(server.api, bodies, args.rate, args.seconds, args.connections) for _ in range(args.runs)]
        profiler.stop()
        latencies, errors, verdicts, span, requests = runs[len(runs) // 2 if args.runs > 1 else 0]
        p99s = sorted(pct(r[0], 0.99) for r in runs)
        saturation = floor = None
        if args.saturation_rate:
            probe.mark("node")
            profiler.start("saturate")
            saturation = load(server.api, bodies, args.saturation_rate, args.saturation_seconds, args.connections)
            profiler.stop()
            probe.mark("floor")
            floor = floor_load(bodies, args.saturation_rate, args.saturation_seconds, args.connections)
        probe.mark("end")

        result = {
            "rate": args.rate,
            "verify_p50_ms": round(pct(latencies, 0.50), 2),
            "verify_p99_ms": round(pct(latencies, 0.99), 2),
            "errors": errors,
            "ingest_per_s": round(accepted / ingest_s),
            "sign_batch_ms": signing.get("sign_batch_ms"),
            "verify_signature_us": signing.get("verify_signature_us"),
            "seal_to_confirmed_s": round(seal_to_confirmed, 2),
            "achieved_rate": round(len(latencies) / span, 1) if span > 0 else 0.0,
            "requests": requests,
            "preloaded": accepted,
            "verify_p90_ms": round(pct(latencies, 0.90), 2),
            "verify_p999_ms": round(pct(latencies, 0.999), 2),
            "verify_max_ms": round(max(latencies), 2) if latencies else None,
            "verify_mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
            "verdicts": verdicts,
            "ingest_s": round(ingest_s, 2),
            "batches": batches,
            "head_block": head,
            "sample_receipts": len(receipts),
            "sample_anchor_blocks": len(set(blocks)),
            # Receipts whose anchor is shallower than the cache's final depth cost round trips to anvil.
            "sample_shallow": sum(head - b + 1 < FINAL_DEPTH for b in blocks) if head else None,
            "mined_after_anchoring": args.mine,
            **{k: v for k, v in signing.items() if k not in ("sign_batch_ms", "verify_signature_us")},
            "cores": os.cpu_count(), "registry_version": args.registry_version, "api_processes": args.api_processes,
            # --runs: the p99 of every run at --rate (the figures above are the median run's).
            "runs": args.runs,
            "verify_p99_ms_min": round(p99s[0], 2),
            "verify_p99_ms_median": round(statistics.median(p99s), 2),
            "verify_p99_ms_max": round(p99s[-1], 2),
            "verify_p99_ms_runs": [round(p, 2) for p in (pct(r[0], 0.99) for r in runs)],
            "core_speed": {phase: probe.summary(phase) for phase in ("verify", "node", "floor") if probe.phase(phase)},
        }
        if saturation is not None and floor is not None:
            result.update(_saturation_figures(saturation, floor, args.saturation_rate))
            if args.floor_ladder:
                result.update(floor_ladder(receipts, bodies, result["floor_rps"], args.saturation_rate,
                                           args.saturation_seconds, args.connections, tmp, probe))
        probe.stop()
    finally:
        code = server.stop()
        result["serve_exit"] = code
        if not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        else:
            result["data_dir"] = str(tmp)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
