"""encryption at rest

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

Record contents, salts and result ids become ciphertexts and keyed hashes (docs/encryption.md). The columns
are renamed as well as retyped, so code written against the clear columns fails loudly instead of comparing
a clear id with a hash. A migration holds no key, so rows an earlier version wrote stay clear here (their
text kept as bytes) and are listed in ``encryption_backlog``; the first open with a master key converts them
(``mrledger.store.keystore.convert_backlog``). Downgrading would need the keys too, so it is refused once rows exist.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mrledger.store.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_CLEAR_TABLES = ("record_versions", "access_log")


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", mrledger.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_keys")),
    )
    op.create_table(
        "encryption_backlog",
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("next_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("table_name", name=op.f("pk_encryption_backlog")),
    )
    for table in _CLEAR_TABLES:  # before the columns change: every row that exists now was written in clear
        op.execute(f"INSERT INTO encryption_backlog (table_name, next_id, last_id) "
                   f"SELECT '{table}', MIN(id), MAX(id) FROM {table} HAVING COUNT(*) > 0")
    with op.batch_alter_table("record_versions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_record_versions_hospital_id_result_id_version", type_="unique")
        batch_op.alter_column("result_id", new_column_name="result_hmac", existing_type=sa.String(length=128),
                              type_=sa.LargeBinary(length=16), existing_nullable=False,
                              postgresql_using="convert_to(result_id, 'UTF8')")
        batch_op.alter_column("record_json", new_column_name="record_enc", existing_type=sa.Text(),
                              type_=sa.LargeBinary(), existing_nullable=False,
                              postgresql_using="convert_to(record_json, 'UTF8')")
        batch_op.alter_column("salt", new_column_name="salt_enc", existing_type=sa.LargeBinary(length=16),
                              type_=sa.LargeBinary(), existing_nullable=False)
    with op.batch_alter_table("record_versions", schema=None) as batch_op:  # after the rename, as below
        batch_op.create_unique_constraint(batch_op.f("uq_record_versions_hospital_id_result_hmac_version"),
                                          ["hospital_id", "result_hmac", "version"])
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.drop_index("ix_access_log_hospital_id_result_id")
        batch_op.alter_column("result_id", new_column_name="result_hmac", existing_type=sa.String(length=128),
                              type_=sa.LargeBinary(length=16), existing_nullable=True,
                              postgresql_using="convert_to(result_id, 'UTF8')")
        batch_op.add_column(sa.Column("result_enc", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("access_log", schema=None) as batch_op:  # after the rename (batch mode needs that)
        batch_op.create_index(batch_op.f("ix_access_log_hospital_id_result_hmac"), ["hospital_id", "result_hmac"],
                              unique=False)


def downgrade() -> None:
    bind = op.get_bind()
    for table in _CLEAR_TABLES:
        if bind.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None:
            raise RuntimeError(f"cannot downgrade below 0007 while {table} holds rows: they are encrypted and "
                               "0006 expects clear text (docs/encryption.md)")
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_log_hospital_id_result_hmac"))
        batch_op.drop_column("result_enc")
        batch_op.alter_column("result_hmac", new_column_name="result_id", existing_type=sa.LargeBinary(length=16),
                              type_=sa.String(length=128), existing_nullable=True,
                              postgresql_using="convert_from(result_hmac, 'UTF8')")
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.create_index("ix_access_log_hospital_id_result_id", ["hospital_id", "result_id"], unique=False)
    with op.batch_alter_table("record_versions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_record_versions_hospital_id_result_hmac_version"), type_="unique")
        batch_op.alter_column("salt_enc", new_column_name="salt", existing_type=sa.LargeBinary(),
                              type_=sa.LargeBinary(length=16), existing_nullable=False)
        batch_op.alter_column("record_enc", new_column_name="record_json", existing_type=sa.LargeBinary(),
                              type_=sa.Text(), existing_nullable=False,
                              postgresql_using="convert_from(record_enc, 'UTF8')")
        batch_op.alter_column("result_hmac", new_column_name="result_id", existing_type=sa.LargeBinary(length=16),
                              type_=sa.String(length=128), existing_nullable=False,
                              postgresql_using="convert_from(result_hmac, 'UTF8')")
    with op.batch_alter_table("record_versions", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_record_versions_hospital_id_result_id_version",
                                          ["hospital_id", "result_id", "version"])
    op.drop_table("encryption_backlog")
    op.drop_table("data_keys")
