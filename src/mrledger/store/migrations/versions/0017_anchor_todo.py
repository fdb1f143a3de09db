"""anchor todo

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05

Issue 20, found by the full 1.16 M replay: the anchoring worker found the batches it must send with an anti-join of
every batch against every anchor (``Outbox.sealed``), and the health check and metrics counted what is not yet
confirmed the same way. With a node's 5-second batches a city seals ~23,000 batches an hour, so each call grew
with the ledger's age: 10.7 ms at 4,314 batches on PostgreSQL (EXPLAIN ANALYZE, a merge anti join reading both
primary keys whole), and the worker asks several times a second.

``anchor_todo`` holds the sealed batches with no ``anchors`` row, kept by triggers on ``batches`` and ``anchors``
whoever writes them (the sealer, the worker, reconciliation moving a lost anchor back to sealed, SQL by hand), as
0015's triggers keep ``kpi_open``: the worker reads the few rows there. Built here for the batches already present.

Reconciliation, every 10 s, read the anchors mined since its last round by status (every anchor on chain matches)
and filtered them by block: ``anchors.block_number`` gets an index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_SQLITE = [
    """CREATE TRIGGER anchor_todo_sealed AFTER INSERT ON batches
    BEGIN
      INSERT OR IGNORE INTO anchor_todo (hospital_id, seq) VALUES (NEW.hospital_id, NEW.seq);
    END""",
    """CREATE TRIGGER anchor_todo_batch_deleted AFTER DELETE ON batches
    BEGIN
      DELETE FROM anchor_todo WHERE hospital_id = OLD.hospital_id AND seq = OLD.seq;
    END""",
    """CREATE TRIGGER anchor_todo_anchored AFTER INSERT ON anchors
    BEGIN
      DELETE FROM anchor_todo WHERE hospital_id = NEW.hospital_id AND seq = NEW.seq;
    END""",
    """CREATE TRIGGER anchor_todo_unanchored AFTER DELETE ON anchors
    BEGIN
      INSERT OR IGNORE INTO anchor_todo (hospital_id, seq)
        SELECT hospital_id, seq FROM batches WHERE hospital_id = OLD.hospital_id AND seq = OLD.seq;
    END""",
]

_POSTGRES = [
    """CREATE FUNCTION anchor_todo_batch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO anchor_todo (hospital_id, seq) VALUES (NEW.hospital_id, NEW.seq) ON CONFLICT DO NOTHING;
      ELSE
        DELETE FROM anchor_todo WHERE hospital_id = OLD.hospital_id AND seq = OLD.seq;
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER anchor_todo_batch AFTER INSERT OR DELETE ON batches
    FOR EACH ROW EXECUTE FUNCTION anchor_todo_batch()""",
    """CREATE FUNCTION anchor_todo_anchor() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        DELETE FROM anchor_todo WHERE hospital_id = NEW.hospital_id AND seq = NEW.seq;
      ELSE
        INSERT INTO anchor_todo (hospital_id, seq) SELECT hospital_id, seq FROM batches
          WHERE hospital_id = OLD.hospital_id AND seq = OLD.seq ON CONFLICT DO NOTHING;
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER anchor_todo_anchor AFTER INSERT OR DELETE ON anchors
    FOR EACH ROW EXECUTE FUNCTION anchor_todo_anchor()""",
]


def upgrade() -> None:
    op.create_table(
        "anchor_todo",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", "seq", name=op.f("pk_anchor_todo")),
    )
    op.create_index(op.f("ix_anchors_block_number"), "anchors", ["block_number"], unique=False)
    for sql in _POSTGRES if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(sql)
    op.execute("INSERT INTO anchor_todo (hospital_id, seq) SELECT b.hospital_id, b.seq FROM batches b "
               "LEFT JOIN anchors a ON a.hospital_id = b.hospital_id AND a.seq = b.seq WHERE a.seq IS NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER anchor_todo_anchor ON anchors")
        op.execute("DROP TRIGGER anchor_todo_batch ON batches")
        op.execute("DROP FUNCTION anchor_todo_anchor()")
        op.execute("DROP FUNCTION anchor_todo_batch()")
    else:
        for name in ("anchor_todo_sealed", "anchor_todo_batch_deleted", "anchor_todo_anchored",
                     "anchor_todo_unanchored"):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("anchor_todo")
    op.drop_index(op.f("ix_anchors_block_number"), table_name="anchors")
