"""``commit_canonical`` (the audit's leaf over stored bytes) is ``commit`` of the parsed record, on the fast path
and on the general one (an id the fast path hands over)."""

from __future__ import annotations

import pytest

from mrledger.ledger import ResultRecord, commit
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.leaf import commit_canonical
from tests.store.test_repository import rec


@pytest.mark.parametrize("hospital", ["gz-001", "qd-002.events"])
def test_commit_canonical_is_commit(hospital: str) -> None:
    record = rec(3, hospital)
    salt = bytes(range(16))
    stored = record.canonical_bytes()
    assert commit_canonical(hospital, record.result_id, record.version, stored, salt) == commit(record, salt)
    again = ResultRecord.from_json(stored)
    assert commit_canonical(again.hospital_id, again.result_id, again.version, stored, salt) == commit(again, salt)
    assert commit_canonical(hospital, record.result_id, record.version, stored + b" ", salt) != commit(record, salt)
    with pytest.raises(EncodingError):
        commit_canonical(hospital, record.result_id, record.version, stored, salt[:15])
