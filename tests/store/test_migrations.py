"""Alembic migrations and the models agree, and the schema can go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from mrledger.store.db import alembic_config
from mrledger.store.models import Base


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade(engine: Engine) -> None:
    cfg = alembic_config(engine)
    command.downgrade(cfg, "base")
    assert "record_versions" not in inspect(engine).get_table_names()
    command.upgrade(cfg, "head")
    assert {"hospitals", "record_versions", "pending_leaves", "batches", "batch_leaves", "anchors"} <= set(
        inspect(engine).get_table_names())
