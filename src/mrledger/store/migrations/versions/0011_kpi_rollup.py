"""kpi rollup

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Counts of every sealed batch of an event stream, by 15-minute bucket and KPI dimension (``kpi_rollup``), and the
batches already counted (``kpi_rolled``): KPI reports sum these instead of reading every decision and encounter
(issue 20). Existing databases get empty tables; the first report (or the sealer) counts the batches sealed
before this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mrledger.store.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "kpi_rollup",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", mrledger.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("categories", sa.String(length=1024), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("recognition", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("retrieved", sa.BigInteger(), nullable=False),
        sa.Column("tests", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kpi_rollup")),
    )
    op.create_index(op.f("ix_kpi_rollup_bucket"), "kpi_rollup", ["bucket"], unique=False)
    op.create_index(op.f("ix_kpi_rollup_stream_seq"), "kpi_rollup", ["stream", "seq"], unique=False)
    op.create_table(
        "kpi_rolled",
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("stream", "seq", name=op.f("pk_kpi_rolled")),
    )


def downgrade() -> None:
    op.drop_table("kpi_rolled")
    op.drop_index(op.f("ix_kpi_rollup_stream_seq"), table_name="kpi_rollup")
    op.drop_index(op.f("ix_kpi_rollup_bucket"), table_name="kpi_rollup")
    op.drop_table("kpi_rollup")
