"""The processes a large KPI audit job spreads its event streams over (service/audit_jobs.py ``Splitter``).

Why processes: the audit is CPU-bound Python — two decryptions, a rebuilt record and a leaf hash per record, then
each batch's rollup sums — so a job in one API process's thread used one core whatever the node had. At the end of
the 1.16 M replay (issue 20) that was ~6 minutes for 2.35 million records while the other core idled.

Each process is spawned for the job (never forked: the API process runs threads) with the node's services built
from the ``ApiSpec`` an extra API process gets (``spawned.spec_services``): its own database engine and chain
client. It checks whole streams (``DecisionAudit.part``) and sends back each stream's summary, counts and kept
problems; the job merges them. The processes end with the job, and die with the API process that started them
(``PR_SET_PDEATHSIG``), so a job lost to a restart leaves nothing running. A process that fails fails the job,
with its error.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from mrledger.node.spawned import LOG_FORMAT, ApiSpec, spec_services

if TYPE_CHECKING:
    from mrledger.service.ledger import Services

#: The services of an audit process (set once, when it starts).
_ledger: Services | None = None


class AuditPool:
    """A ``Splitter``: up to ``processes`` processes per job, started when the job needs them."""

    def __init__(self, spec: ApiSpec, processes: int) -> None:
        self.spec, self.processes = spec, processes

    def parts(self, streams: Sequence[str], chunk: int, keep: int) -> Iterator[dict[str, Any]]:
        pool = ProcessPoolExecutor(min(self.processes, len(streams)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=(self.spec, os.getpid()))
        try:
            for done in as_completed([pool.submit(_part, stream, chunk, keep) for stream in streams]):
                yield done.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _start(spec: ApiSpec, parent: int) -> None:
    """An audit process's start: die with the API process, build the services."""
    from mrledger.node.background import die_with_parent

    global _ledger
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is serve's; the job's end stops this process
    if not die_with_parent(parent):
        raise SystemExit(1)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    _ledger, _ = spec_services(spec)  # its chain watcher stops with the process


def _part(stream: str, chunk: int, keep: int) -> dict[str, Any]:
    from mrledger.service.kpi_audit import DecisionAudit

    assert _ledger is not None, "the audit process did not start"
    return DecisionAudit(_ledger, chunk=chunk, keep=keep).part(stream)


__all__ = ["AuditPool"]
