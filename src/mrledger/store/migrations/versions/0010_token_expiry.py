"""token expiry

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Tokens may expire (``api_tokens.expires_at``; NULL: never, which every token made before this revision keeps).
Revocation needed no new column: ``revoked_at`` existed and is now written (``mrledger token revoke``,
``POST /v1/tokens/{id}/revoke``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mrledger.store.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", mrledger.store.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
