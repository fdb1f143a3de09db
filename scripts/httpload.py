"""A load generator's HTTP/1.1 client: one keep-alive connection, requests with Content-Length bodies, the
answer's status and body. Shared by ``bench_api.py`` and ``simulate_city.py``.

Why not httpx: its async client spent ~1 ms of CPU per request. At 300/s bench_api's generator used a whole core
and became the bottleneck it was meant to measure (the server was at 56 %); in the city replay the two verifying
processes used as much CPU as the node they loaded (34 % of a core each against the node's 34 %, per ``ps`` during
the run, issue 20). This speaks just what the benchmarks need, in a few tens of µs per request, so nearly all of
the machine goes to the server under test.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from typing import Any
from urllib.parse import urlsplit

#: What a failed exchange raises: the connection is closed, and the next request opens a new one.
TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError)


class Answer:
    """A response: ``status_code``, ``content``; ``text`` and ``json()`` as httpx names them."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Conn:
    """One connection to ``base`` (``http://host:port/prefix``); not shared between concurrent tasks."""

    def __init__(self, base: str, timeout: float = 60.0) -> None:
        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.prefix, self.timeout = url.path.rstrip("/"), timeout
        self._host_line = f"Host: {self.host}:{self.port}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, *, content: bytes | None = None, json: Any = None,
                   headers: dict[str, str] | None = None) -> Answer:
        """POST ``content`` (or ``json``, serialised) to ``prefix + path``; raises one of ``TRANSPORT_ERRORS``
        (after closing the connection) when the exchange fails."""
        body = content if content is not None else jsonlib.dumps(json, separators=(",", ":")).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items() if k.lower() != "content-type")
        head = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._host_line}Content-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(head + body)
        except TRANSPORT_ERRORS:
            self.close()
            raise

    async def _exchange(self, request: bytes) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not spoken here")
        data = await self.reader.readexactly(length)
        if close:
            self.close()
        return Answer(status, data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
