"""More than one API process under one ``mrledger serve`` (``MRL_API_PROCESSES``).

Why processes: verification is CPU-bound Python, so one interpreter serves one core however many threads it
runs (docs/scaling.md has the figures). Each extra process is a whole API of its own — its store engine, chain
client, caches, access-log buffer and rate limiter, built by node/wiring.py as the first one is — listening on
the same port: every process binds it with ``SO_REUSEPORT`` and the kernel spreads connections between them.
They share nothing but the database and the chain, like two nodes behind a load balancer.

What an extra process does not do: seal, anchor or register hospitals on chain (it holds no admin key: the
sealer process of this node, or the leader of the region, does), create the first admin token or the dev PKI
(the first process has done both before it starts them). Its ``/metrics`` are its own (Prometheus scrapes
each process, or the load balancer's view is the sum); the anonymous rate limit is per process, so a client
spread over N processes gets at most N times ``MRL_VERIFY_RATE_LIMIT`` (docs/access.md §4).

Lifetime is the sealer process's (node/background.py): spawned, never forked; killed with serve
(``PR_SET_PDEATHSIG``); stopped with SIGTERM, after which uvicorn finishes the requests in flight; a process
that dies makes serve shut down with exit code 1.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from typing import TYPE_CHECKING, Any

from mrledger.node.settings import Settings
from mrledger.node.spawned import LOG_FORMAT, ApiSpec, spec_services

if TYPE_CHECKING:
    import uvicorn

    from mrledger.service.ledger import Services

log = logging.getLogger("mrledger.serve")


def bind(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """The API's listening socket. ``shared``: other processes may bind it too (``SO_REUSEPORT``), and the
    kernel hands each new connection to one of them."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def api_server(settings: Settings, ledger: Services, spec: ApiSpec) -> uvicorn.Server:
    """The HTTP server of one API process, configured alike in the first process and the extra ones. ``spec``: the
    port, and how to spawn a process with this node's services (an audit job's processes)."""
    import uvicorn

    from mrledger.http.app import create_app
    from mrledger.http.protocol import BoundedHttpToolsProtocol
    from mrledger.http.ratelimit import RateLimiter
    from mrledger.node.audit_pool import AuditPool
    from mrledger.service.audit_jobs import AuditJobs

    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    # As many as the cores the operator gave the API: an audit must not take cores the node was not given.
    processes = settings.audit_processes or settings.api_processes
    jobs = AuditJobs(settings.data_dir / "audit-jobs", split=AuditPool(spec, processes) if processes > 1 else None,
                     split_records=settings.audit_split_records)
    app = create_app(ledger, threads=settings.api_threads, metrics_token=metrics_token,
                     verify_limit=RateLimiter(settings.verify_rate_limit, settings.verify_burst), audit_jobs=jobs)
    return uvicorn.Server(uvicorn.Config(app, host=settings.host, port=spec.port, http=BoundedHttpToolsProtocol,
                                         lifespan="on", access_log=False, log_level="info", log_config=None))


def close_logged(close: Callable[[], None], what: str) -> None:
    """Flush a buffer on the way out; a database that cannot take it (a full disk) is logged, and the stop
    goes on: the chain and everything else still need stopping cleanly."""
    try:
        close()
    except Exception as exc:
        log.error("the last buffered %s entries could not be written (%s: %s)", what, type(exc).__name__, exc)


class ApiProcesses:
    """The first process's handle on the extra ones: start, watch, stop."""

    def __init__(self, spec: ApiSpec, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that already runs threads
        self.processes: list[SpawnProcess] = [
            ctx.Process(target=_child, args=(spec, os.getpid()), name=f"mrledger-api-{i}", daemon=False)
            for i in range(1, count)]

    def start(self) -> None:
        for p in self.processes:
            p.start()

    def dead(self) -> list[str]:
        return [p.name for p in self.processes if p.exitcode is not None]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def stop(self, timeout: float = 15.0) -> None:
        for p in self.processes:
            if p.pid is not None and p.is_alive():
                p.terminate()
        for p in self.processes:
            if p.pid is None:
                continue
            p.join(timeout)
            if p.is_alive():
                log.error("%s did not stop in %.0fs; killing it", p.name, timeout)
                p.kill()
                p.join(5)


def _child(spec: ApiSpec, parent: int) -> None:
    from mrledger.node.background import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it then sends SIGTERM
    if not die_with_parent(parent):
        raise SystemExit(1)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    raise SystemExit(_run(spec, parent))


def _run(spec: ApiSpec, parent: int) -> int:
    from mrledger.node.heap import tune_gc

    settings = spec.settings
    try:
        ledger, health = spec_services(spec)
    except Exception:
        log.exception("an API process cannot run")
        return 1
    try:
        ledger.access.start_buffering()
        ledger.events.start_buffering()
        server = api_server(settings, ledger, spec)
        signal.signal(signal.SIGTERM, lambda _s, _f: setattr(server, "should_exit", True))
        sock = bind(settings.host, spec.port, shared=True)
        watch = threading.Thread(target=_watch_parent, args=(server, parent), name="parent-watch", daemon=True)
        watch.start()
        tune_gc()
        try:
            server.run(sockets=[sock])
        finally:
            close_logged(ledger.access.close, "access log")
            close_logged(ledger.events.close, "verification ids")
        return 0 if os.getppid() == parent else 1
    except Exception:
        log.exception("an API process cannot run")
        return 1
    finally:
        health.stop()


def _watch_parent(server: Any, parent: int) -> None:
    """Stop serving if serve is gone (where ``PR_SET_PDEATHSIG`` is not available)."""
    while not server.should_exit:
        if os.getppid() != parent:
            server.should_exit = True
            return
        threading.Event().wait(0.5)
