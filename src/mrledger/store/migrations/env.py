"""Alembic environment: uses the engine handed over by ``mrledger.store.db.migrate`` or ``-x url=...``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from mrledger.store.models import Base

config = context.config
engine: Engine | None = config.attributes.get("engine")
if engine is None:
    from mrledger.store.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: pass the database with -x url=sqlite:///path or postgresql+psycopg://...")
    engine = make_engine(url)

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite's procedure for changing a table (sqlite.org/lang_altertable.html): foreign keys off outside
        # the transaction, checked before commit. Batch mode copies a table and drops the old one; with
        # enforcement on, dropping a table other rows refer to (record_versions, in 0007) fails.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    try:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite,
                          compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left {len(broken)} dangling foreign keys, e.g. {broken[0]}")
        connection.commit()
    finally:
        if sqlite:  # the connection goes back to the pool: enforcement on again
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
