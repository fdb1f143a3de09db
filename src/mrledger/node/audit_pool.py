"""The processes a large KPI audit job spreads its event streams over (service/audit_jobs.py ``Splitter``).

Why processes: the audit is CPU-bound Python — two decryptions, a rebuilt record and a leaf hash per record, then
each batch's rollup sums — so a job in one API process's thread used one core whatever the node had. At the end of
the 1.16 M replay (issue 20) that was ~6 minutes for 2.35 million records while the other core idled.

Each process is spawned for the job (never forked: the API process runs threads) with the node's services built
from the ``ApiSpec`` an extra API process gets (``spawned.spec_services``): its own database engine and chain
client. It takes whole streams from a queue (``DecisionAudit.part``) and sends back each stream's summary, counts
and kept problems; the job merges them. A process that fails fails the job with its error; one that dies without
a word (killed) too.

Plain daemon processes, not ``concurrent.futures.ProcessPoolExecutor``: at interpreter exit the executor waits
for the work items already running — a stopping node would have waited minutes for a stream's audit — whereas
daemon processes are terminated when the API process exits, and die with it if it is killed
(``PR_SET_PDEATHSIG``). A job lost that way reads ``lost``, as before.

How many: ``MRL_AUDIT_PROCESSES``, by default as many as ``MRL_API_PROCESSES`` — the cores the operator gave the
API — each at a lower priority (``NICE``) than the API processes, so a long audit does not slow verification.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
from collections.abc import Iterator, Sequence
from multiprocessing.context import SpawnProcess
from typing import Any

from mrledger.node.spawned import LOG_FORMAT, ApiSpec, spec_services

#: How often the job looks whether its processes are still alive while it waits for a part.
_POLL_S = 1.0
#: Added to an audit process's nice value: it yields the CPU to the API processes (on an idle node it changes nothing).
NICE = 10


class AuditProcessError(RuntimeError):
    """An audit process failed (its error) or stopped without finishing its streams."""


class AuditPool:
    """A ``Splitter``: up to ``processes`` processes per job, started when the job needs them and stopped when it
    has its parts (or gives up)."""

    def __init__(self, spec: ApiSpec, processes: int) -> None:
        self.spec, self.processes = spec, processes

    def parts(self, streams: Sequence[str], chunk: int, keep: int) -> Iterator[dict[str, Any]]:
        ctx = multiprocessing.get_context("spawn")
        tasks: Any = ctx.Queue()
        results: Any = ctx.Queue()
        count = min(self.processes, len(streams))
        for stream in [*streams, *[None] * count]:  # one None per process: no stream left
            tasks.put(stream)
        procs: list[SpawnProcess] = [
            ctx.Process(target=_work, args=(self.spec, os.getpid(), tasks, results, chunk, keep), daemon=True,
                        name=f"mrledger-audit-{i}") for i in range(count)]
        try:
            for p in procs:
                p.start()
            for _ in streams:
                yield _next(results, procs)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(5)
            tasks.cancel_join_thread()  # streams nobody took are dropped with the queue
            tasks.close()
            results.close()


def _next(results: Any, procs: list[SpawnProcess]) -> dict[str, Any]:
    while True:
        try:
            kind, value = results.get(timeout=_POLL_S)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise AuditProcessError(f"audit process {dead[0].name} stopped (exit code {dead[0].exitcode}) "
                                        "before its streams were checked") from None
            if all(p.exitcode is not None for p in procs):  # all gone, a part missing: never wait for it
                raise AuditProcessError("the audit processes ended before every stream was checked") from None
            continue
        if kind == "error":
            raise AuditProcessError(f"an audit process failed: {value}")
        part: dict[str, Any] = value
        return part


def _work(spec: ApiSpec, parent: int, tasks: Any, results: Any, chunk: int, keep: int) -> None:
    """An audit process: build the services, then check streams until told there are none left."""
    from mrledger.node.background import die_with_parent
    from mrledger.service.kpi_audit import DecisionAudit

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is serve's; the job's end stops this process
    if not die_with_parent(parent):
        raise SystemExit(1)
    # Below the API's priority: an audit is a batch job and may take minutes; doctors' verifications come first.
    os.nice(NICE)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        ledger, health = spec_services(spec)
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        while (stream := tasks.get()) is not None:
            results.put(("part", DecisionAudit(ledger, chunk=chunk, keep=keep).part(stream)))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        health.stop()


__all__ = ["NICE", "AuditPool", "AuditProcessError"]
