"""Wiring for the command line: build the monitor from options, run one pass (``--once``) or poll, and export
Prometheus metrics (``prometheus_client``, already a dependency of the node) on ``--metrics-port``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from web3 import Web3

from mrledger.ledger import TrustStore
from mrledger.monitor.checks import Deployment
from mrledger.monitor.core import KINDS, Monitor, PassResult, Problem
from mrledger.monitor.sources import Chain, Node
from mrledger.monitor.state import AnchorRow, State
from mrledger.monitor.witness import Witness, load_witness_key

log = logging.getLogger("mrledger.monitor")


@dataclass(frozen=True)
class Options:
    rpc_url: str
    contract: str
    node_url: str
    state: Path
    hospitals: Sequence[str]
    from_block: int = 0
    trust: Sequence[Path] = ()
    intermediates: Sequence[Path] = ()
    crls: Sequence[Path] = ()
    require_signatures: bool = True
    withhold_delay: float = 3600.0
    max_sealing_delay: float = 7 * 86400
    keep_blocks: int = 128
    witness_key: Path | None = None
    witness_out: Path | None = None
    #: An auditor token: the status maps are re-derived only with it (their changes are not public).
    token: str | None = None


class Metrics:
    """``mrledger_monitor_*`` in a registry of its own (so tests can build several monitors in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.last_block = Gauge("mrledger_monitor_last_checked_block", "Last block whose events were checked",
                                registry=self.registry)
        self.lag = Gauge("mrledger_monitor_lag_blocks", "Chain head minus the last checked block",
                         registry=self.registry)
        self.problems = Counter("mrledger_monitor_problems_total", "Problems reported, by kind", ["kind"],
                                registry=self.registry)
        for kind in KINDS:
            self.problems.labels(kind=kind)  # every kind exported from the start, at 0

    def observe(self, result: PassResult) -> None:
        self.last_block.set(result.last_block)
        self.lag.set(max(0, result.head - result.last_block))
        for p in result.problems:
            self.problems.labels(kind=p.kind).inc()


def trust_store(options: Options) -> TrustStore | None:
    if not options.trust:
        return None
    return TrustStore.from_pem([p.read_bytes() for p in options.trust],
                               crls=[p.read_bytes() for p in options.crls],
                               intermediates=[p.read_bytes() for p in options.intermediates])


def build(options: Options, *, on_problem: object = None) -> Monitor:
    """The monitor for ``options``; ``on_problem`` defaults to printing each problem's JSON line on stdout."""
    w3 = Web3(Web3.HTTPProvider(options.rpc_url, request_kwargs={"timeout": 30}))
    chain = Chain(w3, options.contract)
    state = State(options.state, keep_blocks=options.keep_blocks)
    chain_id = chain.chain_id()
    deployment = Deployment(chain_id, options.contract.lower(), trust_store(options), options.require_signatures,
                            timedelta(seconds=options.max_sealing_delay))
    checkpoint = None
    if options.witness_key is not None:
        out = options.witness_out or options.state.parent / "witness"
        witness = Witness(load_witness_key(options.witness_key), out, state, chain_id, options.contract)

        def checkpoint(hospital_id: str, row: AnchorRow) -> None:
            if witness.checkpoint(hospital_id, row) is not None:
                log.info("witness checkpoint: %s seq %d block %d", hospital_id, row.seq, row.block)

    def emit(problem: Problem) -> None:
        print(problem.to_json(), flush=True)

    node = Node(options.node_url, token=options.token)
    return Monitor(chain, node, state, deployment, options.hospitals, from_block=options.from_block,
                   withhold_delay=options.withhold_delay, on_problem=on_problem or emit,  # type: ignore[arg-type]
                   on_checkpoint=checkpoint)


def run(monitor: Monitor, *, once: bool, interval: float, metrics_port: int | None) -> int:
    """``--once``: one pass, exit 1 if it found any problem, else 0. Otherwise poll every ``interval`` seconds
    until interrupted; a pass that fails (chain or node down) is logged and retried at the next tick."""
    if once:
        result = monitor.run_once()
        log.info("checked up to block %d: %d batches, %d leaves, %d problems", result.last_block,
                 result.batches_checked, result.leaves_checked, len(result.problems))
        return 1 if result.problems else 0
    metrics = Metrics()
    if metrics_port is not None:
        start_http_server(metrics_port, registry=metrics.registry)
    while True:
        started = time.monotonic()
        try:
            metrics.observe(monitor.run_once())
        except Exception:  # a monitor keeps watching through outages; the log says what failed
            log.exception("monitor pass failed; retrying in %g s", interval)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
        sys.stdout.flush()
