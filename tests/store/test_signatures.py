"""Sealing with a hospital signature, on SQLite and PostgreSQL: the signature is written in the sealing
transaction (a failing signer seals nothing), stored as the receipt's exact section, and comes back in
every receipt of the batch."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select

from mrledger.ledger import BatchHead, BatchSignature, SigningError, canonicalize, sign_batch, verify_receipt
from mrledger.store import Store
from mrledger.store.models import Batch
from tests.conftest import TEST_KEY
from tests.pki import Pki
from tests.store.test_repository import Clock, rec

CONTRACT = "0x" + "ab" * 20
PKI = Pki("store")
LEAF = PKI.hospital("gz-001")  # valid 2024-01-01 .. 2026-01-01; the test clock seals in May 2024


def sign(head: BatchHead) -> BatchSignature:
    return sign_batch(head, 31337, CONTRACT, LEAF.key, LEAF.chain)


@pytest.fixture
def store(engine: Engine) -> Store:
    s = Store(engine, master_key=TEST_KEY, clock=Clock())
    s.register_hospital("gz-001", "Guangzhou First People's Hospital")
    return s


def test_seal_signs_and_every_receipt_carries_the_signature(store: Store, engine: Engine) -> None:
    store.submit("gz-001", [rec(i) for i in range(3)])
    head = store.seal("gz-001", 100, sign=sign)
    assert head is not None
    with engine.connect() as conn:
        stored = conn.scalar(select(Batch.signature).where(Batch.hospital_id == "gz-001", Batch.seq == 1))
    assert stored is not None
    signature = BatchSignature.from_obj(json.loads(stored))
    assert canonicalize(signature.to_obj()).decode() == stored  # the receipt's section, canonical JSON
    for i in range(3):
        receipt = store.receipt("gz-001", f"R{i}")
        assert receipt is not None and receipt.signature == signature
        assert receipt.to_obj()["signature"] == signature.to_obj()
        verdict = verify_receipt(receipt.to_json(), trust=PKI.trust(), require_signature=True)
        assert verdict.status == "unanchored", verdict.checks
        assert verdict.signature.status == "valid" and verdict.signature.signer is not None
        assert verdict.signature.signer.hospital_id == "gz-001"


def test_a_failing_signer_seals_nothing(store: Store) -> None:
    store.submit("gz-001", [rec(i) for i in range(3)])

    def refuse(head: BatchHead) -> BatchSignature:
        raise SigningError("the HSM is unreachable")

    with pytest.raises(SigningError, match="HSM"):
        store.seal("gz-001", 100, sign=refuse)
    assert store.pending_count("gz-001") == 3 and store.batches("gz-001") == []
    head = store.seal("gz-001", 100, sign=sign)  # the next attempt takes seq 1: no gap was left
    assert head is not None and head.seq == 1 and head.size == 3 and store.pending_count("gz-001") == 0


def test_unsigned_seal_keeps_the_receipt_as_it_always_was(store: Store) -> None:
    store.submit("gz-001", [rec(1)])
    store.seal("gz-001", 100)
    receipt = store.receipt("gz-001", "R1")
    assert receipt is not None and receipt.signature is None and "signature" not in receipt.to_obj()
    assert verify_receipt(receipt).signature.status == "absent"
