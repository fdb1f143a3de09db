"""k-of-n witness checkpoints (``mrl-witness/1``, ledger/witness.py): what counts as a witness vouching for a
receipt's batch, and what is refused — forged, foreign, out of span, and two witnesses that saw different
histories (a split view)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mrledger.ledger.witness import (
    WITNESS_FORMAT,
    WitnessError,
    chain_hash,
    sign_checkpoint,
    verify_witness_checkpoints,
)

CONTRACT = "0x" + "ab" * 20
ROOTS = {s: bytes([s]) * 32 for s in range(1, 6)}
KEYS = {name: Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i, name in enumerate(("a", "b", "c"), 1)}
PUBLIC = {name: k.public_key().public_bytes_raw() for name, k in KEYS.items()}


def checkpoint(seq: int, *, from_seq: int = 1, roots: dict[int, bytes] = ROOTS, **over: Any) -> dict[str, Any]:
    commitment = bytes(32)
    for s in range(from_seq, seq + 1):
        commitment = chain_hash(commitment, s, roots[s], 2)
    c = {"format": WITNESS_FORMAT, "chain_id": 31337, "contract": CONTRACT, "hospital_id": "gz-001",
         "from_seq": from_seq, "seq": seq, "root": roots[seq].hex(), "size": 2, "commitment": commitment.hex(),
         "block": 100 + seq, "time": "2026-12-02T19:00:00Z"}
    c.update(over)
    return c


def verify(documents: list[Any], seq: int = 2, k: int = 2) -> list[str]:
    return verify_witness_checkpoints(documents, hospital_id="gz-001", seq=seq, root=ROOTS[seq], chain_id=31337,
                                      contract=CONTRACT.upper().replace("0X", "0x"), witnesses=PUBLIC, k=k)


def test_k_of_n_witnesses_at_or_after_the_batch_vouch() -> None:
    docs = [sign_checkpoint(checkpoint(4), KEYS["a"]), sign_checkpoint(checkpoint(2), KEYS["b"])]
    assert verify(docs) == ["a", "b"]
    assert verify(docs + docs) == ["a", "b"]  # a witness counts once
    # A witness that started after the batch did not check it.
    late = sign_checkpoint(checkpoint(4, from_seq=3), KEYS["c"])
    with pytest.raises(WitnessError, match="witness-quorum: 1 of the 2"):
        verify([docs[0], late])
    with pytest.raises(WitnessError, match="witness-quorum"):
        verify(docs, seq=5, k=1)  # nobody got to batch 5 yet
    with pytest.raises(ValueError, match="k must be"):
        verify(docs, k=4)


@pytest.mark.parametrize("mutate", [
    lambda d: d["checkpoint"].update(seq=5),  # signed bytes changed
    lambda d: d.update(key=d["key"][:-4] + "AAA="),  # another key
    lambda d: d.update(signature="!!"),  # not base64
    lambda d: d.update(extra=1),  # unknown field
    lambda d: d["checkpoint"].pop("time"),
], ids=["edited", "other-key", "bad-base64", "extra-field", "missing-field"])
def test_documents_that_do_not_verify_are_ignored(mutate: Any) -> None:
    good = sign_checkpoint(checkpoint(3), KEYS["a"])
    bad = copy.deepcopy(sign_checkpoint(checkpoint(3), KEYS["b"]))
    mutate(bad)
    with pytest.raises(WitnessError, match="witness-quorum: 1 of the 2"):
        verify([good, bad])


def test_foreign_checkpoints_are_ignored() -> None:
    stranger = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    docs = [sign_checkpoint(checkpoint(3), KEYS["a"]), sign_checkpoint(checkpoint(3), stranger),
            sign_checkpoint(checkpoint(3, chain_id=1), KEYS["b"]),
            sign_checkpoint(checkpoint(3, hospital_id="qd-002"), KEYS["c"])]
    assert verify(docs, k=1) == ["a"]


def test_different_histories_at_one_seq_are_a_conflict() -> None:
    forked = {**ROOTS, 2: b"\xee" * 32}
    a = sign_checkpoint(checkpoint(3), KEYS["a"])
    b = sign_checkpoint(checkpoint(3, roots=forked), KEYS["b"])  # same root at 3, another batch 2 below it
    with pytest.raises(WitnessError, match="witness-conflict"):
        verify([a, b], seq=3)
    c = sign_checkpoint(checkpoint(2, roots=forked), KEYS["c"])  # stops at the receipt's batch with another root
    with pytest.raises(WitnessError, match="witness-conflict"):
        verify([c], seq=2, k=1)
    # Witnesses that started at different batches commit to different chains: no conflict.
    assert verify([a, sign_checkpoint(checkpoint(3, from_seq=2), KEYS["b"])], seq=2) == ["a", "b"]


def test_a_witness_never_signs_a_malformed_checkpoint() -> None:
    with pytest.raises(WitnessError, match="witness-malformed"):
        sign_checkpoint(checkpoint(3, from_seq=4), KEYS["a"])
    with pytest.raises(WitnessError, match="witness-malformed"):
        sign_checkpoint({**checkpoint(3), "size": True}, KEYS["a"])
