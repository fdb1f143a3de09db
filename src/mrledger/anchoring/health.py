"""Is the chain node answering? Known without asking it on a request's path.

Why: with the managed anvil frozen (SIGSTOP) every ``/readyz`` hung for up to 46 s, and once the API's four
handler threads were stuck in chain calls, submissions and ``/healthz`` waited 40 s too — web3's HTTP
timeout was 30 s. A frozen node accepts connections (the kernel does) and never answers, so only a timeout
tells. ``ChainHealth`` asks ``eth_blockNumber`` once a second from a thread of its own, with a one-second
timeout, and remembers the answer: readiness reads it (no network on that path), and ``GuardedHTTPProvider``
refuses a chain call at once while the node is known not to answer, so a handler thread never sits out a
timeout against a node everybody already knows is down. The first call after the node answers again goes
through as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from web3 import HTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from mrledger.anchoring.errors import AnchoringError
from mrledger.anchoring.node import rpc_request

log = logging.getLogger("mrledger.anchoring")

#: Seconds between probes, and the probe's own timeout. The node counts as down as soon as a probe has waited
#: ``PROBE_TIMEOUT`` without an answer, or its last answer is older than ``DOWN_AFTER``: a node that freezes is
#: known to be down within ~1.5 s.
PROBE_EVERY = 0.5
PROBE_TIMEOUT = 1.0
DOWN_AFTER = 2.5


class ChainDown(AnchoringError):
    """The chain node is known not to answer (``/readyz`` says since when): not asked, so the request
    does not wait out a timeout. Retry later."""


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    up: bool
    head: int | None
    #: Seconds since the node last answered (None: never).
    silent_for: float | None
    error: str | None


class ChainHealth:
    """The node's health as a probing thread last saw it (see the module docstring). Thread-safe."""

    def __init__(self, rpc_url: str, *, every: float = PROBE_EVERY, timeout: float = PROBE_TIMEOUT,
                 down_after: float = DOWN_AFTER) -> None:
        self.rpc_url, self.every, self.timeout, self.down_after = rpc_url, every, timeout, down_after
        self._lock = threading.Lock()
        self._ok_at: float | None = None
        self._head: int | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_up = True
        self._asking_since: float | None = None

    def probe(self) -> bool:
        """Ask the node once (at most ``timeout`` seconds); True if it answered."""
        with self._lock:
            self._asking_since = time.monotonic()
        try:
            head = int(rpc_request(self.rpc_url, "eth_blockNumber", timeout=self.timeout), 16)
        except Exception as exc:  # refused, timed out, garbage: all "not answering"
            with self._lock:
                self._error, self._asking_since = f"{type(exc).__name__}: {exc}", None
            return False
        with self._lock:
            self._ok_at, self._head, self._error, self._asking_since = time.monotonic(), head, None, None
        return True

    def _up(self, now: float) -> bool:
        """(Under the lock.) Answered recently, and not sitting on a probe it should have answered by now."""
        if self._ok_at is None or now - self._ok_at > self.down_after:
            return False
        return self._asking_since is None or now - self._asking_since <= self.timeout

    def start(self) -> ChainHealth:
        """Probe once now (so the first request knows), then every ``every`` seconds in the background."""
        self.probe()
        self._thread = threading.Thread(target=self._run, name="chain-health", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.probe()
            up = self.up
            if up != self._was_up:
                self._was_up = up
                if up:
                    log.warning("the chain node answers again at %s (head %s)", self.rpc_url, self._head)
                else:
                    log.error("the chain node at %s does not answer (%s): chain reads are refused at once and "
                              "/readyz says 503 until it does; submissions are not affected", self.rpc_url,
                              self._error)

    @property
    def up(self) -> bool:
        with self._lock:
            return self._up(time.monotonic())

    def snapshot(self) -> HealthSnapshot:
        now = time.monotonic()
        with self._lock:
            ok_at, head, error, up = self._ok_at, self._head, self._error, self._up(now)
            if self._asking_since is not None and now - self._asking_since > self.timeout and error is None:
                error = f"no answer to a probe for {now - self._asking_since:.1f} s"
        silent = None if ok_at is None else max(0.0, now - ok_at)
        return HealthSnapshot(up, head, silent, error)


class GuardedHTTPProvider(HTTPProvider):
    """web3's HTTP provider with a timeout and a circuit breaker: while ``health`` says the node does not
    answer, a call raises ``ChainDown`` at once instead of waiting for the timeout."""

    def __init__(self, endpoint_uri: str, health: ChainHealth | None, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(endpoint_uri, request_kwargs={"timeout": timeout}, **kwargs)
        self.health = health

    def _guard(self) -> None:
        if self.health is not None and not self.health.up:
            snap = self.health.snapshot()
            silent = "never answered" if snap.silent_for is None else f"silent for {snap.silent_for:.0f} s"
            raise ChainDown(f"the chain node does not answer ({silent}); try again shortly")

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self._guard()
        return super().make_request(method, params)

    def make_batch_request(self, requests: Any) -> Any:
        self._guard()
        return super().make_batch_request(requests)


__all__ = ["ChainDown", "ChainHealth", "GuardedHTTPProvider", "HealthSnapshot"]
