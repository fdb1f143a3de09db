"""kpi sums by day and month

Revision ID: 0015
Revises: 0014
Create Date: 2027-01-10

Issue 20, KPIs at city size: with a real node's 5-second batches the per-batch rollup of 0011 holds about a row per
record, so a year's report grew with the records. ``kpi_sums`` (counts of every counted batch by UTC day and UTC
month and dimension) and ``kpi_runs`` (which batches of a stream hold a day's or month's records, as runs of seqs)
are added to in the transaction that counts a batch (``mrledger.store.kpi_levels``). ``kpi_todo`` (sealed event
batches not counted yet) and ``kpi_open`` (event batches whose anchor is not confirmed) are kept by triggers on
``batches`` and ``anchors``, whoever writes those tables (the sealer, the anchoring worker, another node, SQL by
hand): a report finds the few batches it must treat apart without reading every batch and anchor. All four are
built here for the data already present.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

import mrledger.store.models
from mrledger.store import kpi_levels

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_WHEN = mrledger.store.models.UTCDateTime(timezone=True)

_SQLITE = [
    """CREATE TRIGGER kpi_batch_sealed AFTER INSERT ON batches WHEN substr(NEW.hospital_id, -7) = '.events'
    BEGIN
      INSERT OR IGNORE INTO kpi_todo (stream, seq) VALUES (NEW.hospital_id, NEW.seq);
      INSERT OR IGNORE INTO kpi_open (stream, seq) VALUES (NEW.hospital_id, NEW.seq);
    END""",
    """CREATE TRIGGER kpi_batch_deleted AFTER DELETE ON batches WHEN substr(OLD.hospital_id, -7) = '.events'
    BEGIN
      DELETE FROM kpi_todo WHERE stream = OLD.hospital_id AND seq = OLD.seq;
      DELETE FROM kpi_open WHERE stream = OLD.hospital_id AND seq = OLD.seq;
    END""",
    """CREATE TRIGGER kpi_anchor_added AFTER INSERT ON anchors WHEN substr(NEW.hospital_id, -7) = '.events'
    BEGIN
      DELETE FROM kpi_open WHERE NEW.status = 'confirmed' AND stream = NEW.hospital_id AND seq = NEW.seq;
      INSERT OR IGNORE INTO kpi_open (stream, seq) SELECT NEW.hospital_id, NEW.seq WHERE NEW.status <> 'confirmed';
    END""",
    """CREATE TRIGGER kpi_anchor_changed AFTER UPDATE OF status ON anchors
    WHEN substr(NEW.hospital_id, -7) = '.events'
    BEGIN
      DELETE FROM kpi_open WHERE NEW.status = 'confirmed' AND stream = NEW.hospital_id AND seq = NEW.seq;
      INSERT OR IGNORE INTO kpi_open (stream, seq) SELECT NEW.hospital_id, NEW.seq WHERE NEW.status <> 'confirmed';
    END""",
    """CREATE TRIGGER kpi_anchor_removed AFTER DELETE ON anchors WHEN substr(OLD.hospital_id, -7) = '.events'
    BEGIN
      INSERT OR IGNORE INTO kpi_open (stream, seq)
        SELECT hospital_id, seq FROM batches WHERE hospital_id = OLD.hospital_id AND seq = OLD.seq;
    END""",
]

_POSTGRES = [
    """CREATE FUNCTION kpi_batch_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        IF right(NEW.hospital_id, 7) = '.events' THEN
          INSERT INTO kpi_todo (stream, seq) VALUES (NEW.hospital_id, NEW.seq) ON CONFLICT DO NOTHING;
          INSERT INTO kpi_open (stream, seq) VALUES (NEW.hospital_id, NEW.seq) ON CONFLICT DO NOTHING;
        END IF;
      ELSIF right(OLD.hospital_id, 7) = '.events' THEN
        DELETE FROM kpi_todo WHERE stream = OLD.hospital_id AND seq = OLD.seq;
        DELETE FROM kpi_open WHERE stream = OLD.hospital_id AND seq = OLD.seq;
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER kpi_batch_sealed AFTER INSERT OR DELETE ON batches
    FOR EACH ROW EXECUTE FUNCTION kpi_batch_sealed()""",
    """CREATE FUNCTION kpi_anchor_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        IF right(OLD.hospital_id, 7) = '.events' THEN
          INSERT INTO kpi_open (stream, seq) SELECT hospital_id, seq FROM batches
            WHERE hospital_id = OLD.hospital_id AND seq = OLD.seq ON CONFLICT DO NOTHING;
        END IF;
      ELSIF right(NEW.hospital_id, 7) = '.events' THEN
        IF NEW.status = 'confirmed' THEN
          DELETE FROM kpi_open WHERE stream = NEW.hospital_id AND seq = NEW.seq;
        ELSE
          INSERT INTO kpi_open (stream, seq) VALUES (NEW.hospital_id, NEW.seq) ON CONFLICT DO NOTHING;
        END IF;
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER kpi_anchor_changed AFTER INSERT OR UPDATE OF status OR DELETE ON anchors
    FOR EACH ROW EXECUTE FUNCTION kpi_anchor_changed()""",
]


def upgrade() -> None:
    op.create_table(
        "kpi_sums",
        sa.Column("level", sa.String(length=1), nullable=False),
        sa.Column("bucket", _WHEN, nullable=False),
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("categories", sa.String(length=1024), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("recognition", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("retrieved", sa.BigInteger(), nullable=False),
        sa.Column("tests", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("level", "bucket", "hospital_id", "kind", "categories", "decision", "recognition",
                                "reason", name=op.f("pk_kpi_sums")),
    )
    op.create_table(
        "kpi_runs",
        sa.Column("level", sa.String(length=1), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("bucket", _WHEN, nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("level", "category", "bucket", "stream", "first_seq", name=op.f("pk_kpi_runs")),
    )
    for name in ("kpi_todo", "kpi_open"):
        op.create_table(
            name,
            sa.Column("stream", sa.String(length=64), nullable=False),
            sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.PrimaryKeyConstraint("stream", "seq", name=op.f(f"pk_{name}")),
        )
    bind = op.get_bind()
    for sql in _POSTGRES if bind.dialect.name == "postgresql" else _SQLITE:
        op.execute(sql)
    op.execute("INSERT INTO kpi_todo (stream, seq) SELECT b.hospital_id, b.seq FROM batches b "
               "LEFT JOIN kpi_rolled r ON r.stream = b.hospital_id AND r.seq = b.seq "
               "WHERE b.hospital_id LIKE '%.events' AND r.seq IS NULL")
    op.execute("INSERT INTO kpi_open (stream, seq) SELECT b.hospital_id, b.seq FROM batches b "
               "LEFT JOIN anchors a ON a.hospital_id = b.hospital_id AND a.seq = b.seq "
               "WHERE b.hospital_id LIKE '%.events' AND (a.status IS NULL OR a.status <> 'confirmed')")
    # LIKE is case-insensitive on SQLite: keep exactly the streams.
    op.execute("DELETE FROM kpi_todo WHERE substr(stream, length(stream) - 6) <> '.events'")
    op.execute("DELETE FROM kpi_open WHERE substr(stream, length(stream) - 6) <> '.events'")
    kpi_levels.rebuild(Session(bind=bind))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER kpi_anchor_changed ON anchors")
        op.execute("DROP TRIGGER kpi_batch_sealed ON batches")
        op.execute("DROP FUNCTION kpi_anchor_changed()")
        op.execute("DROP FUNCTION kpi_batch_sealed()")
    else:
        for name in ("kpi_batch_sealed", "kpi_batch_deleted", "kpi_anchor_added", "kpi_anchor_changed",
                     "kpi_anchor_removed"):
            op.execute(f"DROP TRIGGER {name}")
    for name in ("kpi_open", "kpi_todo", "kpi_runs", "kpi_sums"):
        op.drop_table(name)
