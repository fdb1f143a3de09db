"""mrledger.store.locks.file_lock: refuse at once, or wait for the holder (flock: per open file, so threads suffice)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from mrledger.store.locks import LockHeld, exclusive, file_lock


def test_file_lock_refuses_or_waits(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    got: list[float] = []

    def waiter() -> None:
        with file_lock(path, wait=True):
            got.append(time.monotonic())

    with file_lock(path):
        with pytest.raises(LockHeld, match="the thing"), file_lock(path, what="the thing"):
            pass
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)
        assert not got  # still waiting for us
        released = time.monotonic()
    thread.join(5)
    assert got and got[0] >= released
    with file_lock(path):  # free again
        pass


@pytest.mark.postgres
def test_advisory_lock_is_scoped_to_the_schema() -> None:
    """Advisory locks are per database: without the schema in the key, two ledgers in one database (or two
    test runs on the CI PostgreSQL) would refuse each other's worker."""
    from tests.conftest import _pg_schema_engine

    first, second = _pg_schema_engine(), _pg_schema_engine()
    a, b = next(first), next(second)
    try:
        with exclusive(a, "anchoring-worker:0xabc"):
            with pytest.raises(LockHeld), exclusive(a, "anchoring-worker:0xabc"):
                pass
            with exclusive(b, "anchoring-worker:0xabc"):  # another schema: free
                pass
    finally:
        for gen in (first, second):
            with contextlib.suppress(StopIteration):
                next(gen)
