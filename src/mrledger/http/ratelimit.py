"""A token bucket per client address, for anonymous verification (``POST /v1/verify`` without a token).

Why: checking a receipt needs no token — a patient's receipt is checked on the page or by anyone she shows it
to — so without a limit one address could drive the node's verification path (CPU, the chain's RPC endpoint, the
access log) as fast as it can send. Doctors, auditors and admins authenticate and are not limited here: they are
accountable by their token, and a ward verifying a queue of patients must not be slowed down.

Addresses are the peer address uvicorn reports (behind a reverse proxy, uvicorn takes X-Forwarded-For only from
``--forwarded-allow-ips``, 127.0.0.1 by default). IPv6 clients are keyed by their /64: one subscriber holds a whole
/64 and could otherwise take a fresh address per request. At most ``max_clients`` buckets are kept (least
recently used dropped first), so a flood of addresses costs bounded memory; a dropped bucket comes back full,
which can only favour a client, never lock one out.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: Buckets kept at most (about 100 bytes each).
MAX_CLIENTS = 65_536


def client_key(host: str | None) -> str:
    """The bucket of a peer address: the address itself, or its /64 for IPv6; unparsable names as they are."""
    if not host:
        return "?"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class RateLimiter:
    """``rate`` requests per second per client, bursts of up to ``burst``. ``rate`` 0 switches it off."""

    rate: float
    burst: int
    max_clients: int = MAX_CLIENTS
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1 or self.max_clients < 1:
            raise ValueError("rate must be >= 0, burst and max_clients >= 1")

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0 when the request may go ahead, else the seconds until the
        next token (for Retry-After); a refused request spends nothing."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait: float) -> str:
    """Retry-After in whole seconds (RFC 9110 §10.2.3), never 0 for a refused request."""
    return str(max(1, math.ceil(wait)))


__all__ = ["MAX_CLIENTS", "RateLimiter", "client_key", "retry_after"]
