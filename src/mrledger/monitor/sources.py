"""What the monitor reads: the registry's events and views (web3) and the node's public batch data (httpx).

Only public things: a JSON-RPC endpoint, the registry's address and the node's unauthenticated, hash-only
routes (docs/access.md §5). The node's database is never opened, and nothing here trusts the node's answer:
it is parsed as strictly as a receipt (``BatchHead.from_obj``, ``BatchSignature.from_obj``) and checked by
``mrledger.monitor.checks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from eth_typing import HexStr
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.ledger import BatchHead, BatchSignature, EncodingError
from mrledger.ledger.canonical import parse_hex
from mrledger.ledger.statusmap import STATUS_CODES, Status

#: Blocks per ``eth_getLogs`` call: public endpoints refuse wide ranges.
LOG_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Anchored:
    """One ``BatchAnchored`` event with the block it is in: (root, size) on a v1 registry; on a v2 registry the
    commitment word (``root`` empty, ``size`` 0 until the node's published head is found to hash to it)."""

    hospital_key: bytes
    seq: int
    root: bytes
    size: int
    block: int
    block_hash: str
    commitment: bytes | None = None


class Chain:
    """The registry as the monitor sees it. Every read is of the chain as it is now; reorgs are found by
    comparing block hashes (``block_hash``) with the ones the state recorded."""

    def __init__(self, w3: Web3, contract: str) -> None:
        self.w3, self.contract = w3, Web3.to_checksum_address(contract)
        #: The registry's ABI, asked of the chain once: a v2 registry's BatchAnchored carries one commitment.
        self.version = reg2.registry_version(w3, self.contract)
        self._event = (reg2 if self.version == 2 else reg).registry(w3, self.contract).events.BatchAnchored
        self._times: dict[str, int] = {}
        self._predecessor: str | None = None

    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def block_hash(self, number: int) -> str | None:
        try:
            block = self.w3.eth.get_block(number)
        except Exception:  # web3 raises BlockNotFound past the head (a chain that went back)
            return None
        return "0x" + bytes(block["hash"]).hex()

    def block_time(self, block_hash: str) -> int:
        """Timestamp (seconds) of a block, by hash: a hash names one block forever, so it is cached."""
        if block_hash not in self._times:
            self._times[block_hash] = int(self.w3.eth.get_block(HexStr(block_hash))["timestamp"])
        return self._times[block_hash]

    def anchored(self, from_block: int, to_block: int) -> list[Anchored]:
        """``BatchAnchored`` events in [from_block, to_block], in chain order, with their block hashes."""
        out: list[Anchored] = []
        start = from_block
        while start <= to_block:
            end = min(to_block, start + LOG_CHUNK - 1)
            for log in self._event.get_logs(from_block=start, to_block=end):
                a = log["args"]
                where = int(log["blockNumber"]), "0x" + bytes(log["blockHash"]).hex()
                if self.version == 2:
                    out.append(Anchored(bytes(a["hospitalKey"]), int(a["seq"]), b"", 0, *where,
                                        commitment=bytes(a["commitment"])))
                else:
                    out.append(Anchored(bytes(a["hospitalKey"]), int(a["seq"]), bytes(a["root"]), int(a["size"]),
                                        *where))
            start = end + 1
        return out

    def carried(self, hospital_key: bytes) -> int:
        """The seq a hospital's history starts after in this registry: on a v2 registry that succeeded a (paused)
        v1 in place, the v1 registry's last seq for it (its batches 1..n are anchored there); else 0."""
        if self.version != 2:
            return 0
        if self._predecessor is None:
            self._predecessor = reg2.predecessor(self.w3, self.contract) or ""
        return reg.last_seq(self.w3, self._predecessor, hospital_key) if self._predecessor else 0

    def last_seq(self, hospital_key: bytes) -> int:
        return reg.last_seq(self.w3, self.contract, hospital_key)

    def batch(self, hospital_key: bytes, seq: int) -> reg.BatchRecord | None:
        return reg.batch_of(self.w3, self.contract, hospital_key, seq)


@dataclass(frozen=True, slots=True)
class Published:
    """What the node publishes for one batch. ``leaves`` is None for the head-only answer."""

    head: BatchHead
    signature: BatchSignature | None
    leaves: list[bytes] | None
    #: The status-map root the batch committed (None: sealed before the map, or a node that does not say).
    map_root: bytes | None = None


@dataclass(frozen=True, slots=True)
class PublishedMap:
    """What the node publishes of one batch's status map: the root it committed (None: sealed before the map)
    and, per leaf in tree order, (key, version, map status) — key None for a row it has not keyed."""

    root: bytes | None
    changes: list[tuple[bytes | None, int, Status]]


class NodeError(Exception):
    """The node's answer could not be read (not JSON, wrong shape, a 5xx): reported as ``node-unreadable``."""


class Node:
    """The node's public, hash-only routes."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, client: httpx.Client | None = None,
                 token: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.http = client or httpx.Client(timeout=timeout)
        #: An auditor token: only for the batch map changes (``map``), which are not public.
        self.token = token

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
        try:
            r = self.http.get(self.base + path, headers=headers)
        except httpx.HTTPError as exc:
            raise NodeError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise NodeError(f"GET {path}: HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError as exc:
            raise NodeError(f"GET {path}: not JSON") from exc
        if not isinstance(body, dict):
            raise NodeError(f"GET {path}: not an object")
        return body

    def leaves(self, hospital_id: str, seq: int) -> Published | None:
        """Batch ``seq``'s signed head and leaf hashes, or None when the node does not publish it."""
        body = self._get(f"/v1/hospitals/{quote(hospital_id, safe='')}/batches/{seq}/leaves")
        return None if body is None else _published(body, with_leaves=True)

    def head(self, hospital_id: str) -> Published | None:
        """The latest head the node serves, or None when it has sealed nothing."""
        body = self._get(f"/v1/hospitals/{quote(hospital_id, safe='')}/batches/head")
        return None if body is None else _published(body, with_leaves=False)

    def map(self, hospital_id: str, seq: int) -> PublishedMap | None:
        """Batch ``seq``'s committed map root and each leaf's map change (needs ``token``), or None when the
        node does not publish it."""
        body = self._get(f"/v1/hospitals/{quote(hospital_id, safe='')}/batches/{seq}/map",
                         {"Authorization": f"Bearer {self.token}"})
        if body is None:
            return None
        try:
            root = body.get("map_root")
            entries = body.get("entries")
            if not isinstance(entries, list):
                raise EncodingError("entries is not a list")
            changes: list[tuple[bytes | None, int, Status]] = []
            for e in entries:
                if not isinstance(e, dict) or e.get("status") not in STATUS_CODES:
                    raise EncodingError("a map entry is not {key, version, status}")
                key = None if e.get("key") is None else parse_hex(e["key"], size=32, what="status key")
                version = e.get("version")
                if not isinstance(version, int) or isinstance(version, bool):
                    raise EncodingError("a map entry's version is not an integer")
                changes.append((key, version, e["status"]))
            return PublishedMap(None if root is None else parse_hex(root, size=32, what="map root"), changes)
        except EncodingError as exc:
            raise NodeError(f"the node's map data does not parse: {exc}") from exc

    def hospitals(self, token: str) -> list[str]:
        """Hospital ids from ``GET /v1/hospitals`` (any token): how the monitor maps the chain's hospital keys
        (SHA-256 of the id) back to ids when none are given on the command line."""
        r = self.http.get(self.base + "/v1/hospitals", headers={"Authorization": f"Bearer {token}"})
        if r.status_code != 200:
            raise NodeError(f"GET /v1/hospitals: HTTP {r.status_code}")
        return [str(h["id"]) for h in r.json()]


def _published(body: dict[str, Any], *, with_leaves: bool) -> Published:
    try:
        head = BatchHead.from_obj(body.get("batch"))
        sig = body.get("signature")
        signature = None if sig is None else BatchSignature.from_obj(sig)
        leaves = None
        if with_leaves:
            raw = body.get("leaf_hashes")
            if not isinstance(raw, list):
                raise EncodingError("leaf_hashes is not a list")
            leaves = [parse_hex(h, size=32, what="leaf hash") for h in raw]
        raw_root = body.get("map_root")
        map_root = None if raw_root is None else parse_hex(raw_root, size=32, what="map root")
    except EncodingError as exc:
        raise NodeError(f"the node's batch data does not parse: {exc}") from exc
    return Published(head, signature, leaves, map_root)
