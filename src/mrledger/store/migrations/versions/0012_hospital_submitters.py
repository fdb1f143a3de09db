"""hospital submitters

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

The accounts a hospital's registration asked for (``hospitals.submitters``, comma-separated addresses; empty:
the leader's own anchoring account). Why stored: registration on chain is the leader's job only (issue 17 item
4, issue 20 item 1), so the API process that takes ``POST /v1/hospitals`` hands the request on through the
database instead of spending the admin key itself. Existing rows get '' (they were registered on chain by
whoever registered them, with the submitters they asked for).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hospitals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submitters", sa.String(length=2048), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("hospitals", schema=None) as batch_op:
        batch_op.drop_column("submitters")
