"""add_crop_white_borders_config: one more FALSE row in config (seed revision).

Revision ID: 70c50b9233b6
Revises: d59663db64e2
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "70c50b9233b6"
down_revision = "d59663db64e2"
branch_labels = None
depends_on = None

CONFIG = sa.table("config", sa.column("key", sa.String()), sa.column("value", sa.Boolean()))


def upgrade() -> None:
    op.bulk_insert(CONFIG, [{"key": "crop_white_borders", "value": False}])


def downgrade() -> None:
    op.execute(CONFIG.delete().where(CONFIG.c.key == "crop_white_borders"))
