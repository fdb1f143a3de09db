"""Witness checkpoints (``mrl-witness/1``): a monitor's signed statement "I checked this hospital's batches up
to ``seq``, anchored in ``block``, and they were consistent", and the k-of-n rule that verifies them.

Why: a receipt proves its batch is anchored and signed; it cannot prove the node shows everyone the same
history. Independent monitors that each check every batch against the chain and the node's public data, and
sign where they got to, let a verifier require that ``k`` of the region's ``n`` witnesses vouch for the
receipt's batch — as Certificate Transparency clients require witness cosignatures on a log's checkpoint.

Document (JSON)::

    {"checkpoint": {"format": "mrl-witness/1", "chain_id": 31337, "contract": "0x…", "hospital_id": "gz-001",
                    "from_seq": 1, "seq": 7, "root": "<hex of batch 7's root>", "size": 3,
                    "commitment": "<hex running hash of (seq, root, size) from from_seq to seq>",
                    "block": 812, "time": "2026-12-02T19:00:00Z"},
     "alg": "Ed25519", "key": "<base64 raw public key>", "signature": "<base64 Ed25519 over JCS(checkpoint)>"}

``commitment`` chains every anchored (seq, root, size) the witness saw (``chain_hash``); two witnesses whose
checkpoints at one seq differ in it saw different histories — a split view, refused here as a conflict.
Pure: no I/O, no clock (``time`` is the witness's claim, carried, not judged).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mrledger.ledger.canonical import canonicalize
from mrledger.ledger.errors import VerificationError

WITNESS_FORMAT = "mrl-witness/1"
_FIELDS = {"format", "chain_id", "contract", "hospital_id", "from_seq", "seq", "root", "size", "commitment", "block",
           "time"}


class WitnessError(VerificationError):
    """Fewer than k trusted witnesses vouch for the batch (``reason`` ``witness-quorum``), or two of them
    signed different histories at one seq (``witness-conflict``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def chain_hash(previous: bytes, seq: int, root: bytes, size: int) -> bytes:
    """``SHA-256("mrl-witness-chain/1" ‖ previous ‖ seq ‖ root ‖ size)``, seq and size 8-byte big-endian; the
    chain of a hospital starts from 32 zero bytes before the first batch the witness checked."""
    return hashlib.sha256(b"mrl-witness-chain/1" + previous + seq.to_bytes(8, "big") + root
                          + size.to_bytes(8, "big")).digest()


def sign_checkpoint(checkpoint: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed document of a checkpoint (checked for shape first, so a witness never signs a bad one)."""
    _check_shape(checkpoint)
    public = key.public_key().public_bytes_raw()
    return {"checkpoint": dict(checkpoint), "alg": "Ed25519", "key": base64.b64encode(public).decode("ascii"),
            "signature": base64.b64encode(key.sign(canonicalize(dict(checkpoint)))).decode("ascii")}


def _check_shape(c: Any) -> None:
    if not isinstance(c, Mapping) or set(c) != _FIELDS or c.get("format") != WITNESS_FORMAT:
        raise WitnessError("witness-malformed", f"a checkpoint has exactly the fields {sorted(_FIELDS)}")
    ints = ("chain_id", "from_seq", "seq", "size", "block")
    if any(not isinstance(c[f], int) or isinstance(c[f], bool) or c[f] < 0 for f in ints):
        raise WitnessError("witness-malformed", f"{', '.join(ints)} are non-negative integers")
    if not 1 <= c["from_seq"] <= c["seq"]:
        raise WitnessError("witness-malformed", "from_seq must be in 1..seq")
    for f in ("contract", "hospital_id", "root", "commitment", "time"):
        if not isinstance(c[f], str):
            raise WitnessError("witness-malformed", f"{f} is a string")


def _open(document: Any) -> tuple[bytes, Mapping[str, Any]]:
    """(raw public key, checkpoint) of a document whose signature verifies under the key it names."""
    if not isinstance(document, Mapping) or set(document) != {"checkpoint", "alg", "key", "signature"} \
            or document["alg"] != "Ed25519":
        raise WitnessError("witness-malformed", "a witness document is {checkpoint, alg: Ed25519, key, signature}")
    checkpoint = document["checkpoint"]
    _check_shape(checkpoint)
    try:
        key = base64.b64decode(document["key"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
        Ed25519PublicKey.from_public_bytes(key).verify(signature, canonicalize(dict(checkpoint)))
    except (binascii.Error, TypeError, ValueError, InvalidSignature) as exc:
        raise WitnessError("witness-invalid", "the signature does not verify under the key it names") from exc
    return key, checkpoint


def verify_witness_checkpoints(documents: Sequence[Any], *, hospital_id: str, seq: int, root: bytes, chain_id: int,
                               contract: str, witnesses: Mapping[str, bytes], k: int) -> list[str]:
    """Require ``k`` of the trusted ``witnesses`` (name → raw Ed25519 public key) to vouch for batch ``seq`` of
    ``hospital_id`` on this deployment: each with a valid checkpoint whose span [from_seq, seq] covers the
    batch, naming ``root`` when it stops exactly at it. Returns the names that vouch (sorted); raises
    WitnessError ``witness-quorum`` when fewer than ``k`` do, ``witness-conflict`` when two trusted witnesses
    signed different commitments (or roots) at one seq. Documents from unknown keys, for another hospital or
    deployment, or that do not verify, are ignored: anyone can hand a verifier documents."""
    if not 1 <= k <= len(witnesses):
        raise ValueError(f"k must be in 1..{len(witnesses)} (the number of configured witnesses)")
    names = {bytes(key): name for name, key in witnesses.items()}
    vouching: set[str] = set()
    roots: dict[int, tuple[str, str]] = {}  # seq → (root, witness) of the first checkpoint there
    chains: dict[tuple[int, int], tuple[str, str]] = {}  # (from_seq, seq) → (commitment, witness)
    for document in documents:
        try:
            key, c = _open(document)
        except WitnessError:
            continue
        name = names.get(key)
        if name is None or c["hospital_id"] != hospital_id or c["chain_id"] != chain_id \
                or str(c["contract"]).lower() != contract.lower():
            continue
        # Witnesses that started at different batches have different commitments; the same span must agree.
        for first, value in ((roots.setdefault(c["seq"], (c["root"], name)), c["root"]),
                             (chains.setdefault((c["from_seq"], c["seq"]), (c["commitment"], name)), c["commitment"])):
            if first[0] != value:
                raise WitnessError("witness-conflict", f"witnesses {first[1]} and {name} signed different histories "
                                                       f"of {hospital_id} at seq {c['seq']}: a split view")
        if c["seq"] == seq and c["root"] != root.hex():
            raise WitnessError("witness-conflict", f"witness {name} signed root {c['root']} for {hospital_id} "
                                                   f"batch {seq}, the receipt's batch has {root.hex()}")
        if c["from_seq"] <= seq <= c["seq"]:
            vouching.add(name)
    if len(vouching) < k:
        raise WitnessError("witness-quorum", f"{len(vouching)} of the {k} required witnesses vouch for {hospital_id} "
                                             f"batch {seq} ({', '.join(sorted(vouching)) or 'none'})")
    return sorted(vouching)
