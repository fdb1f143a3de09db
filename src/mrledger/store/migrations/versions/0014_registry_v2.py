"""v2 registry anchors

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

Batches anchored on a v2 registry (one commitment word per batch, hubs; issue 18, docs/anchoring.md "Registry
v2"): ``anchors.registry_version`` (null: 1, every row written before this revision) and, for a batch anchored in
a hub, the hub's id, the batch's index among its items and the RFC 9162 path of its hub leaf
(``hub_path``: the 32-byte hashes concatenated). Receipts of such batches are ``mrl-receipt/2`` and carry them.
``deployments.registry_version`` says which ABI a recorded registry speaks.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("anchors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registry_version", sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column("hub_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("hub_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("hub_path", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registry_version", sa.SmallInteger(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("registry_version")
    with op.batch_alter_table("anchors", schema=None) as batch_op:
        batch_op.drop_column("hub_path")
        batch_op.drop_column("hub_index")
        batch_op.drop_column("hub_id")
        batch_op.drop_column("registry_version")
