"""The HTTP/1.1 protocol ``mrledger serve`` runs uvicorn with: uvicorn's httptools protocol, plus the two
bounds it lacks on what a client sends before its request exists.

Why: httptools buffers a request line and headers of any size (a 64 MiB header took 64 MB of the node's
memory and was answered 200; measured, issue 14), and nothing closes a connection whose headers never end
(slowloris). Both happen before the ASGI app, so ``mrledger.http.app.BodyLimit`` cannot see them. uvicorn's h11
protocol has a header-size bound but parses in pure Python on the path a verification benchmark drives at
hundreds of requests a second; so the C parser stays and is bounded here, by counting the bytes fed to it
while a request's head is incomplete, and by one timer per request head.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mrledger.http.problems import MEDIA_TYPE, problem_body

#: Largest request line plus headers (bytes). A request carries a bearer token and a few short headers;
#: proxies use 8-32 KiB. Beyond it: 431, connection closed.
MAX_HEADER_BYTES = 64 * 1024
#: A connection must have sent a request's complete head this many seconds after it opened (or after the
#: request's first byte): otherwise 408, connection closed. Between requests (no byte of the next one yet)
#: uvicorn's keep-alive timeout applies instead.
HEADER_TIMEOUT_SECONDS = 30.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=BoundedHttpToolsProtocol)``; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = None  # bytes of the current request's head; None once it is complete
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_bytes is None:
            self._head_bytes = 0
        self._arm()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still inside a head after the parser took all of ``data``: all of it was head (the parser holds it).
        if self._head_bytes is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse(431, "header-too-large", "Request header fields too large",
                             f"the request line and headers may hold at most {MAX_HEADER_BYTES} bytes")

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = asyncio.get_running_loop().call_later(HEADER_TIMEOUT_SECONDS, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._head_bytes is not None and not self.transport.is_closing():
            self._refuse(408, "request-timeout", "Request head not received in time",
                         f"the request line and headers must arrive within {HEADER_TIMEOUT_SECONDS:g} seconds")

    def _refuse(self, status: int, name: str, title: str, detail: str) -> None:
        body = json.dumps(problem_body(status, name, title, detail)).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                             % (status, reason, MEDIA_TYPE.encode(), len(body)) + body)
        self.transport.close()
        self._head_bytes = None
        self._disarm()
