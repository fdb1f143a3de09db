"""result aliases: an Observation folded into a report is findable by its own id (issue 16)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "result_aliases",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("alias_hmac", sa.LargeBinary(length=16), nullable=False),
        sa.Column("result_hmac", sa.LargeBinary(length=16), nullable=False),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospitals.id"], name=op.f("fk_result_aliases_hospital_id_hospitals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_aliases")),
        sa.UniqueConstraint("hospital_id", "alias_hmac", "result_hmac",
                            name=op.f("uq_result_aliases_hospital_id_alias_hmac_result_hmac")),
    )


def downgrade() -> None:
    op.drop_table("result_aliases")
