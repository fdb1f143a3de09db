"""Settings the nodes of one ledger share through its database (``shared_config``), rather than each
through its own files: a second node on the same database reads what the first one recorded.

Why the database: it is the one thing every node of a region already shares and trusts. Today it holds the
development CA's certificates (public; its keys stay in the first node's data dir), so a second node verifies
the batches the first one signs instead of creating a CA of its own and calling every receipt tampered.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError

from mrledger.store.models import SharedConfig
from mrledger.store.repository import Store

#: The dev CA's root and intermediate certificates, PEM, as JSON {"root": ..., "intermediate": ...}.
DEV_TRUST = "dev-trust"


def shared_get(store: Store, name: str) -> str | None:
    with store.read() as s:
        row = s.get(SharedConfig, name)
        return None if row is None else row.value


def shared_put_first(store: Store, name: str, value: str, now: datetime) -> str:
    """Record ``value`` unless a value is recorded already (first writer wins, under concurrency too); the
    value now recorded."""
    try:
        with store.unit_of_work() as s:
            if s.get(SharedConfig, name) is None:
                s.add(SharedConfig(name=name, value=value, updated_at=now))
    except IntegrityError:  # another node recorded it between our read and our insert
        pass
    recorded = shared_get(store, name)
    assert recorded is not None
    return recorded


__all__ = ["DEV_TRUST", "shared_get", "shared_put_first"]
