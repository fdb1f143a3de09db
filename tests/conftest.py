"""Shared fixtures: a fresh database per test, on SQLite and on the machine's real PostgreSQL; the Hardhat
Network node the chain tests share (their second EVM client, beside anvil: docs/anchoring.md, "EVM clients")."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from mrledger.anchoring.hardhat_node import HardhatNode
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


#: The chain tests' EVM clients, as fixture params: anvil (also what `mrledger serve` manages) and Hardhat Network.
EVM_CLIENTS = ["anvil", pytest.param("hardhat", marks=pytest.mark.hardhat)]


@pytest.fixture(scope="session")
def hardhat_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardhatNode]:
    """One Hardhat Network node per test process (per xdist worker): it takes seconds to start where anvil
    takes 0.1 s, so the tests share it and each rolls the chain back after itself (``hardhat_rollback``)."""
    with HardhatNode(log_path=tmp_path_factory.mktemp("hardhat") / "hardhat.log") as node:
        yield node


@pytest.fixture
def hardhat_rollback(hardhat_node: HardhatNode) -> Iterator[HardhatNode]:
    """The shared node for one test, which may do anything to its chain: afterwards the chain is back where it
    was (evm_revert to a snapshot taken before), with automine on, as the next test expects it."""
    snapshot = hardhat_node.snapshot()
    yield hardhat_node
    hardhat_node.rpc("evm_setAutomine", True)
    hardhat_node.revert(snapshot)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """What runs on Hardhat Network besides anvil: everything parametrised over the EVM client, except

    * tests marked ``anvil_only("why")`` (they need what only anvil has: a chain kept in a state file across
      restarts, ...): skipped on Hardhat with that reason;
    * the PostgreSQL run of a Hardhat case: the EVM client and the database are independent, and anvil on
      PostgreSQL already covers the database, so Hardhat runs on SQLite only (CI time: docs/anchoring.md).
    """
    kept, dropped = [], []
    for item in items:
        params = item.callspec.params if isinstance(item, pytest.Function) and hasattr(item, "callspec") else {}
        if "hardhat" not in (params.get("evm"), params.get("chain")):
            kept.append(item)
        elif params.get("engine") == "postgresql":
            dropped.append(item)
        else:
            kept.append(item)
            only = item.get_closest_marker("anvil_only")
            if only is not None:
                item.add_marker(pytest.mark.skip(reason=f"anvil only: {only.args[0]}"))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# The app under test, built as `mrledger serve` builds it, for every layer's tests (tests/harness.py). Imported
# last: the harness itself uses TEST_KEY from this module.
from tests.harness import api, chain_api, chain_api_v2  # noqa: E402, F401 - fixtures
