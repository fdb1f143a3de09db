"""anchor alarms and shared configuration

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``anchor_alarms``: anchors the chain lost or moved (a reorg deeper than the confirmations, a chain reset),
open until the worker has them confirmed again (docs/anchoring.md, "Operations"). ``shared_config``: what the
nodes of one ledger share through the database, e.g. the development CA's certificates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mrledger.store.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anchor_alarms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raised_at", mrledger.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", mrledger.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anchor_alarms")),
    )
    with op.batch_alter_table("anchor_alarms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_anchor_alarms_hospital_id_first_seq"), ["hospital_id", "first_seq"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_anchor_alarms_resolved_at"), ["resolved_at"], unique=False)
    op.create_table(
        "shared_config",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", mrledger.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_shared_config")),
    )


def downgrade() -> None:
    op.drop_table("shared_config")
    with op.batch_alter_table("anchor_alarms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_anchor_alarms_resolved_at"))
        batch_op.drop_index(batch_op.f("ix_anchor_alarms_hospital_id_first_seq"))
    op.drop_table("anchor_alarms")
