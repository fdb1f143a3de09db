"""The monitor as a witness: per hospital, it signs the checkpoint it reached (``mrl-witness/1``,
``mrledger.ledger.witness``) with its own Ed25519 key and writes it to ``<witness-out>/<hospital_id>.json``.

A checkpoint is signed only up to the highest batch below which every batch the monitor saw checked out
(``State.checkpoint``): a witness never vouches past a problem or a batch still waiting for its data. The
file is replaced atomically, so whoever serves the directory (any static web server) never hands out half a
document. Verifiers check k-of-n of these with ``ledger.witness.verify_witness_checkpoints``.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mrledger.ledger.records import format_time
from mrledger.ledger.witness import WITNESS_FORMAT, sign_checkpoint
from mrledger.monitor.state import AnchorRow, State


def load_witness_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key (PKCS#8 PEM, unencrypted) from a file only its owner may read — the same rule
    as the node's key files: a witness key others can read is no witness."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 {path}")
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


class Witness:
    def __init__(self, key: Ed25519PrivateKey, out: Path, state: State, chain_id: int, contract: str,
                 clock: Any = None) -> None:
        self.key, self.out, self.state = key, out, state
        self.chain_id, self.contract = chain_id, contract.lower()
        self.clock = clock or (lambda: datetime.now(UTC))
        out.mkdir(parents=True, exist_ok=True)

    def checkpoint(self, hospital_id: str, row: AnchorRow) -> dict[str, Any] | None:
        """Sign and write the hospital's checkpoint when it moved; returns the document written, or None."""
        path = self.out / f"{hospital_id}.json"
        commitment = row.chain.hex()
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))["checkpoint"]
            if (old["seq"], old["commitment"]) == (row.seq, commitment):
                return None
        first = self.state.first_anchor(row.hkey)
        assert first is not None  # row is one of the hospital's anchors
        document = sign_checkpoint({
            "format": WITNESS_FORMAT, "chain_id": self.chain_id, "contract": self.contract,
            "hospital_id": hospital_id, "from_seq": first.seq, "seq": row.seq, "root": row.root.hex(),
            "size": row.size, "commitment": commitment, "block": row.block, "time": format_time(self.clock())},
            self.key)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return document
