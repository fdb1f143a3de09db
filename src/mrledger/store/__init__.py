"""Persistence for the ledger: SQLAlchemy 2 models, Alembic migrations and a small repository API.

Imports only point down: ``store`` uses ``ledger``; nothing here knows about chains or HTTP.
"""

from mrledger.store.db import make_engine, migrate
from mrledger.store.errors import (
    ConflictError,
    DecryptionError,
    EncryptionError,
    KeysUnavailableError,
    LineageError,
    MasterKeyError,
    NotFoundError,
    ReadOnlyError,
    StoreError,
    SubmissionError,
    UnknownHospitalError,
)
from mrledger.store.repository import MAX_SUBMISSION, Accepted, Store, VersionInfo, Within

__all__ = [
    "MAX_SUBMISSION",
    "Accepted",
    "ConflictError",
    "DecryptionError",
    "EncryptionError",
    "KeysUnavailableError",
    "LineageError",
    "MasterKeyError",
    "NotFoundError",
    "ReadOnlyError",
    "Store",
    "StoreError",
    "SubmissionError",
    "UnknownHospitalError",
    "VersionInfo",
    "Within",
    "make_engine",
    "migrate",
]
