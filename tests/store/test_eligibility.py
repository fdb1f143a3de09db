"""Institution eligibility on SQLite and PostgreSQL: grants, expiry, revocation, replacement, history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mrledger.store import NotFoundError, Store, SubmissionError, UnknownHospitalError
from mrledger.store.eligibility import Eligibility
from tests.conftest import TEST_KEY
from tests.store.test_repository import T0, clock, store  # noqa: F401  (fixtures)

BIO, CT = "clinical-biochemistry", "ct"
US = timedelta(microseconds=1)


@pytest.fixture
def elig(store: Store) -> Eligibility:  # noqa: F811
    return Eligibility(store)


def test_grant_makes_eligible_from_then_on(elig: Eligibility) -> None:
    grant = elig.grant("gz-001", BIO, "EQA-2024-001", T0)
    assert (grant.hospital_id, grant.category, grant.reference, grant.granted_at) == ("gz-001", BIO, "EQA-2024-001", T0)
    assert grant.valid_until is None and grant.revoked_at is None and grant.active(T0)
    assert elig.is_eligible("gz-001", BIO, T0) and elig.is_eligible("gz-001", BIO, T0 + timedelta(days=3650))
    assert not elig.is_eligible("gz-001", BIO, T0 - US)
    assert not elig.is_eligible("gz-001", CT, T0) and not elig.is_eligible("qd-002", BIO, T0)
    elig.grant("gz-001", CT, "EQA-CT-7", T0)
    assert elig.categories("gz-001", T0) == {BIO, CT} and elig.categories("qd-002", T0) == frozenset()


def test_valid_until_is_inclusive(elig: Eligibility) -> None:
    until = T0 + timedelta(days=365)
    elig.grant("gz-001", BIO, "EQA", T0, valid_until=until)
    assert elig.is_eligible("gz-001", BIO, until) and not elig.is_eligible("gz-001", BIO, until + US)
    [grant] = elig.grants("gz-001")  # an expired grant is still listed: its valid_until says why it lapsed
    assert grant.valid_until == until and not grant.active(until + US)


def test_revoke_ends_eligibility_and_keeps_history(elig: Eligibility) -> None:
    elig.grant("gz-001", BIO, "EQA", T0)
    at = T0 + timedelta(days=10)
    revoked = elig.revoke("gz-001", BIO, at)
    assert revoked.revoked_at == at and revoked.reference == "EQA"
    assert elig.is_eligible("gz-001", BIO, at - US) and not elig.is_eligible("gz-001", BIO, at)
    assert elig.grants("gz-001") == [] and [g.revoked_at for g in elig.grants("gz-001", history=True)] == [at]
    with pytest.raises(NotFoundError, match="holds no eligibility"):
        elig.revoke("gz-001", BIO, at)
    with pytest.raises(NotFoundError):
        elig.revoke("gz-001", CT, at)


def test_a_new_grant_replaces_the_open_one(elig: Eligibility) -> None:
    elig.grant("gz-001", BIO, "EQA-2023", T0, valid_until=T0 + timedelta(days=30))
    renewed_at = T0 + timedelta(days=20)
    elig.grant("gz-001", BIO, "EQA-2024", renewed_at)
    [open_grant] = elig.grants("gz-001")
    assert open_grant.reference == "EQA-2024" and open_grant.valid_until is None
    history = elig.grants("gz-001", history=True)
    assert [(g.reference, g.revoked_at) for g in history] == [("EQA-2023", renewed_at), ("EQA-2024", None)]
    assert elig.is_eligible("gz-001", BIO, renewed_at) and elig.is_eligible("gz-001", BIO, T0 + timedelta(days=99))
    elig.grant("gz-001", BIO, "again", renewed_at + timedelta(seconds=1))  # a re-grant (same second ok)
    assert len(elig.grants("gz-001")) == 1


def test_refusals(elig: Eligibility) -> None:
    with pytest.raises(UnknownHospitalError):
        elig.grant("zz-9", BIO, "EQA", T0)
    with pytest.raises(UnknownHospitalError):
        elig.revoke("zz-9", BIO, T0)
    with pytest.raises(UnknownHospitalError):
        elig.grants("zz-9")
    for category in ("", "CT", "1ct", "ct_scan", "x" * 65):
        with pytest.raises(SubmissionError, match="category"):
            elig.grant("gz-001", category, "EQA", T0)
    for reference in ("", "   ", "r" * 257):
        with pytest.raises(SubmissionError, match="reference"):
            elig.grant("gz-001", BIO, reference, T0)
    with pytest.raises(SubmissionError, match="future"):
        elig.grant("gz-001", BIO, "EQA", T0, valid_until=T0)
    assert elig.grants("gz-001", history=True) == []  # nothing was written


def test_the_verifier_reads_grants_once_per_ttl_and_sees_this_process_s_writes_at_once(store: Store) -> None:  # noqa: F811
    """The verifier asks on every verification (issue 20): the grants are read once per ``ttl``; a grant or a
    revocation through any ``Eligibility`` over the same store is seen by the next question, not a ttl later."""
    verifier, admin = Eligibility(store, ttl=3600), Eligibility(store)
    admin.grant("gz-001", BIO, "EQA", T0)
    fast_reads: list[object] = []
    original = store.fetch

    def counting(stmt: Any, params: Any) -> Any:
        fast_reads.append(params)
        return original(stmt, params)

    store.fetch = counting  # type: ignore[method-assign]
    for _ in range(10):
        assert verifier.categories("gz-001", T0) == {BIO}
    assert len(fast_reads) == 1
    admin.grant("gz-001", CT, "EQA-CT", T0 + US)
    assert verifier.categories("gz-001", T0 + US) == {BIO, CT}  # seen at once
    admin.revoke("gz-001", BIO, T0 + 2 * US)
    assert verifier.categories("gz-001", T0 + 2 * US) == {CT}
    assert verifier.categories("gz-001", T0) == {BIO}  # the cached rows answer for any time: history included
    assert len(fast_reads) == 3


def test_another_process_s_grant_is_seen_within_the_ttl(store: Store) -> None:  # noqa: F811
    """Another process (here: another store over the same database) is not heard: its grant reaches this
    process's verifier when the cached rows are ``ttl`` old."""
    other = Eligibility(Store(store.engine, master_key=TEST_KEY))
    stale, fresh = Eligibility(store, ttl=3600), Eligibility(store, ttl=0.0)
    assert stale.categories("gz-001", T0) == frozenset()
    other.grant("gz-001", BIO, "EQA", T0)
    assert stale.categories("gz-001", T0) == frozenset()  # the documented staleness, bounded by ttl
    assert fresh.categories("gz-001", T0) == {BIO}  # past the ttl: read again
    assert stale.categories("gz-001", T0) == {BIO}  # the shared cache holds the fresh read now
