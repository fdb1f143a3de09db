"""``mrledger verify --witnesses K``: require K of the region's witnesses to vouch for the receipt's batch.

Why in the verifier the doctor runs: a valid receipt proves its batch is anchored and signed, not that the node
shows everyone the same history. Monitors that check every batch from outside sign checkpoints (docs/monitor.md,
``mrl-witness/1``); a verifier configured with the witnesses' public keys accepts a receipt only when K of them
cover its batch, as Certificate Transparency clients require witness cosignatures (``ledger.witness``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from mrledger.ledger import Verdict
from mrledger.ledger.canonical import parse_json
from mrledger.ledger.witness import WitnessError, verify_witness_checkpoints

#: Exit code of a receipt that is valid but not vouched for by enough witnesses (or that witnesses disagree on).
EXIT_NOT_WITNESSED = 4


class WitnessSetupError(Exception):
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


def check(verdict: Verdict, witnesses: dict[str, bytes], documents: list[Any], k: int) -> tuple[bool, str]:
    """(vouched for, what to print) for a valid receipt's batch. A receipt without an anchor section cannot be
    placed on a deployment, so it is not vouched for."""
    r = verdict.receipt
    if r is None or r.anchor is None:
        return False, "witnesses: the receipt names no anchor to check against"
    try:
        names = verify_witness_checkpoints(documents, hospital_id=r.batch.hospital_id, seq=r.batch.seq,
                                           root=r.batch.root, chain_id=r.anchor.chain_id,
                                           contract=r.anchor.contract, witnesses=witnesses, k=k)
    except WitnessError as exc:
        return False, f"witnesses: {exc}"
    return True, f"witnesses: {', '.join(names)} vouch for batch {r.batch.seq} ({len(names)} of {k} required)"
