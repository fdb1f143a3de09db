"""Shared fixtures: a fresh database per test, on SQLite and on the machine's real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from mrledger.store import make_engine, migrate
from mrledger.store.crypto import MasterKey

#: The master key of every store the tests open (docs/encryption.md); fixed, so all of them agree. Derived:
#: sha256(b"mrledger test master key"). Stores built here get it as ``TEST_KEY`` (the store reads no
#: environment); it is also put in the environment, where the node's settings look for it — in the CLI run
#: in process and in every subprocess (``mrledger serve`` unless a test clears MRL_*).
TEST_MASTER_KEY = "8545faca3213250ac047bdb607abc4a0120151eb9dd451c73030549000f508a0"
TEST_KEY = MasterKey.from_text(TEST_MASTER_KEY)
os.environ.pop("MRL_MASTER_KEY_FILE", None)
os.environ["MRL_MASTER_KEY"] = TEST_MASTER_KEY

#: The PostgreSQL every machine (and CI) runs: trust auth, database `test`. Not skipped when absent:
#: the store must be proven on the production database, so an unreachable server fails the run.
PG_URL = os.environ.get("MRL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SHARED = Path(__file__).resolve().parents[2] / "shared"


def _pg_schema_engine() -> Iterator[Engine]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    # The search path goes into the URL (not connect_args) so a subprocess given the URL sees the same schema.
    engine = make_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: a new SQLite file or a new PostgreSQL schema for every test."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
        migrate(eng)
        yield eng
        eng.dispose()
    else:
        for eng in _pg_schema_engine():
            migrate(eng)
            yield eng


def db_url(engine: Engine) -> str:
    """The URL of a test database, with credentials, for handing to a subprocess."""
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def master_key() -> MasterKey:
    """The master key the tests' stores use (``TEST_MASTER_KEY``)."""
    return TEST_KEY
