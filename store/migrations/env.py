"""Alembic environment: uses the engine handed over by ``store.db.migrate`` or ``-x url=...``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from store.models import Base

config = context.config
engine: Engine | None = config.attributes.get("engine")
if engine is None:
    from store.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: pass the database with -x url=sqlite:///path or postgresql+psycopg://...")
    engine = make_engine(url)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
