"""status map

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

The hospital status map (``mrl-smap/1``, docs/receipt.md §15, issue 18): ``record_versions.status_key`` is the
map key of the version's result (the same for every version of one result; a salted hash, no id in it) and
``batches.map_root`` the map's root after the batch. Both nullable: rows written before this revision get their
keys when the store is next unlocked (``store/statusmaps.py``, ``backfill_status_keys``: the key needs the
result id and the first version's salt, which only the master key opens), and batches sealed before it carry no
map root (their receipts still verify; a status answer starts with the first batch sealed after).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_key", sa.LargeBinary(length=32), nullable=True))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("map_root", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("map_root")
    with op.batch_alter_table("record_versions", schema=None) as batch_op:
        batch_op.drop_column("status_key")
