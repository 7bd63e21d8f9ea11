"""Pending storage cleanups: the stored objects (a key prefix, e.g. a deleted task's folder) that a delete could
not remove once their rows were gone (issue 20, item 6). The delete records one in the same transaction as the
rows it removes and clears it once the storage confirms; a worker retries the ones left, and
``python -m pipeline cleanups`` lists them. Downgrading drops the table and with it the list of objects still to
remove (the objects themselves stay in storage).

Revision ID: f3c4d5e6f7a8
Revises: e2b3c4d5e6f7
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f3c4d5e6f7a8"
down_revision = "e2b3c4d5e6f7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_cleanups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_storage_cleanups_next_attempt_at", "storage_cleanups", ["next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_storage_cleanups_next_attempt_at", table_name="storage_cleanups")
    op.drop_table("storage_cleanups")
