"""k-of-n witness checkpoints for a verifier (issue 19): the trusted witnesses' keys, where their checkpoints
are published, and whether enough of them vouch for a receipt's batch.

Why here and not only in the CLI: the doctor's CLI (``mrledger verify --witnesses K``) and the node's
``POST /v1/verify`` (``MRL_WITNESS_*``) apply one rule (``ledger.witness.verify_witness_checkpoints``) to
documents found the same way. A witness's checkpoint names the latest batch it checked, so a node serving
verifications fetches each hospital's at most every ``ttl`` seconds, not per request (a checkpoint older than the
receipt's batch simply does not vouch yet: the answer is "not vouched for", never a wrong "vouched").
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from mrledger.ledger.batch import BatchHead
from mrledger.ledger.canonical import parse_json
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.witness import WitnessError, verify_witness_checkpoints


class WitnessSetupError(MrLedgerError):
    """A witness key or checkpoint file that cannot be used: a usage error, not a verdict."""


def load_witness_keys(paths: list[Path]) -> dict[str, bytes]:
    """Witness name (the file's stem) → raw Ed25519 public key, from PEM files."""
    keys: dict[str, bytes] = {}
    for path in paths:
        try:
            key = load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise WitnessSetupError(f"cannot read witness key {str(path)!r}: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise WitnessSetupError(f"witness key {str(path)!r} is not an Ed25519 public key")
        keys[path.stem] = key.public_bytes_raw()
    return keys


def is_url(item: str) -> bool:
    return item.startswith(("https://", "http://"))


def load_checkpoints(items: list[str]) -> list[Any]:
    """The checkpoint documents of the files named, a directory standing for its ``*.json`` (URLs are fetched
    later, by ``fetch_checkpoints``, once the receipt names its hospital)."""
    documents = []
    for path in (Path(i) for i in items if not is_url(i)):
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            try:
                documents.append(json.loads(file.read_bytes()))
            except (OSError, ValueError) as exc:
                raise WitnessSetupError(f"cannot read checkpoint {str(file)!r}: {exc}") from None
    return documents


#: Largest checkpoint document fetched (one is a few hundred bytes).
MAX_CHECKPOINT_BYTES = 64 * 1024


def fetch_checkpoints(items: list[str], hospital_id: str, *, timeout: float = 10.0) -> tuple[list[Any], list[str]]:
    """The checkpoints at the URLs among ``items`` (a URL ending in ``/`` is a witness's directory, published as
    ``mrledger monitor --witness-out`` writes it: ``<hospital>.json``), and a line for each that gave none. A
    witness that is down or has not seen the hospital counts for nothing, it is not a usage error: the k-of-n
    rule decides whether the others suffice."""
    documents: list[Any] = []
    notes: list[str] = []
    for url in (i for i in items if is_url(i)):
        target = url + quote(hospital_id, safe="") + ".json" if url.endswith("/") else url
        try:
            with httpx.stream("GET", target, timeout=timeout, follow_redirects=False) as r:
                if r.status_code != 200:
                    notes.append(f"witness checkpoint {target}: HTTP {r.status_code}")
                    continue
                body = b""
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > MAX_CHECKPOINT_BYTES:
                        raise ValueError(f"larger than {MAX_CHECKPOINT_BYTES} bytes")
            documents.append(parse_json(body))
        except (httpx.HTTPError, ValueError) as exc:
            notes.append(f"witness checkpoint {target}: {type(exc).__name__}: {exc}")
    return documents, notes


@dataclass
class WitnessPolicy:
    """``k`` of the witnesses ``keys`` (name → raw Ed25519 key) must vouch for a verified receipt's batch; their
    checkpoints are the files and directories among ``sources`` and its URLs, read again per hospital once what
    was read is ``ttl`` seconds old (a witness rewrites its checkpoint after every pass). Thread-safe."""

    keys: dict[str, bytes]
    k: int
    sources: list[str]
    ttl: float = 30.0
    timeout: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _fetched: dict[str, tuple[float, list[Any], list[str]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= len(self.keys):
            raise WitnessSetupError(f"{self.k} witnesses required, {len(self.keys)} witness key(s) configured")
        if not self.sources:
            raise WitnessSetupError("witnesses are required but no checkpoint file or URL is configured")
        load_checkpoints(self.sources)  # an unreadable file stops the node at start-up, with its name

    def documents(self, hospital_id: str, *, wait: bool = True) -> tuple[list[Any], list[str]] | None:
        """The hospital's checkpoint documents and notes on those that could not be had; None when they are
        older than ``ttl`` and ``wait`` is False (the caller must not block: the event loop)."""
        with self._lock:
            hit = self._fetched.get(hospital_id)
        if hit is None or self.clock() - hit[0] >= self.ttl:
            if not wait:
                return None
            try:
                files = load_checkpoints(self.sources)
            except WitnessSetupError as exc:  # a witness mid-rewrite, a file removed: counts for nothing
                files, file_notes = [], [str(exc)]
            else:
                file_notes = []
            fetched, notes = fetch_checkpoints(self.sources, hospital_id, timeout=self.timeout)
            hit = (self.clock(), [*files, *fetched], [*file_notes, *notes])
            with self._lock:
                if len(self._fetched) >= 4096:
                    self._fetched.clear()
                self._fetched[hospital_id] = hit
        return hit[1], hit[2]

    def vouch(self, batch: BatchHead, chain_id: int, contract: str, *, wait: bool = True) -> tuple[bool, str] | None:
        """(enough witnesses vouch for ``batch`` on this deployment, what to say); None when the checkpoints must
        be read again and ``wait`` is False."""
        found = self.documents(batch.hospital_id, wait=wait)
        if found is None:
            return None
        documents, notes = found
        try:
            names = verify_witness_checkpoints(documents, hospital_id=batch.hospital_id, seq=batch.seq,
                                               root=batch.root, chain_id=chain_id, contract=contract,
                                               witnesses=self.keys, k=self.k)
        except WitnessError as exc:
            return False, "; ".join([str(exc), *notes])
        return True, f"{', '.join(names)} vouch for batch {batch.seq} ({len(names)} of {self.k} required)"


__all__ = ["MAX_CHECKPOINT_BYTES", "WitnessPolicy", "WitnessSetupError", "fetch_checkpoints", "is_url",
           "load_checkpoints", "load_witness_keys"]
