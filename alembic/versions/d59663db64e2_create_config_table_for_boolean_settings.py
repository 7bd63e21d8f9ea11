"""create_config_table_for_boolean_settings (seed revision).

Revision ID: d59663db64e2
Revises: 30c18b6939ce
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d59663db64e2"
down_revision = "30c18b6939ce"
branch_labels = None
depends_on = None


def upgrade() -> None:
    config = op.create_table(
        "config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_config_key", "config", ["key"], unique=True)
    op.bulk_insert(
        config,
        [{"key": "randomize_face_base", "value": False}, {"key": "randomize_face_gender_lock", "value": False}],
    )


def downgrade() -> None:
    op.drop_index("ix_config_key", table_name="config")
    op.drop_table("config")
