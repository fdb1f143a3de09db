"""A small JSON-RPC client for the API's event loop: what a verification of a shallow anchor asks the node.

Why not web3 or httpx: a receipt anchored less than ``FINAL_DEPTH`` blocks ago is checked against the node
on every verification (anchoring/chain.py: only final facts are cached, so a reorg is seen at once). Through
web3 on a worker thread that cost ~2.5 ms of CPU per verification (web3's formatters, ``requests``, the
thread hand-off): at 500/s offered the service achieved ~100/s (``scripts/bench_api.py`` without
``--mine``). httpx's async client costs ~1 ms of CPU per request (measured in the load generator). Here
the two reads — the registry entry (``eth_call`` of ``batchOf``) and the anchoring block — go in one
JSON-RPC batch over a kept-alive HTTP/1.1 connection, awaited on the loop: tens of µs of CPU.

Plain ``http://`` endpoints only (the managed anvil, a node on the same host or network); for anything
else ``AsyncRpc.for_url`` returns None and verification keeps the worker-thread path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from eth_utils.crypto import keccak

from mrledger.anchoring.contract import BatchRecord
from mrledger.anchoring.errors import AnchoringError

_BATCH_OF = keccak(text="batchOf(bytes32,uint64)")[:4]
_MAX_IDLE = 8  # kept-alive connections (concurrent shallow verifications beyond this open more, then close them)
#: Seconds a verification waits for the node on the event loop before answering 503 (a frozen node accepts
#: connections and never answers; the chain-health breaker stops later requests from trying at all).
_TIMEOUT = 3.0


class RpcError(AnchoringError):
    """The node answered with an error, or not in JSON-RPC."""


class AsyncRpc:
    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path or "/"
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        shown = f"[{host}]" if ":" in host else host
        self._head = (f"POST {self.path} HTTP/1.1\r\nHost: {shown}:{port}\r\nContent-Type: application/json\r\n"
                      "Content-Length: ").encode()

    @classmethod
    def for_url(cls, url: str) -> AsyncRpc | None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.username or parts.query:
            return None
        return cls(parts.hostname, parts.port or 80, parts.path)

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """The results of ``calls`` (method, params), in order; RpcError if any failed."""
        body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)],
                          separators=(",", ":")).encode()
        for attempt in (1, 2):
            reused = bool(self._idle) and self._loop is asyncio.get_running_loop()
            try:
                answer = await asyncio.wait_for(self._post(body), _TIMEOUT)
                break
            except RpcError:
                raise
            except Exception as exc:  # CancelledError is not an Exception: cancellation passes through
                if reused and attempt == 1:
                    continue  # the node closed a kept-alive connection (idle timeout, restart): once more, afresh
                raise RpcError(f"node request failed: {type(exc).__name__}: {exc}") from exc
        try:
            items = json.loads(answer)
            by_id = {item["id"]: item for item in items}
            if any("error" in item for item in items):
                raise RpcError(f"node error: {next(item['error'] for item in items if 'error' in item)}")
            return [by_id[i]["result"] for i in range(len(calls))]
        except (ValueError, KeyError, TypeError) as exc:
            raise RpcError(f"not a JSON-RPC batch answer: {answer[:200]!r}") from exc

    async def _post(self, body: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self.close()
            self._loop = loop
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(b"".join((self._head, str(len(body)).encode(), b"\r\n\r\n", body)))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = None, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value:
                    chunked = True
                elif name == b"connection" and value == b"close":
                    close = True
            if chunked:
                data = await _read_chunked(reader)
            elif length is not None:
                data = await reader.readexactly(length)
            else:
                data, close = await reader.read(), True
        except BaseException:
            writer.close()
            raise
        if close or len(self._idle) >= _MAX_IDLE:
            writer.close()
        else:
            self._idle.append((reader, writer))
        if status != 200:
            raise RpcError(f"node answered HTTP {status}")
        return data

    async def batch_and_block(self, contract: str, hospital_key: bytes, seq: int,
                              number: int) -> tuple[BatchRecord | None, tuple[str, int] | None]:
        """The registry's entry for (hospital, seq) and (hash, timestamp) of block ``number``, in one round trip
        (None for an entry never anchored or a block the node does not have)."""
        data = "0x" + (_BATCH_OF + bytes(hospital_key).rjust(32, b"\0") + seq.to_bytes(32, "big")).hex()
        stored, block = await self.batch([("eth_call", [{"to": contract, "data": data}, "latest"]),
                                          ("eth_getBlockByNumber", [hex(number), False])])
        try:
            raw = bytes.fromhex(stored[2:]) if isinstance(stored, str) else b""
            if len(raw) != 96:
                raise RpcError(f"batchOf answered {len(raw)} bytes, not 96")
            root = raw[:32]
            record = None if root == bytes(32) else BatchRecord(root=root, size=int.from_bytes(raw[32:64], "big"),
                                                                anchored_block=int.from_bytes(raw[64:96], "big"))
            info = None if block is None else (str(block["hash"]).lower(), int(block["timestamp"], 16))
        except (ValueError, KeyError, TypeError) as exc:
            raise RpcError(f"unexpected answer from the node: {exc}") from exc
        return record, info

    def close(self) -> None:
        for _, writer in self._idle:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already (a test client's)
                writer.close()
        self._idle.clear()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, then the empty line
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
