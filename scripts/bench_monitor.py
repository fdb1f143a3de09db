"""Monitor benchmark: how fast ``mrledger monitor`` re-derives what a node anchored. Not a test.

Usage:  python scripts/bench_monitor.py [--hospitals 20] [--results 10000] [--batch 100] [--runs 3]
                                       [--registry-version 2]

Builds a node in process (SQLite in a temporary directory, a development CA, every batch signed ES256), on a
real anvil it starts, serves it under uvicorn on a loopback port, ingests ``--results`` results spread over
``--hospitals`` hospitals, seals them in batches of ``--batch`` and anchors them all. Then, ``--runs`` times,
a fresh monitor (new state file, in a child process) makes one full pass from block 0 with the dev CA as its
trust anchor: read the events, fetch every batch's head and leaves over HTTP, re-derive every root, verify every
signature and signing time, compare every head. Timed: that pass, wall clock.

Prints one JSON line: ``batches_per_s`` and ``leaves_per_s`` (min/median/max over the runs), ``problems`` (must
be 0: the node is clean), and ``leaves_vs_floor``: the median leaves/s as a fraction of the floor — the rate
at which this process re-derives the same roots from leaves already in memory (``merkle_root`` alone), so the
figure says how much HTTP, JSON, signatures and chain reads cost on top of the hashing itself, independently
of how fast the machine is.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from eth_account import Account
from fastapi import FastAPI
from web3 import Web3

from mrledger.anchoring.chain import ChainContext
from mrledger.anchoring.deploy import deploy_and_record
from mrledger.anchoring.node import AnvilNode, free_port
from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
from mrledger.http.app import create_app
from mrledger.ledger import ResultRecord, merkle_root
from mrledger.monitor.run import Options, build
from mrledger.service.ledger import build_services
from mrledger.service.pki import BatchSigning, SigningKeys
from mrledger.service.pki_dev import DevCA
from mrledger.store import Store, make_engine, migrate
from mrledger.store.crypto import MasterKey


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread of this process (as the test suite does)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _pass(options: Options, queue: Any) -> None:
    monitor = build(options, on_problem=lambda p: None)
    start = time.perf_counter()
    result = monitor.run_once()
    took = time.perf_counter() - start
    queue.put(((len(result.problems), result.batches_checked, result.leaves_checked), took))


def _timed_pass(options: Options) -> tuple[tuple[int, int, int], float]:
    """One monitor pass in a child process: the node's uvicorn thread stays in this one, so the two do not
    share an interpreter lock (in one process every request waited for the other side's GIL slices)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_pass, args=(options, queue))
    child.start()
    out: tuple[tuple[int, int, int], float] = queue.get(timeout=600)
    child.join()
    return out


def record(hospital: str, i: int) -> ResultRecord:
    return ResultRecord.from_obj({
        "hospital_id": hospital, "result_id": f"R{i}", "version": 1, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7"}, "subject": {"value": f"P{i % 997}"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 5 + i / 1000, "unit": "mmol/L"}]}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hospitals", type=int, default=20)
    ap.add_argument("--results", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--registry-version", type=int, choices=(1, 2), default=2,
                    help="the registry the node anchors on (v2: the monitor checks each word against the node's head "
                         "and map root)")
    args = ap.parse_args()
    hospitals = [f"h{n:02d}-bench" for n in range(args.hospitals)]
    with tempfile.TemporaryDirectory() as tmp_dir, AnvilNode() as node:
        tmp = Path(tmp_dir)
        engine = make_engine(f"sqlite:///{tmp / 'ledger.db'}")
        migrate(engine)
        store = Store(engine, master_key=MasterKey.generate())
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, hub = (Account.from_key(k) for k in node.private_keys[:2])
        deployment = deploy_and_record(store, w3, admin, version=args.registry_version)
        chain = ChainContext(w3, deployment.contract, deployment.chain_id, submitter=hub, admin=admin,
                             rpc_url=node.rpc_url)
        dev = DevCA.create(tmp / "pki", datetime.now(UTC))
        signing = BatchSigning(SigningKeys(tmp / "keys"), dev.trust(), dev=dev)
        sign = signing.for_chain(chain.chain_id, chain.contract)
        ledger = build_services(store, chain, trust=dev.trust().store)
        for h in hospitals:
            ledger.intake.register_hospital(h, f"Bench hospital {h}")
        per = args.results // len(hospitals)
        for h in hospitals:
            records = [record(h, i) for i in range(per)]
            for start in range(0, per, 1000):
                ledger.intake.submit(h, records[start:start + 1000])
            while store.seal(h, args.batch, sign=sign) is not None:
                pass
        worker = AnchorWorker(store, w3, chain.contract, hub, WorkerConfig())
        for _ in range(200):
            worker.step()
            if ledger.outbox.unconfirmed() == 0:
                break
        heads = [head for h in hospitals for head in store.batches(h)]
        leaves = [store.batch_leaves(head.hospital_id, head.seq) for head in heads]
        floor_start = time.perf_counter()
        assert [merkle_root(ls) for ls in leaves] == [head.root for head in heads]
        floor = sum(map(len, leaves)) / (time.perf_counter() - floor_start)

        rates: list[tuple[float, float]] = []
        problems = 0
        with serve_in_thread(create_app(ledger)) as url:
            for run in range(args.runs):
                options = Options(node.rpc_url, chain.contract, url, tmp / f"monitor{run}.db", hospitals,
                                  trust=[dev.root_file], intermediates=[dev.intermediate_file], withhold_delay=0.0)
                result, took = _timed_pass(options)
                problems += result[0]
                assert result[1] == len(heads), (result[1], len(heads))
                rates.append((result[1] / took, result[2] / took))

    def spread(values: list[float]) -> dict[str, float]:
        return {"min": round(min(values), 1), "median": round(statistics.median(values), 1),
                "max": round(max(values), 1)}

    out: dict[str, Any] = {
        "hospitals": len(hospitals), "results": per * len(hospitals), "batches": len(heads), "runs": args.runs,
        "batches_per_s": spread([b for b, _ in rates]), "leaves_per_s": spread([lv for _, lv in rates]),
        "floor_leaves_per_s": round(floor, 1),
        "leaves_vs_floor": round(statistics.median(lv for _, lv in rates) / floor, 4),
        "cores": os.cpu_count(), "registry_version": args.registry_version, "problems": problems}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
