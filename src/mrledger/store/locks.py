"""One anchoring worker per signing key at a time: two would race for nonces and double-send. Also the
file locks the node takes (``file_lock``): one serve per data dir, admin-key sends across its processes.

PostgreSQL: a session-level advisory lock, held on a dedicated connection for the worker's life (it is
released by the server if the process dies). Advisory locks are per database, not per schema, so the key
also names the schema: two ledgers in one database (a region's staging beside production, or parallel
test runs) never block each other. SQLite: an exclusive ``flock`` on a file beside the
database (released by the kernel if the process dies).
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Engine, text

from mrledger.store.errors import StoreError


class LockHeld(StoreError):
    """Another process holds this lock (e.g. another worker for the same key)."""


class Lease:
    """A held ``exclusive`` lock. ``held()`` says whether it still is: a PostgreSQL session lock ends with its
    connection (a database restart, a network cut), and its holder must then stop doing what it guards."""

    def __init__(self, check: Callable[[], bool] | None = None) -> None:
        self._check = check
        self._lost = False

    def held(self) -> bool:
        if self._lost or self._check is None:
            return not self._lost
        try:
            alive = self._check()
        except Exception:  # the connection is gone, and the lock with it
            alive = False
        self._lost = not alive
        return alive


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[Lease]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            scope = conn.scalar(text("SELECT current_database() || '.' || coalesce(current_schema(), '')"))
            key = int.from_bytes(hashlib.sha256(f"{scope}:{name}".encode()).digest()[:8], "big", signed=True)
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
                raise LockHeld(f"lock {name!r} is held by another process")
            conn.commit()

            def alive() -> bool:
                ok = bool(conn.scalar(text("SELECT 1")) == 1)
                conn.commit()
                return ok

            try:
                yield Lease(alive)
            finally:
                with suppress(Exception):  # a lost connection has released it already
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield Lease()  # an in-memory database belongs to this process alone
        return
    with file_lock(Path(f"{database}.{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"), what=repr(name)):
        yield Lease()


@contextmanager
def file_lock(path: Path, *, wait: bool = False, what: str | None = None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), released by the kernel if the holder dies.
    ``wait``: block until it is free; otherwise raise LockHeld at once (naming ``what``, default the path)."""
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise LockHeld(f"lock {what or str(path)} is held by another process") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
