"""batch signatures

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

A nullable column: batches sealed before signing existed stay unsigned (their receipts verify as they
always did), and a node that does not sign leaves it empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("signature")
